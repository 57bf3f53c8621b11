//! A client connection: TCP, TLS handshake, `Hello`/`Welcome`, then framed messages.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bulwark_protocol::{read_frame, write_msg, FrameBuf, Msg, PROTOCOL_VERSION, SERVER_NAME};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::{Credentials, RemoteAddr, RemoteError, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The TLS handshake and `Hello`/`Welcome` must be done within this (the service's own frame
/// timeout is 30 s): a process that accepts connections but does not answer (stopped,
/// hung, not a Bulwark service) is reported instead of waited for.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence from the server once the session is open (a server-side verify of large
/// jobs can be slow).
const READ_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest a send may wait for the server to take data (the service stops reading only
/// while it writes to its disk, and its own idle timeout is 300 s).
const WRITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Socket reads this large: rustls asks for 4 KiB at a time, which would cost a system call
/// per 4 KiB of a restore stream.
const READ_BUF: usize = 256 * 1024;

/// A TCP socket with a large read buffer under the TLS layer.
pub(crate) struct BufSock(std::io::BufReader<TcpStream>);

impl std::io::Read for BufSock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Write for BufSock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.get_mut().write(buf)
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.0.get_mut().write_vectored(bufs)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.get_mut().flush()
    }
}

/// An open session with a repository service.
pub struct Conn {
    tls: StreamOwned<ClientConnection, BufSock>,
    fb: FrameBuf,
    /// Our identity as the server sees it.
    pub client: String,
    /// The repository's clock at connection time.
    pub server_unix: i64,
    pub addr: RemoteAddr,
}

impl Conn {
    /// Connects with `cfg` and exchanges `Hello`/`Welcome`.
    pub(crate) fn open(addr: &RemoteAddr, cfg: Arc<ClientConfig>) -> Result<Conn> {
        Conn::open_within(addr, cfg, HANDSHAKE_TIMEOUT)
    }

