//! An NBD client for reading live disks: fixed newstyle negotiation, `NBD_OPT_GO`,
//! structured replies, `NBD_OPT_SET_META_CONTEXT` (`base:allocation`,
//! `qemu:dirty-bitmap:NAME`) and block status, with several requests in flight on one
//! connection.
//!
//! One thread owns the receiving half and matches replies to requests by cookie; callers
//! submit from any thread and wait for their own reply. Every length the server sends is
//! checked against what was asked before anything is allocated or read, every wait has a
//! timeout, and any breach of the protocol ends the connection: every request in flight then
//! fails with the same error, so a caller never receives partial data as if it were whole.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::proto::*;
use crate::stream::Stream;
use crate::uri::{Endpoint, NbdUri};

/// The most extents one block-status chunk may carry (a 512 KiB payload).
pub const MAX_EXTENTS_PER_CHUNK: usize = 1 << 16;
/// Longest error message accepted in an error chunk.
const MAX_ERROR_MESSAGE: usize = 4096;
/// Largest read request sent when the server names no maximum (QEMU's own limit).
pub const DEFAULT_MAX_REQUEST: u32 = 32 << 20;
/// Largest block-status request length.
const MAX_STATUS_REQUEST: u64 = 1 << 30;

/// What went wrong talking to an NBD server.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("connecting to the NBD server at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("NBD connection to {addr}: {what}: {source}")]
    Io {
        addr: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the NBD server at {addr} broke the protocol: {why}")]
    Protocol { addr: String, why: String },
    #[error("the NBD server at {addr} refused {what}: {message}")]
    Refused {
        addr: String,
        what: String,
        message: String,
    },
    #[error(
        "NBD {cmd} of {len} bytes at offset {offset} failed on the server: error {errno}{message}"
    )]
    Command {
        cmd: &'static str,
        offset: u64,
        len: u64,
        errno: u32,
        message: String,
    },
    #[error("the NBD server at {addr} did not answer within {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("NBD connection to {addr} ended: {why}")]
    Closed { addr: String, why: String },
    #[error("NBD request out of range: {0}")]
    Usage(String),
}

/// Result type of the client.
pub type Result<T, E = NbdError> = std::result::Result<T, E>;

/// How to connect.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Meta contexts to ask for (`base:allocation`, `qemu:dirty-bitmap:NAME`).
    pub meta_contexts: Vec<String>,
    /// Longest wait for any answer of the server (handshake, each reply).
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            meta_contexts: vec![META_BASE_ALLOCATION.to_string()],
            timeout: Duration::from_secs(60),
        }
    }
}

/// One extent of a mapped range: `[start, end)` with the context's status flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedExtent {
    pub start: u64,
    pub end: u64,
    pub flags: u32,
}

/// The answer to one request, as the receiver hands it over.
enum Answer {
    Data(Vec<u8>),
    Status(Vec<(u32, Vec<Extent>)>),
    Done,
}

enum Kind {
    Read {
        buf: Vec<u8>,
        covered: Vec<(u64, u64)>,
    },
    Status {
        got: Vec<(u32, Vec<Extent>)>,
    },
    Other,
}

struct Pending {
    cmd: &'static str,
    offset: u64,
    len: u32,
    kind: Kind,
    error: Option<(u32, String)>,
    tx: SyncSender<Result<Answer>>,
}

#[derive(Default)]
struct Table {
    pending: HashMap<u64, Pending>,
    /// Why the connection ended, once it did.
    dead: Option<String>,
}

struct Shared {
    addr: String,
    table: Mutex<Table>,
    writer: Mutex<Stream>,
    structured: bool,
    contexts: Vec<(u32, String)>,
    timeout: Duration,
}

/// A request submitted and not yet answered; [`Client::wait`] collects it.
#[must_use = "wait for the reply"]
pub struct Ticket {
    parts: Vec<Receiver<Result<Answer>>>,
    len: usize,
}

/// A connection to one export.
pub struct Client {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    /// The export's size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// Largest request the server accepts.
    pub max_request: u32,
    cookie: AtomicU64,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

struct Handshake<'a> {
    s: &'a mut Stream,
    addr: &'a str,
}

