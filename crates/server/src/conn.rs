//! One connection's I/O: a socket with deadlines under a rustls stream, and framed messages.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bulwark_protocol::{read_frame, write_msg, FrameBuf, Msg, MsgType, ProtocolError};
use rustls::{ServerConnection, StreamOwned};

/// How often a blocked read or write wakes up to check its deadline.
const TICK: Duration = Duration::from_millis(250);

/// A TCP socket whose reads fail once a deadline passes. While waiting for a frame the idle
/// deadline applies; the first byte that arrives starts the (short) per-frame deadline, so a
/// client that trickles bytes (slowloris) is cut off.
pub(crate) struct TimedSock {
    s: TcpStream,
    /// Socket reads are this large: rustls asks for 4 KiB at a time.
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
    deadline: Instant,
    waiting: bool,
    frame: Duration,
    write: Duration,
}

impl TimedSock {
    pub(crate) fn new(s: TcpStream, frame: Duration, write: Duration) -> io::Result<Self> {
        s.set_read_timeout(Some(TICK))?;
        s.set_write_timeout(Some(TICK))?;
        s.set_nodelay(true)?;
        Ok(TimedSock {
            s,
            rbuf: vec![0u8; 256 * 1024].into_boxed_slice(),
            rpos: 0,
            rlen: 0,
            deadline: Instant::now() + frame,
            waiting: false,
            frame,
            write,
        })
    }
    /// Waits at most `idle` for the next frame to start.
    pub(crate) fn wait_for_frame(&mut self, idle: Duration) {
        self.deadline = Instant::now() + idle;
        self.waiting = true;
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl Read for TimedSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rpos == self.rlen {
            self.rpos = 0;
            self.rlen = self.fill()?;
        }
        let n = buf.len().min(self.rlen - self.rpos);
        buf[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
        self.rpos += n;
        Ok(n)
    }
}

/// A socket call that ended without bytes but may be tried again: its short timeout passed
/// (the deadline is checked by the caller) or a signal interrupted it.
fn try_again(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl TimedSock {
    /// One socket read into the buffer, within the current deadline.
    fn fill(&mut self) -> io::Result<usize> {
        loop {
            if Instant::now() >= self.deadline {
                return Err(timed_out(if self.waiting {
                    "idle timeout: no request"
                } else {
                    "frame deadline passed (slow or stalled sender)"
                }));
            }
            match self.s.read(&mut self.rbuf) {
                Err(e) if try_again(&e) => {}
                Ok(n) => {
                    if self.waiting && n > 0 {
                        self.waiting = false;
                        self.deadline = Instant::now() + self.frame;
                    }
                    return Ok(n);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for TimedSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let deadline = Instant::now() + self.write;
        loop {
            if Instant::now() >= deadline {
                return Err(timed_out("write deadline passed (client not reading)"));
            }
            match self.s.write(buf) {
                Err(e) if try_again(&e) => {}
                r => return r,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

/// A TLS session carrying frames.
pub(crate) struct Session {
    pub tls: StreamOwned<ServerConnection, TimedSock>,
    fb: FrameBuf,
    idle: Duration,
}

impl Session {
    pub(crate) fn new(tls: StreamOwned<ServerConnection, TimedSock>, idle: Duration) -> Self {
        Session {
            tls,
            fb: FrameBuf::default(),
            idle,
        }
    }
    /// Reads the next frame (idle deadline until it starts, frame deadline after).
    pub(crate) fn recv(&mut self) -> Result<MsgType, ProtocolError> {
        self.tls.sock.wait_for_frame(self.idle);
        read_frame(&mut self.tls, &mut self.fb, |_| {})
    }
    /// The frame last received.
    pub(crate) fn msg(&self) -> Result<Msg<'_>, ProtocolError> {
        self.fb.msg()
    }
    /// Sends one message.
    pub(crate) fn send(&mut self, m: &Msg<'_>) -> Result<(), ProtocolError> {
        write_msg(&mut self.tls, m)?;
        self.tls.flush()?;
        Ok(())
    }
}

impl TimedSock {
    /// Half-closes and discards what the peer still sends for a moment, so that it reads our
    /// last message instead of a reset.
    pub(crate) fn linger(&mut self) {
        let _ = self.s.shutdown(std::net::Shutdown::Write);
        let until = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 64 * 1024];
        let mut total = 0usize;
        while Instant::now() < until && total < (16 << 20) {
            match self.s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
}