    /// [`Conn::open`] with the handshake (TLS, `Hello`/`Welcome`) bounded by `handshake`.
    fn open_within(addr: &RemoteAddr, cfg: Arc<ClientConfig>, handshake: Duration) -> Result<Conn> {
        let cerr = |source| RemoteError::Connect {
            addr: addr.to_string(),
            source,
        };
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        let mut sock = None;
        for a in (addr.host.as_str(), addr.port)
            .to_socket_addrs()
            .map_err(cerr)?
        {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut sock = sock.ok_or_else(|| cerr(last))?;
        sock.set_nodelay(true).map_err(cerr)?;
        sock.set_read_timeout(Some(handshake)).map_err(cerr)?;
        sock.set_write_timeout(Some(handshake)).map_err(cerr)?;
        let silent = |what: &str| {
            RemoteError::Connect {
            addr: addr.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no {what} within {} s: the service is stopped or hung, or this address is not a Bulwark repository service",
                    handshake.as_secs()
                ),
            ),
        }
        };
        let name = ServerName::try_from(SERVER_NAME).expect("valid DNS name");
        let mut conn = ClientConnection::new(cfg, name)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| {
                if is_timeout(&e) {
                    silent("TLS handshake")
                } else {
                    tls_err(e, addr)
                }
            })?;
        }
        let sock = BufSock(std::io::BufReader::with_capacity(READ_BUF, sock));
        let mut c = Conn {
            tls: StreamOwned::new(conn, sock),
            fb: FrameBuf::default(),
            client: String::new(),
            server_unix: 0,
            addr: addr.clone(),
        };
        c.send(&Msg::Hello {
            version: PROTOCOL_VERSION,
            software: format!("bulwark {}", env!("CARGO_PKG_VERSION")),
        })?;
        match c.recv() {
            Ok(Msg::Welcome {
                client,
                server_unix,
                ..
            }) => {
                c.client = client;
                c.server_unix = server_unix;
            }
            Ok(m) => return Err(m.unexpected("Welcome").into()),
            Err(RemoteError::Protocol(bulwark_protocol::ProtocolError::Io(e)))
                if is_timeout(&e) =>
            {
                return Err(silent("welcome"))
            }
            Err(e) => return Err(e),
        }
        let sock = c.tls.sock.0.get_ref();
        sock.set_read_timeout(Some(READ_TIMEOUT)).map_err(cerr)?;
        sock.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(cerr)?;
        Ok(c)
    }

    /// Opens an authenticated session with the credentials enrolled for `addr`.
    pub fn session(config_dir: &Path, addr: &RemoteAddr) -> Result<Conn> {
        let creds = Credentials::load(config_dir, addr)?;
        let cfg = crate::tls::session_config(&creds)?;
        Conn::open(addr, cfg)
    }

    /// Sends one message.
    pub fn send(&mut self, m: &Msg<'_>) -> Result<()> {
        let r = write_msg(&mut self.tls, m).and_then(|_| Ok(self.tls.flush()?));
        if let Err(e) = r {
            // The server may have said why before closing: prefer its reason.
            return Err(self.reason().unwrap_or_else(|| e.into()));
        }
        Ok(())
    }

    /// Receives one message; an `Error` from the server becomes [`RemoteError::Refused`].
    pub fn recv(&mut self) -> Result<Msg<'_>> {
        read_frame(&mut self.tls, &mut self.fb, |_| {})?;
        match self.fb.msg()? {
            Msg::Error { code, message } => Err(RemoteError::Refused { code, message }),
            m => Ok(m),
        }
    }

    /// Receives one frame and leaves it in the buffer, for [`Conn::last`] and
    /// [`Conn::swap_payload`] (the restore path, which avoids copying block data).
    pub(crate) fn recv_frame(&mut self) -> Result<()> {
        read_frame(&mut self.tls, &mut self.fb, |_| {})?;
        Ok(())
    }

    /// The frame last received by [`Conn::recv_frame`].
    pub(crate) fn last(&self) -> Result<Msg<'_>> {
        match self.fb.msg()? {
            Msg::Error { code, message } => Err(RemoteError::Refused { code, message }),
            m => Ok(m),
        }
    }

    /// Takes the last payload, giving `spare` as the next receive buffer.
    pub(crate) fn swap_payload(&mut self, spare: Vec<u8>) -> bulwark_protocol::Payload {
        self.fb.swap_payload(spare)
    }

    /// After a failed write: the server's `Error` message, if one is waiting.
    fn reason(&mut self) -> Option<RemoteError> {
        let _ = self
            .tls
            .sock
            .0
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(2)));
        // Not `recv`: rustls would first retry the write that just failed (and fail the same
        // way, "Broken pipe"), hiding the server's reason. Read its records directly.
        let mut ro = ReadOnly {
            conn: &mut self.tls.conn,
            sock: &mut self.tls.sock,
        };
        let r = match read_frame(&mut ro, &mut self.fb, |_| {}).map(|_| self.fb.msg()) {
            Ok(Ok(Msg::Error { code, message })) => Some(RemoteError::Refused { code, message }),
            _ => None,
        };
        let _ = self
            .tls
            .sock
            .0
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT));
        r
    }

    /// Closes the session cleanly.
    pub fn close(mut self) {
        self.tls.conn.send_close_notify();
        let _ = self.tls.flush();
    }
}

/// The plaintext of a TLS connection whose sending side has failed: reads and decrypts
/// records without trying to write anything.
struct ReadOnly<'a> {
    conn: &'a mut ClientConnection,
    sock: &'a mut BufSock,
}

impl std::io::Read for ReadOnly<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            if self.conn.read_tls(self.sock)? == 0 {
                return Ok(0);
            }
            self.conn
                .process_new_packets()
                .map_err(std::io::Error::other)?;
        }
    }
}

/// A socket timeout (`WouldBlock` is how a read or write timeout shows on Linux).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn tls_err(e: std::io::Error, addr: &RemoteAddr) -> RemoteError {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => RemoteError::Tls(t.clone()),
        None => RemoteError::Connect {
            addr: addr.to_string(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A client config that trusts nobody: enough to start a handshake.
    fn config() -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    }

    #[test]
    fn a_service_that_accepts_but_never_answers_is_reported_within_the_handshake_timeout() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // Accepts, then holds the connection without a word (a stopped or hung service).
        let hold = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_secs(4));
            drop(s);
        });
        let addr = RemoteAddr {
            host: "127.0.0.1".into(),
            port,
        };
        let t = Instant::now();
        let e = Conn::open_within(&addr, config(), Duration::from_secs(1))
            .err()
            .expect("no session with a silent peer");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let msg = e.to_string();
        assert!(
            msg.contains("no TLS handshake within 1 s") && msg.contains(&addr.to_string()),
            "{msg}"
        );
        hold.join().unwrap();
    }
}