impl Handshake<'_> {
    fn io(&self, what: &'static str) -> impl Fn(io::Error) -> NbdError + '_ {
        move |source| match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NbdError::Protocol {
                addr: self.addr.to_string(),
                why: format!("no answer while {what} (timed out)"),
            },
            io::ErrorKind::UnexpectedEof => NbdError::Closed {
                addr: self.addr.to_string(),
                why: format!("the server closed the connection while {what}"),
            },
            _ => NbdError::Io {
                addr: self.addr.to_string(),
                what,
                source,
            },
        }
    }
    fn proto(&self, why: impl Into<String>) -> NbdError {
        NbdError::Protocol {
            addr: self.addr.to_string(),
            why: why.into(),
        }
    }
    fn read_exact(&mut self, b: &mut [u8], what: &'static str) -> Result<()> {
        let r = self.s.read_exact(b);
        r.map_err(self.io(what))
    }
    fn send_option(&mut self, option: u32, data: &[u8]) -> Result<()> {
        let mut b = OptionHeader {
            option,
            length: data.len() as u32,
        }
        .encode()
        .to_vec();
        b.extend_from_slice(data);
        let r = self.s.write_all(&b);
        r.map_err(self.io("sending an option"))
    }
    /// The next reply to `option` before its closing `NBD_REP_ACK`; `None` once that came.
    fn reply_before_ack(&mut self, option: u32) -> Result<Option<(u32, Vec<u8>)>> {
        let (kind, data) = self.option_reply(option)?;
        Ok((kind != REP_ACK).then_some((kind, data)))
    }

    /// One option reply: its type and data (bounded by [`MAX_OPTION_DATA`]).
    fn option_reply(&mut self, option: u32) -> Result<(u32, Vec<u8>)> {
        let mut h = [0u8; OPTION_REPLY_LEN];
        self.read_exact(&mut h, "reading an option reply")?;
        let r = OptionReply::decode(&h).map_err(|e| self.proto(e.to_string()))?;
        if r.option != option {
            return Err(self.proto(format!(
                "reply for option {} while option {option} was asked",
                r.option
            )));
        }
        if r.length > MAX_OPTION_DATA {
            return Err(self.proto(format!(
                "option reply of {} bytes (at most {MAX_OPTION_DATA})",
                r.length
            )));
        }
        let mut data = vec![0u8; r.length as usize];
        self.read_exact(&mut data, "reading option reply data")?;
        Ok((r.kind, data))
    }
}

fn rep_error_text(kind: u32, data: &[u8]) -> String {
    let name = match kind {
        REP_ERR_UNSUP => "unsupported",
        REP_ERR_POLICY => "forbidden by policy",
        REP_ERR_INVALID => "invalid",
        REP_ERR_PLATFORM => "unsupported on this platform",
        REP_ERR_TLS_REQD => "TLS required (Bulwark's NBD client does not speak TLS)",
        REP_ERR_UNKNOWN => "no such export",
        REP_ERR_SHUTDOWN => "server shutting down",
        REP_ERR_BLOCK_SIZE_REQD => "block size constraints required",
        REP_ERR_TOO_BIG => "request too big",
        _ => "error",
    };
    let msg = String::from_utf8_lossy(&data[..data.len().min(1024)]);
    if msg.is_empty() {
        name.to_string()
    } else {
        format!("{name}: {msg}")
    }
}

impl Client {
    /// Connects to the export `uri` names and negotiates.
    pub fn connect(uri: &NbdUri, opts: &ClientOptions) -> Result<Client> {
        let addr = uri.to_string();
        let stream = match &uri.endpoint {
            Endpoint::Unix { socket } => UnixStream::connect(socket).map(Stream::Unix),
            Endpoint::Tcp { host, port } => {
                use std::net::ToSocketAddrs;
                (host.as_str(), *port)
                    .to_socket_addrs()
                    .and_then(|mut a| {
                        a.next().ok_or_else(|| {
                            io::Error::new(io::ErrorKind::NotFound, "no address for the host")
                        })
                    })
                    .and_then(|a| TcpStream::connect_timeout(&a, opts.timeout))
                    .map(|s| {
                        let _ = s.set_nodelay(true);
                        Stream::Tcp(s)
                    })
            }
        }
        .map_err(|source| NbdError::Connect {
            addr: addr.clone(),
            source,
        })?;
        Client::handshake(stream, addr, &uri.export, opts)
    }

    fn handshake(
        mut s: Stream,
        addr: String,
        export: &str,
        opts: &ClientOptions,
    ) -> Result<Client> {
        s.set_read_timeout(Some(opts.timeout))
            .and_then(|()| s.set_write_timeout(Some(opts.timeout)))
            .map_err(|source| NbdError::Io {
                addr: addr.clone(),
                what: "setting timeouts",
                source,
            })?;
        let mut h = Handshake {
            s: &mut s,
            addr: &addr,
        };
        let mut greet = [0u8; 18];
        h.read_exact(&mut greet, "reading the server's greeting")?;
        if be64(&greet) != NBD_MAGIC {
            return Err(h.proto("the greeting does not start with NBDMAGIC: not an NBD server"));
        }
        if be64(&greet[8..]) != IHAVEOPT {
            return Err(h.proto(
                "the server speaks oldstyle negotiation only, which Bulwark does not support",
            ));
        }
        let sflags = u16::from_be_bytes([greet[16], greet[17]]);
        if sflags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(h.proto("the server does not offer fixed newstyle negotiation"));
        }
        let no_zeroes = sflags & FLAG_NO_ZEROES != 0;
        let cflags = FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 };
        let r = h.s.write_all(&cflags.to_be_bytes());
        r.map_err(h.io("sending client flags"))?;

        // Structured replies: needed for block status and for sparse reads.
        h.send_option(OPT_STRUCTURED_REPLY, &[])?;
        let (kind, data) = h.option_reply(OPT_STRUCTURED_REPLY)?;
        let structured = match kind {
            REP_ACK => true,
            k if k & REP_FLAG_ERROR != 0 => false,
            k => return Err(h.proto(format!("reply type {k} to OPT_STRUCTURED_REPLY"))),
        };
        let _ = data;

        let mut contexts = Vec::new();
        if structured && !opts.meta_contexts.is_empty() {
            let mut d = Vec::new();
            put_name(&mut d, export);
            d.extend_from_slice(&(opts.meta_contexts.len() as u32).to_be_bytes());
            for q in &opts.meta_contexts {
                if q.len() > MAX_NAME as usize {
                    return Err(NbdError::Usage(format!("meta context {q:?} is too long")));
                }
                put_name(&mut d, q);
            }
            h.send_option(OPT_SET_META_CONTEXT, &d)?;
            while let Some((kind, data)) = h.reply_before_ack(OPT_SET_META_CONTEXT)? {
                match kind {
                    REP_META_CONTEXT => {
                        if data.len() < 5 {
                            return Err(h.proto("meta context reply too short"));
                        }
                        let id = be32(&data);
                        let name = String::from_utf8_lossy(&data[4..]).into_owned();
                        if !opts.meta_contexts.contains(&name) {
                            return Err(h.proto(format!("meta context {name:?} was not asked for")));
                        }
                        if contexts.iter().any(|(i, _)| *i == id) || contexts.len() >= 64 {
                            return Err(h.proto("duplicate meta context id"));
                        }
                        contexts.push((id, name));
                    }
                    k if k & REP_FLAG_ERROR != 0 => {
                        // A server without meta contexts: nothing is mapped, everything is read.
                        break;
                    }
                    k => return Err(h.proto(format!("reply type {k} to OPT_SET_META_CONTEXT"))),
                }
            }
        }

        let mut d = Vec::new();
        put_name(&mut d, export);
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        h.send_option(OPT_GO, &d)?;
        let mut export_info = None;
        let mut max_request = DEFAULT_MAX_REQUEST;
        while let Some((kind, data)) = h.reply_before_ack(OPT_GO)? {
            match kind {
                REP_INFO => {
                    if data.len() < 2 {
                        return Err(h.proto("info reply too short"));
                    }
                    match u16::from_be_bytes([data[0], data[1]]) {
                        INFO_EXPORT if data.len() == 12 => {
                            export_info =
                                Some((be64(&data[2..]), u16::from_be_bytes([data[10], data[11]])))
                        }
                        INFO_EXPORT => return Err(h.proto("export info of the wrong length")),
                        INFO_BLOCK_SIZE if data.len() == 14 => {
                            let max = be32(&data[10..]);
                            if max > 0 {
                                max_request = max.min(DEFAULT_MAX_REQUEST);
                            }
                        }
                        _ => {}
                    }
                }
                REP_ERR_UNSUP => {
                    // A server without NBD_OPT_GO: the old way, which ends the negotiation.
                    let r = h.s.write_all(
                        &[
                            OptionHeader {
                                option: OPT_EXPORT_NAME,
                                length: export.len() as u32,
                            }
                            .encode()
                            .as_slice(),
                            export.as_bytes(),
                        ]
                        .concat(),
                    );
                    r.map_err(h.io("sending the export name"))?;
                    let mut b = [0u8; 10];
                    h.read_exact(&mut b, "reading the export's size")?;
                    export_info = Some((be64(&b), u16::from_be_bytes([b[8], b[9]])));
                    if !no_zeroes {
                        let mut z = [0u8; 124];
                        h.read_exact(&mut z, "reading the padding")?;
                    }
                    break;
                }
                k if k & REP_FLAG_ERROR != 0 => {
                    return Err(NbdError::Refused {
                        addr: addr.clone(),
                        what: format!("export {export:?}"),
                        message: rep_error_text(k, &data),
                    })
                }
                k => return Err(h.proto(format!("reply type {k} to OPT_GO"))),
            }
        }
        let (size, flags) =
            export_info.ok_or_else(|| h.proto("OPT_GO ended without the export's size"))?;
        if size > 1 << 62 {
            return Err(h.proto(format!("export size {size} is absurd")));
        }
        // Reads and waits from here on: the receiver thread watches the clock itself.
        let reader_stream = s.try_clone().map_err(|source| NbdError::Io {
            addr: addr.clone(),
            what: "cloning the socket",
            source,
        })?;
        let shared = Arc::new(Shared {
            addr,
            table: Mutex::new(Table::default()),
            writer: Mutex::new(s),
            structured,
            contexts,
            timeout: opts.timeout,
        });
        let sh = shared.clone();
        let reader = std::thread::Builder::new()
            .name("nbd-receiver".into())
            .spawn(move || receive(sh, reader_stream))
            .map_err(|source| NbdError::Io {
                addr: shared.addr.clone(),
                what: "starting the receiver thread",
                source,
            })?;
        Ok(Client {
            shared,
            reader: Some(reader),
            size,
            flags,
            max_request,
            cookie: AtomicU64::new(1),
        })
    }

    /// The server's address as a URI.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// True when structured replies were negotiated.
    pub fn structured(&self) -> bool {
        self.shared.structured
    }

    /// The id the server gave meta context `name`, if it agreed to it.
    pub fn context_id(&self, name: &str) -> Option<u32> {
        self.shared
            .contexts
            .iter()
            .find(|(_, n)| n == name)
            .map(|(i, _)| *i)
    }

    /// True when the export is read-only.
    pub fn read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|e| e > self.size) {
            return Err(NbdError::Usage(format!(
                "{len} bytes at {offset} reach beyond the export's {} bytes",
                self.size
            )));
        }
        Ok(())
    }

    /// Sends one request (`data` its payload); a read's data goes into `buf` (a recycled
    /// buffer, or an empty one).
    fn submit(
        &self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
        data: &[u8],
        buf: Vec<u8>,
    ) -> Result<Receiver<Result<Answer>>> {
        let cookie = self.cookie.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(1);
        let (name, kind) = match cmd {
            CMD_READ => (
                "read",
                Kind::Read {
                    buf,
                    covered: Vec::new(),
                },
            ),
            CMD_BLOCK_STATUS => ("block status", Kind::Status { got: Vec::new() }),
            CMD_WRITE => ("write", Kind::Other),
            _ => ("command", Kind::Other),
        };
        {
            let mut t = self.shared.table.lock().expect("table lock");
            if let Some(why) = &t.dead {
                return Err(NbdError::Closed {
                    addr: self.shared.addr.clone(),
                    why: why.clone(),
                });
            }
            t.pending.insert(
                cookie,
                Pending {
                    cmd: name,
                    offset,
                    len,
                    kind,
                    error: None,
                    tx,
                },
            );
        }
        let req = Request {
            flags,
            kind: cmd,
            cookie,
            offset,
            length: len,
        }
        .encode();
        let sent = {
            let mut w = self.shared.writer.lock().expect("writer lock");
            w.write_all(&req).and_then(|_| w.write_all(data))
        };
        if let Err(e) = sent {
            let why = format!("sending a request: {e}");
            fail_all(&self.shared, why.clone());
            return Err(NbdError::Closed {
                addr: self.shared.addr.clone(),
                why,
            });
        }
        Ok(rx)
    }

    /// Submits a read of `len` bytes at `offset` (split into requests the server accepts).
    pub fn submit_read(&self, offset: u64, len: usize) -> Result<Ticket> {
        self.check_range(offset, len as u64)?;
        let mut parts = Vec::new();
        let mut at = 0usize;
        while at < len {
            let n = (len - at).min(self.max_request as usize);
            parts.push(self.submit(CMD_READ, 0, offset + at as u64, n as u32, &[], Vec::new())?);
            at += n;
        }
        Ok(Ticket { parts, len })
    }

    fn answer(&self, rx: &Receiver<Result<Answer>>) -> Result<Answer> {
        // The receiver enforces the timeout; this one only guards against a lost receiver.
        match rx.recv_timeout(self.shared.timeout + Duration::from_secs(5)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(NbdError::Timeout {
                addr: self.shared.addr.clone(),
                secs: self.shared.timeout.as_secs(),
            }),
            Err(RecvTimeoutError::Disconnected) => Err(NbdError::Closed {
                addr: self.shared.addr.clone(),
                why: self
                    .shared
                    .table
                    .lock()
                    .expect("table lock")
                    .dead
                    .clone()
                    .unwrap_or_else(|| "the receiver stopped".into()),
            }),
        }
    }

    /// Submits a read of `buf.len()` bytes at `offset` into `buf` (a recycled buffer: no
    /// allocation, no page faults); [`Client::wait`] gives it back filled.
    pub fn submit_read_into(&self, offset: u64, mut buf: Vec<u8>) -> Result<Ticket> {
        let len = buf.len();
        if len > self.max_request as usize {
            return self.submit_read(offset, len);
        }
        self.check_range(offset, len as u64)?;
        buf.resize(len, 0);
        let rx = self.submit(CMD_READ, 0, offset, len as u32, &[], buf)?;
        Ok(Ticket {
            parts: vec![rx],
            len,
        })
    }

    /// Waits for a submitted read; its bytes, complete.
    pub fn wait(&self, t: Ticket) -> Result<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for rx in &t.parts {
            match self.answer(rx)? {
                Answer::Data(d) => match &mut out {
                    None => out = Some(d),
                    Some(o) => o.extend_from_slice(&d),
                },
                _ => return Err(NbdError::Usage("a read answered as something else".into())),
            }
        }
        let out = out.unwrap_or_default();
        if out.len() != t.len {
            return Err(NbdError::Usage(
                "read answered with the wrong length".into(),
            ));
        }
        Ok(out)
    }

    /// Reads `len` bytes at `offset`.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let t = self.submit_read(offset, len)?;
        self.wait(t)
    }

    /// Writes `data` at `offset` (tests and writers; Bulwark itself only reads).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        if data.len() > self.max_request as usize {
            return Err(NbdError::Usage(
                "write larger than the server's maximum".into(),
            ));
        }
        let rx = self.submit(CMD_WRITE, 0, offset, data.len() as u32, data, Vec::new())?;
        self.answer(&rx).map(|_| ())
    }

    /// Flushes the export (what was written is durable on the server).
    pub fn flush(&self) -> Result<()> {
        let rx = self.submit(CMD_FLUSH, 0, 0, 0, &[], Vec::new())?;
        self.answer(&rx).map(|_| ())
    }

    /// One block-status request: per negotiated context, its extents from `offset`.
    pub fn block_status(&self, offset: u64, len: u32) -> Result<Vec<(u32, Vec<Extent>)>> {
        if !self.shared.structured || self.shared.contexts.is_empty() {
            return Err(NbdError::Usage("no meta context was negotiated".into()));
        }
        self.check_range(offset, len.into())?;
        let rx = self.submit(CMD_BLOCK_STATUS, 0, offset, len, &[], Vec::new())?;
        match self.answer(&rx)? {
            Answer::Status(s) => Ok(s),
            _ => Err(NbdError::Usage(
                "block status answered as something else".into(),
            )),
        }
    }

    /// The extents of context `id` covering `[start, end)`, in order, merged where equal.
    pub fn map(&self, id: u32, start: u64, end: u64) -> Result<Vec<MappedExtent>> {
        let end = end.min(self.size);
        let mut out: Vec<MappedExtent> = Vec::new();
        let mut pos = start;
        while pos < end {
            let len = (end - pos).min(MAX_STATUS_REQUEST) as u32;
            let got = self.block_status(pos, len)?;
            let Some((_, extents)) = got.into_iter().find(|(i, _)| *i == id) else {
                return Err(NbdError::Protocol {
                    addr: self.shared.addr.clone(),
                    why: format!("block status without extents for context {id}"),
                });
            };
            for e in extents {
                if pos >= end {
                    break;
                }
                let e_end = pos.saturating_add(e.length.into()).min(end);
                match out.last_mut() {
                    Some(l) if l.end == pos && l.flags == e.flags => l.end = e_end,
                    _ => out.push(MappedExtent {
                        start: pos,
                        end: e_end,
                        flags: e.flags,
                    }),
                }
                pos = e_end;
            }
        }
        Ok(out)
    }

    /// Ends the connection politely.
    pub fn disconnect(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(h) = self.reader.take() {
            let req = Request {
                flags: 0,
                kind: CMD_DISC,
                cookie: 0,
                offset: 0,
                length: 0,
            }
            .encode();
            if let Ok(mut w) = self.shared.writer.lock() {
                let _ = w.write_all(&req);
                w.shutdown(Shutdown::Both);
            }
            fail_all(&self.shared, "the client disconnected".into());
            let _ = h.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

fn fail_all(sh: &Shared, why: String) {
    let mut t = sh.table.lock().expect("table lock");
    if t.dead.is_none() {
        t.dead = Some(why.clone());
    }
    for (_, p) in t.pending.drain() {
        let _ = p.tx.send(Err(NbdError::Closed {
            addr: sh.addr.clone(),
            why: why.clone(),
        }));
    }
}

/// The receiver thread: reads replies until the connection ends or breaks.
fn receive(sh: Arc<Shared>, mut s: Stream) {
    let why = match receive_loop(&sh, &mut s) {
        Ok(()) => "the server closed the connection".to_string(),
        Err(e) => e,
    };
    fail_all(&sh, why);
    s.shutdown(Shutdown::Both);
}

/// Reads exactly `b`, telling a timeout and a closed connection apart; `idle` allows a
/// timeout before the first byte while nothing is pending.
fn read_full(
    sh: &Shared,
    s: &mut Stream,
    b: &mut [u8],
    what: &str,
    idle: bool,
) -> Result<bool, String> {
    let mut at = 0;
    // A request submitted just before a timeout fired gets one more full period.
    let mut strikes = 0;
    while at < b.len() {
        match s.read(&mut b[at..]) {
            Ok(0) if at == 0 && idle => return Ok(false),
            Ok(0) => {
                return Err(format!(
                    "the server closed the connection in the middle of {what}"
                ))
            }
            Ok(n) => {
                at += n;
                strikes = 0;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let nothing_pending = sh.table.lock().expect("table lock").pending.is_empty();
                if at == 0 && idle && nothing_pending {
                    strikes = 0;
                    continue;
                }
                strikes += 1;
                if strikes >= 2 || at > 0 {
                    return Err(format!(
                        "no reply from the server within {} s (while reading {what})",
                        sh.timeout.as_secs()
                    ));
                }
            }
            Err(e) => return Err(format!("reading {what}: {e}")),
        }
    }
    Ok(true)
}

fn receive_loop(sh: &Shared, s: &mut Stream) -> Result<(), String> {
    loop {
        let mut magic = [0u8; 4];
        if !read_full(sh, s, &mut magic, "a reply", true)? {
            if sh.table.lock().expect("table lock").dead.is_some() {
                return Ok(());
            }
            return Err("the server closed the connection".into());
        }
        match be32(&magic) {
            SIMPLE_REPLY_MAGIC => {
                let mut h = [0u8; SIMPLE_REPLY_LEN - 4];
                read_full(sh, s, &mut h, "a simple reply", false)?;
                let r = SimpleReply::decode_after_magic(&h);
                let mut p = take(sh, r.cookie)?;
                if r.error != 0 {
                    let e = Err(cmd_error(&p, r.error, String::new()));
                    let _ = p.tx.send(e);
                    continue;
                }
                let answer = match &mut p.kind {
                    Kind::Read { .. } if sh.structured => {
                        return Err(
                            "a simple reply to a read although structured replies were agreed"
                                .into(),
                        )
                    }
                    Kind::Read { buf, .. } => {
                        let mut buf = std::mem::take(buf);
                        buf.resize(p.len as usize, 0);
                        read_full(sh, s, &mut buf, "read data", false)?;
                        Answer::Data(buf)
                    }
                    Kind::Status { .. } => {
                        return Err("a simple reply to a block-status request".into())
                    }
                    Kind::Other => Answer::Done,
                };
                let _ = p.tx.send(Ok(answer));
            }
            STRUCTURED_REPLY_MAGIC if sh.structured => {
                let mut h = [0u8; STRUCTURED_REPLY_LEN - 4];
                read_full(sh, s, &mut h, "a structured reply header", false)?;
                let r = StructuredReply::decode_after_magic(&h);
                chunk(sh, s, r)?;
            }
            STRUCTURED_REPLY_MAGIC => return Err("a structured reply that was never agreed".into()),
            m => return Err(format!("bad reply magic {m:#010x}")),
        }
    }
}

fn take(sh: &Shared, cookie: u64) -> Result<Pending, String> {
    sh.table
        .lock()
        .expect("table lock")
        .pending
        .remove(&cookie)
        .ok_or_else(|| format!("a reply for cookie {cookie}, which no request in flight has"))
}

fn cmd_error(p: &Pending, errno: u32, message: String) -> NbdError {
    NbdError::Command {
        cmd: p.cmd,
        offset: p.offset,
        len: p.len.into(),
        errno,
        message: if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        },
    }
}

/// Marks `[off, off+len)` of a read as answered; refuses overlaps (the spec forbids them).
fn cover(covered: &mut Vec<(u64, u64)>, off: u64, len: u64) -> Result<(), String> {
    let end = off + len;
    let i = covered.partition_point(|&(s, _)| s < off);
    if i > 0 && covered[i - 1].1 > off || i < covered.len() && covered[i].0 < end {
        return Err("read chunks overlap".into());
    }
    covered.insert(i, (off, end));
    Ok(())
}

fn chunk(sh: &Shared, s: &mut Stream, r: StructuredReply) -> Result<(), String> {
    // Take the request out of the table while its chunk is read; put it back unless done
    // (and on a broken reply too, so that it fails with the connection's error).
    let mut p = take(sh, r.cookie)?;
    match chunk_body(sh, s, r, &mut p) {
        Ok(Some(answer)) => {
            let _ = p.tx.send(answer);
            Ok(())
        }
        Ok(None) => {
            sh.table
                .lock()
                .expect("table lock")
                .pending
                .insert(r.cookie, p);
            Ok(())
        }
        Err(e) => {
            sh.table
                .lock()
                .expect("table lock")
                .pending
                .insert(r.cookie, p);
            Err(e)
        }
    }
}

/// Reads one chunk into `p`; the answer once the chunk is the last one.
fn chunk_body(
    sh: &Shared,
    s: &mut Stream,
    r: StructuredReply,
    p: &mut Pending,
) -> Result<Option<Result<Answer>>, String> {
    let len = r.length as usize;
    let (req_off, req_len) = (p.offset, u64::from(p.len));
    match r.kind {
        REPLY_TYPE_NONE => {
            if len != 0 {
                return Err(format!("a NONE chunk with {len} bytes of payload"));
            }
            if !r.is_done() {
                return Err("a NONE chunk without the DONE flag".into());
            }
        }
        REPLY_TYPE_OFFSET_DATA | REPLY_TYPE_OFFSET_HOLE => {
            let Kind::Read { buf, covered } = &mut p.kind else {
                return Err("read data in the reply to another command".into());
            };
            if buf.len() != req_len as usize {
                *buf = vec![0u8; req_len as usize];
            }
            let mut off = [0u8; 8];
            if len < 8 + 1 {
                return Err(format!("a read chunk of {len} bytes is too short"));
            }
            let (data_len, hole) = if r.kind == REPLY_TYPE_OFFSET_DATA {
                ((len - 8) as u64, false)
            } else {
                if len != 12 {
                    return Err(format!("a hole chunk of {len} bytes (must be 12)"));
                }
                (0, true)
            };
            read_full(sh, s, &mut off, "a chunk offset", false)?;
            let at = be64(&off);
            let n = if hole {
                let mut l = [0u8; 4];
                read_full(sh, s, &mut l, "a hole length", false)?;
                u64::from(be32(&l))
            } else {
                data_len
            };
            if n == 0 || at < req_off || at.checked_add(n).is_none_or(|e| e > req_off + req_len) {
                return Err(format!(
                    "a read chunk for {n} bytes at {at}, outside the {req_len} bytes asked at {req_off}"
                ));
            }
            if covered.len() > 4096 {
                return Err("more than 4096 chunks for one read".into());
            }
            cover(covered, at, n)?;
            let rel = (at - req_off) as usize;
            if hole {
                buf[rel..rel + n as usize].fill(0);
            } else {
                read_full(sh, s, &mut buf[rel..rel + n as usize], "read data", false)?;
            }
        }
        REPLY_TYPE_BLOCK_STATUS => {
            let Kind::Status { got } = &mut p.kind else {
                return Err("block status in the reply to another command".into());
            };
            if len < 12 || !(len - 4).is_multiple_of(8) || (len - 4) / 8 > MAX_EXTENTS_PER_CHUNK {
                return Err(format!("a block-status chunk of {len} bytes"));
            }
            let mut b = vec![0u8; len];
            read_full(sh, s, &mut b, "block status", false)?;
            let (id, extents) = decode_block_status(&b).ok_or("undecodable block status")?;
            if !sh.contexts.iter().any(|(i, _)| *i == id) {
                return Err(format!(
                    "block status for context {id}, which was not agreed"
                ));
            }
            if got.iter().any(|(i, _)| *i == id) {
                return Err(format!("two block-status chunks for context {id}"));
            }
            if extents.iter().any(|e| e.length == 0) {
                return Err("a block-status extent of length 0".into());
            }
            got.push((id, extents));
        }
        k if k & REPLY_TYPE_FLAG_ERROR != 0 => {
            let max = 4 + 2 + MAX_ERROR_MESSAGE + 8;
            if len < 6 || len > max {
                return Err(format!("an error chunk of {len} bytes"));
            }
            let mut b = vec![0u8; len];
            read_full(sh, s, &mut b, "an error chunk", false)?;
            let errno = be32(&b);
            let mlen = u16::from_be_bytes([b[4], b[5]]) as usize;
            if 6 + mlen > len {
                return Err("an error chunk whose message is longer than the chunk".into());
            }
            let msg = String::from_utf8_lossy(&b[6..6 + mlen]).into_owned();
            if errno == 0 {
                return Err("an error chunk with error 0".into());
            }
            if p.error.is_none() {
                p.error = Some((errno, msg));
            }
        }
        k => return Err(format!("an unknown reply type {k}")),
    }
    if !r.is_done() {
        return Ok(None);
    }
    let answer = if let Some((errno, msg)) = p.error.take() {
        Err(cmd_error(p, errno, msg))
    } else {
        match std::mem::replace(&mut p.kind, Kind::Other) {
            Kind::Read { buf, covered } => {
                let total: u64 = covered.iter().map(|(s, e)| e - s).sum();
                if total != req_len {
                    return Err(format!(
                        "a read of {req_len} bytes at {req_off} ended after only {total} bytes"
                    ));
                }
                Ok(Answer::Data(buf))
            }
            Kind::Status { got } => {
                if got.is_empty() {
                    return Err("a block-status reply without extents".into());
                }
                Ok(Answer::Status(got))
            }
            Kind::Other => Ok(Answer::Done),
        }
    };
    Ok(Some(answer))
}
