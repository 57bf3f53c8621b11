//! An NBD server for one export: fixed newstyle negotiation (`NBD_OPT_GO`, `INFO`, `LIST`,
//! `ABORT`, `EXPORT_NAME`), structured replies, the `base:allocation` meta context, several
//! connections and several requests in flight on each, every request bounded.
//!
//! It serves any [`BlockDevice`] (a size, `read_at` and the allocation status of a range), so
//! it knows nothing of restore points. A read that fails for part of its range is answered,
//! with structured replies, by the good data and an error chunk at the failing offset; with
//! simple replies the whole request fails. Nothing the client sends is trusted: a bad magic,
//! an oversized option or request, or a write payload larger than the limit ends that
//! connection only, and the other connections keep being served.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::proto::*;
use crate::stream::Stream;

/// The most bytes one read (or write) request may ask for: 32 MiB, what the protocol
/// recommends servers accept and what QEMU's client never exceeds.
pub const MAX_REQUEST: u32 = 32 << 20;
/// The meta-context id of `base:allocation` on every connection.
const BASE_ALLOCATION_ID: u32 = 1;
/// Negotiation must finish within this (a silent client must not hold a connection slot).
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the accept loop looks for a new connection (and for a stop).
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// Most extents one block-status reply lists.
const MAX_EXTENTS: usize = 4096;

/// Why part of a read failed: the failing range, the NBD error and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (bytes {offset}..{})", offset + len)]
pub struct ReadError {
    pub offset: u64,
    pub len: u64,
    /// An NBD error value ([`EIO`] for damaged data).
    pub errno: u32,
    pub message: String,
}

/// What an NBD export serves.
pub trait BlockDevice: Send + Sync {
    /// Size of the device in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` with the bytes at `offset` (the range lies inside the device). On error,
    /// the bytes of `buf` before `err.offset` are valid, and the caller may continue after
    /// `err.offset + err.len`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError>;
    /// Allocation status of `[offset, offset + len)` as `(length, STATE_* flags)` runs in
    /// order; at least one, together at most `len` bytes.
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, u32)>, ReadError>;
    /// The block size reads are best aligned to (advertised as the preferred size).
    fn preferred_block_size(&self) -> u32 {
        4096
    }
    /// True when writes are accepted (a copy-on-write overlay); read-only otherwise.
    fn writable(&self) -> bool {
        false
    }
    /// Writes `data` at `offset` (only called when [`BlockDevice::writable`]).
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), ReadError> {
        let _ = data;
        Err(ReadError {
            offset,
            len: 0,
            errno: EPERM,
            message: "the export is read-only".into(),
        })
    }
    /// Makes written data durable.
    fn flush(&self) -> Result<(), ReadError> {
        Ok(())
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket at this path (`nbd+unix:///?socket=PATH`).
    Unix(PathBuf),
    /// A TCP address (`nbd://HOST:PORT`).
    Tcp(SocketAddr),
}

impl Listen {
    /// Parses `unix:PATH` or `HOST:PORT`.
    pub fn parse(s: &str) -> Result<Listen, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/bulwark-export.sock".into());
            }
            return Ok(Listen::Unix(PathBuf::from(p)));
        }
        s.parse::<SocketAddr>()
            .map(Listen::Tcp)
            .map_err(|_| format!("{s:?} is neither unix:PATH nor an address like 127.0.0.1:10809"))
    }

    /// The URI QEMU tools open this export by.
    pub fn uri(&self, export: &str) -> String {
        match self {
            Listen::Unix(p) => format!("nbd+unix:///{export}?socket={}", p.display()),
            Listen::Tcp(a) => format!("nbd://{a}/{export}"),
        }
    }
}

/// Settings of an export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The export's name; clients may also ask for the default export ("").
    pub name: String,
    pub description: String,
    /// Connections served at once; more are closed after the greeting.
    pub max_connections: usize,
    /// Threads serving the requests of one connection.
    pub workers_per_connection: usize,
    /// Requests read ahead of the workers on one connection (further requests wait in the
    /// socket: the client's own back-pressure).
    pub queue_per_connection: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            name: String::new(),
            description: String::new(),
            max_connections: 16,
            workers_per_connection: 4,
            queue_per_connection: 64,
        }
    }
}

/// A running export. [`Server::stop`] (also on drop) stops accepting, lets the requests in
/// flight finish, closes every connection and removes its Unix socket.
pub struct Server {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    listen: Listen,
}

/// Counters of a running export.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub bytes_read: AtomicU64,
    pub read_errors: AtomicU64,
}

struct Shared {
    dev: Arc<dyn BlockDevice>,
    opts: ExportOptions,
    stop: AtomicBool,
    active: AtomicUsize,
    next_id: AtomicU64,
    /// Clones of each open connection's socket, to shut them down on stop.
    conns: Mutex<HashMap<u64, Stream>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    stats: Stats,
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Binds a Unix socket, replacing a stale socket file (one nobody listens on, as a killed
/// export leaves) but never any other file or a socket in use.
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is the socket of a running server; stop it or choose another path",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)?;
            }
            Err(e) => return Err(e),
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; choose another path",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    bind_private(path)
}

/// Binds a Unix socket at `path` that only this user may connect to (mode 0600), whatever
/// the umask: it is bound in a new folder beside `path` that only this user can enter (0700),
/// made 0600 there, then hard-linked into place, so no other user can ever reach it under a
/// wider mode. (Narrowing the umask would change it for every thread of the process, and a
/// chmod after std's bind, which also listens, leaves a window in which anyone may connect.)
/// The link fails on an existing file: nothing is ever replaced.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut n = 0u32;
    let private = loop {
        let d = parent.join(format!(".nbd{}.{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => break d,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 64 => n += 1,
            Err(e) => return Err(e),
        }
    };
    let inner = private.join("s");
    let bound = (|| {
        // Created 0700 or narrower (the umask): this user must be able to enter it.
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
        let l = UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::hard_link(&inner, path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("linking the socket to {}: {e}", path.display()),
            )
        })?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&private);
    bound
}

impl Server {
    /// Starts serving `dev` on `listen`. Returns once the socket is bound.
    pub fn start(
        listen: &Listen,
        dev: Arc<dyn BlockDevice>,
        opts: ExportOptions,
    ) -> io::Result<Server> {
        // Non-blocking: the accept loop polls, so that stop never depends on reaching the
        // socket again (its folder may be gone by then).
        let (listener, listen) = match listen {
            Listen::Unix(p) => {
                let l = bind_unix(p)?;
                l.set_nonblocking(true)?;
                (Listener::Unix(l), Listen::Unix(p.clone()))
            }
            Listen::Tcp(a) => {
                let l = TcpListener::bind(a)?;
                l.set_nonblocking(true)?;
                let a = l.local_addr()?;
                (Listener::Tcp(l), Listen::Tcp(a))
            }
        };
        let shared = Arc::new(Shared {
            dev,
            opts,
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            workers: Mutex::new(Vec::new()),
            stats: Stats::default(),
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || accept_loop(listener, sh))?;
        Ok(Server {
            shared,
            accept: Some(accept),
            listen,
        })
    }

    /// Where it listens (a TCP port of 0 resolved to the one bound).
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Connections open now.
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Stops: no new connections, requests in flight finish, every connection is closed,
    /// the Unix socket file is removed.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = accept.join();
        // Readers stop at their next request; workers finish what they hold and reply.
        if let Ok(conns) = self.shared.conns.lock() {
            for s in conns.values() {
                s.shutdown(std::net::Shutdown::Read);
            }
        }
        let handles = std::mem::take(&mut *self.shared.workers.lock().expect("workers lock"));
        for h in handles {
            let _ = h.join();
        }
        if let Listen::Unix(p) = &self.listen {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn accept_loop(listener: Listener, sh: Arc<Shared>) {
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let s = match &listener {
            Listener::Unix(l) => l
                .accept()
                .and_then(|(s, _)| s.set_nonblocking(false).map(|()| Stream::Unix(s))),
            Listener::Tcp(l) => l.accept().and_then(|(s, _)| {
                let _ = s.set_nodelay(true);
                s.set_nonblocking(false).map(|()| Stream::Tcp(s))
            }),
        };
        let s = match s {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) => {
                tracing::warn!("nbd: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        // Reap finished connection threads so the list stays short.
        if let Ok(mut w) = sh.workers.lock() {
            w.retain(|h| !h.is_finished());
        }
        if sh.active.load(Ordering::SeqCst) >= sh.opts.max_connections {
            tracing::warn!(
                "nbd: refused a connection: {} already open",
                sh.opts.max_connections
            );
            continue;
        }
        sh.active.fetch_add(1, Ordering::SeqCst);
        sh.stats.connections.fetch_add(1, Ordering::Relaxed);
        let id = sh.next_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(c) = s.try_clone() {
            sh.conns.lock().expect("conns lock").insert(id, c);
        }
        let sh2 = sh.clone();
        let h = std::thread::Builder::new()
            .name(format!("nbd-conn-{id}"))
            .spawn(move || {
                match serve_connection(s, &sh2) {
                    Ok(()) => tracing::debug!(id, "nbd: connection closed"),
                    Err(e) => tracing::info!(id, "nbd: connection ended: {e}"),
                }
                sh2.conns.lock().expect("conns lock").remove(&id);
                sh2.active.fetch_sub(1, Ordering::SeqCst);
            });
        match h {
            Ok(h) => sh.workers.lock().expect("workers lock").push(h),
            Err(e) => {
                tracing::warn!("nbd: cannot start a connection thread: {e}");
                sh.conns.lock().expect("conns lock").remove(&id);
                sh.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// What negotiation settled for the transmission phase.
struct Negotiated {
    structured: bool,
    base_allocation: bool,
    no_zeroes: bool,
}

fn serve_connection(mut s: Stream, sh: &Shared) -> io::Result<()> {
    s.set_read_timeout(Some(NEGOTIATION_TIMEOUT))?;
    let mut hello = [0u8; 18];
    hello[0..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    hello[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    hello[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello)?;
    let mut cf = [0u8; 4];
    s.read_exact(&mut cf)?;
    let cflags = u32::from_be_bytes(cf);
    if cflags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(bad(format!("unknown client flags {cflags:#x}")));
    }
    if cflags & FLAG_C_FIXED_NEWSTYLE == 0 {
        return Err(bad("client does not speak fixed newstyle"));
    }
    let mut neg = Negotiated {
        structured: false,
        base_allocation: false,
        no_zeroes: cflags & FLAG_C_NO_ZEROES != 0,
    };
    if !negotiate(&mut s, sh, &mut neg)? {
        return Ok(());
    }
    s.set_read_timeout(None)?;
    transmission(s, sh, &neg)
}

fn option_reply(s: &mut Stream, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let h = OptionReply {
        option,
        kind,
        length: data.len() as u32,
    };
    let mut b = h.encode().to_vec();
    b.extend_from_slice(data);
    s.write_all(&b)
}

fn error_reply(s: &mut Stream, option: u32, kind: u32, msg: &str) -> io::Result<()> {
    option_reply(s, option, kind, msg.as_bytes())
}

/// A cursor over option data that fails, instead of panicking, on a short option.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4")))
    }
    /// A length-prefixed name of at most [`MAX_NAME`] bytes.
    fn name(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        if n > MAX_NAME {
            return None;
        }
        self.take(n as usize)
    }
}

fn transmission_flags(sh: &Shared) -> u16 {
    let mut f = TFLAG_HAS_FLAGS | TFLAG_CAN_MULTI_CONN;
    if sh.dev.writable() {
        f |= TFLAG_SEND_FLUSH | TFLAG_SEND_WRITE_ZEROES;
    } else {
        f |= TFLAG_READ_ONLY;
    }
    f
}

fn name_ok(sh: &Shared, name: &[u8]) -> bool {
    name.is_empty() || name == sh.opts.name.as_bytes()
}

/// The negotiation phase; true when transmission follows.
fn negotiate(s: &mut Stream, sh: &Shared, neg: &mut Negotiated) -> io::Result<bool> {
    loop {
        let mut hb = [0u8; OPTION_LEN];
        s.read_exact(&mut hb)?;
        let h = OptionHeader::decode(&hb).map_err(|e| bad(e.to_string()))?;
        if h.length > MAX_OPTION_DATA {
            // Skipping gigabytes of option data is not worth it: end this connection.
            return Err(bad(format!("option data of {} bytes", h.length)));
        }
        let mut data = vec![0u8; h.length as usize];
        s.read_exact(&mut data)?;
        if sh.stop.load(Ordering::SeqCst) {
            error_reply(s, h.option, REP_ERR_SHUTDOWN, "the server is stopping")?;
            return Ok(false);
        }
        match h.option {
            OPT_EXPORT_NAME => {
                if !name_ok(sh, &data) {
                    return Err(bad("unknown export name (EXPORT_NAME)"));
                }
                let mut b = Vec::with_capacity(134);
                b.extend_from_slice(&sh.dev.size().to_be_bytes());
                b.extend_from_slice(&transmission_flags(sh).to_be_bytes());
                if !neg.no_zeroes {
                    b.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&b)?;
                return Ok(true);
            }
            OPT_ABORT => {
                let _ = option_reply(s, h.option, REP_ACK, &[]);
                return Ok(false);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    error_reply(s, h.option, REP_ERR_INVALID, "LIST takes no data")?;
                    continue;
                }
                let mut d = Vec::new();
                put_name(&mut d, &sh.opts.name);
                option_reply(s, h.option, REP_SERVER, &d)?;
                option_reply(s, h.option, REP_ACK, &[])?;
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    error_reply(
                        s,
                        h.option,
                        REP_ERR_INVALID,
                        "STRUCTURED_REPLY takes no data",
                    )?;
                    continue;
                }
                neg.structured = true;
                option_reply(s, h.option, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => {
                let mut c = Cur(&data);
                let parsed = (|| {
                    let name = c.name()?;
                    let n = c.u16()?;
                    let mut reqs = Vec::new();
                    for _ in 0..n {
                        reqs.push(c.u16()?);
                    }
                    c.0.is_empty().then_some((name, reqs))
                })();
                let Some((name, reqs)) = parsed else {
                    error_reply(s, h.option, REP_ERR_INVALID, "malformed INFO/GO request")?;
                    continue;
                };
                if !name_ok(sh, name) {
                    error_reply(s, h.option, REP_ERR_UNKNOWN, "no export of that name")?;
                    continue;
                }
                let mut info = Vec::new();
                info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                info.extend_from_slice(&sh.dev.size().to_be_bytes());
                info.extend_from_slice(&transmission_flags(sh).to_be_bytes());
                option_reply(s, h.option, REP_INFO, &info)?;
                if reqs.contains(&INFO_NAME) {
                    let mut d = INFO_NAME.to_be_bytes().to_vec();
                    d.extend_from_slice(sh.opts.name.as_bytes());
                    option_reply(s, h.option, REP_INFO, &d)?;
                }
                if reqs.contains(&INFO_DESCRIPTION) && !sh.opts.description.is_empty() {
                    let mut d = INFO_DESCRIPTION.to_be_bytes().to_vec();
                    let desc = sh.opts.description.as_bytes();
                    d.extend_from_slice(&desc[..desc.len().min(MAX_NAME as usize)]);
                    option_reply(s, h.option, REP_INFO, &d)?;
                }
                // Always sent: it tells the client the largest request we accept.
                let mut d = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                d.extend_from_slice(&1u32.to_be_bytes());
                d.extend_from_slice(&sh.dev.preferred_block_size().to_be_bytes());
                d.extend_from_slice(&MAX_REQUEST.to_be_bytes());
                option_reply(s, h.option, REP_INFO, &d)?;
                option_reply(s, h.option, REP_ACK, &[])?;
                if h.option == OPT_GO {
                    return Ok(true);
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let set = h.option == OPT_SET_META_CONTEXT;
                if set && !neg.structured {
                    error_reply(
                        s,
                        h.option,
                        REP_ERR_INVALID,
                        "meta contexts need structured replies",
                    )?;
                    continue;
                }
                let mut c = Cur(&data);
                let parsed = (|| {
                    let name = c.name()?;
                    let n = c.u32()?;
                    if n as usize > 1024 {
                        return None;
                    }
                    let mut qs = Vec::new();
                    for _ in 0..n {
                        qs.push(c.name()?);
                    }
                    c.0.is_empty().then_some((name, qs))
                })();
                let Some((name, qs)) = parsed else {
                    error_reply(
                        s,
                        h.option,
                        REP_ERR_INVALID,
                        "malformed meta-context request",
                    )?;
                    continue;
                };
                if !name_ok(sh, name) {
                    error_reply(s, h.option, REP_ERR_UNKNOWN, "no export of that name")?;
                    continue;
                }
                let base = META_BASE_ALLOCATION.as_bytes();
                let matches = if set {
                    qs.contains(&base)
                } else {
                    // LIST with no query, or "base:", lists everything of the namespace.
                    qs.is_empty() || qs.iter().any(|q| *q == base || *q == b"base:")
                };
                if set {
                    neg.base_allocation = matches;
                }
                if matches {
                    let mut d = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                    d.extend_from_slice(base);
                    option_reply(s, h.option, REP_META_CONTEXT, &d)?;
                }
                option_reply(s, h.option, REP_ACK, &[])?;
            }
            OPT_STARTTLS => error_reply(s, h.option, REP_ERR_POLICY, "TLS is not offered")?,
            _ => error_reply(s, h.option, REP_ERR_UNSUP, "option not supported")?,
        }
    }
}

/// Replies of one connection share its socket; each chunk is written whole under the lock.
struct Replies {
    w: Mutex<Stream>,
    structured: bool,
}

impl Replies {
    fn send(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut w = self.w.lock().map_err(|_| io::Error::other("poisoned"))?;
        for p in parts {
            w.write_all(p)?;
        }
        Ok(())
    }

    fn simple(&self, cookie: u64, error: u32, data: &[u8]) -> io::Result<()> {
        let h = SimpleReply { error, cookie }.encode();
        self.send(&[&h, data])
    }

    fn chunk(&self, cookie: u64, kind: u16, done: bool, payload: &[&[u8]]) -> io::Result<()> {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let h = StructuredReply {
            flags: if done { REPLY_FLAG_DONE } else { 0 },
            kind,
            cookie,
            length: len as u32,
        }
        .encode();
        let mut parts: Vec<&[u8]> = vec![&h];
        parts.extend_from_slice(payload);
        self.send(&parts)
    }

    /// An error reply for a whole request.
    fn error(&self, cookie: u64, errno: u32, msg: &str) -> io::Result<()> {
        if self.structured {
            let m = &msg.as_bytes()[..msg.len().min(1024)];
            let mut p = errno.to_be_bytes().to_vec();
            p.extend_from_slice(&(m.len() as u16).to_be_bytes());
            p.extend_from_slice(m);
            self.chunk(cookie, REPLY_TYPE_ERROR, true, &[&p])
        } else {
            self.simple(cookie, errno, &[])
        }
    }

    fn ok(&self, cookie: u64) -> io::Result<()> {
        if self.structured {
            self.chunk(cookie, REPLY_TYPE_NONE, true, &[])
        } else {
            self.simple(cookie, 0, &[])
        }
    }
}

enum Work {
    Req(Request, Vec<u8>),
}

fn transmission(s: Stream, sh: &Shared, neg: &Negotiated) -> io::Result<()> {
    let mut r = s.try_clone()?;
    let replies = Replies {
        w: Mutex::new(s),
        structured: neg.structured,
    };
    let (tx, rx) = crossbeam_channel::bounded::<Work>(sh.opts.queue_per_connection.max(1));
    std::thread::scope(|sc| -> io::Result<()> {
        for _ in 0..sh.opts.workers_per_connection.max(1) {
            let (rx, replies) = (rx.clone(), &replies);
            sc.spawn(move || {
                for Work::Req(req, data) in rx {
                    if handle(sh, replies, neg, req, &data).is_err() {
                        // The socket failed: the reader sees it too and stops.
                        replies
                            .w
                            .lock()
                            .map(|w| w.shutdown(std::net::Shutdown::Both))
                            .ok();
                        return;
                    }
                }
            });
        }
        drop(rx);
        // Moved in, so that every exit drops the sender and the workers end.
        let tx = tx;
        loop {
            let mut hb = [0u8; REQUEST_LEN];
            match r.read_exact(&mut hb) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let req = Request::decode(&hb).map_err(|e| bad(e.to_string()))?;
            sh.stats.requests.fetch_add(1, Ordering::Relaxed);
            let mut data = Vec::new();
            if req.kind == CMD_WRITE {
                // The payload follows the header whatever we answer: read it (bounded) or
                // the stream loses its framing.
                if req.length > MAX_REQUEST {
                    return Err(bad(format!("write of {} bytes", req.length)));
                }
                data = vec![0u8; req.length as usize];
                r.read_exact(&mut data)?;
            }
            if req.kind == CMD_DISC {
                // Requests already queued are answered (the workers drain the queue).
                return Ok(());
            }
            if tx.send(Work::Req(req, data)).is_err() {
                return Ok(());
            }
        }
    })
}

/// Checks a request's range; the NBD error to answer with when it is bad.
fn check_range(sh: &Shared, neg: &Negotiated, req: &Request) -> Result<(), (u32, String)> {
    let size = sh.dev.size();
    let end = req.offset.checked_add(u64::from(req.length));
    if !matches!(end, Some(e) if e <= size) {
        return Err((
            EINVAL,
            format!(
                "request at {} for {} bytes goes past the end of the export ({size} bytes)",
                req.offset, req.length
            ),
        ));
    }
    if req.length > MAX_REQUEST && req.kind != CMD_BLOCK_STATUS {
        let e = if neg.structured { EOVERFLOW } else { EINVAL };
        return Err((
            e,
            format!(
                "request of {} bytes is larger than {MAX_REQUEST}",
                req.length
            ),
        ));
    }
    Ok(())
}

fn handle(
    sh: &Shared,
    rp: &Replies,
    neg: &Negotiated,
    req: Request,
    data: &[u8],
) -> io::Result<()> {
    let c = req.cookie;
    let known_flags =
        CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO;
    if req.flags & !known_flags != 0 {
        return rp.error(c, EINVAL, "unknown command flags");
    }
    match req.kind {
        CMD_READ => {
            if let Err((e, m)) = check_range(sh, neg, &req) {
                return rp.error(c, e, &m);
            }
            read(sh, rp, req)
        }
        CMD_BLOCK_STATUS => {
            if !neg.base_allocation {
                return rp.error(c, EINVAL, "no meta context was negotiated");
            }
            if let Err((e, m)) = check_range(sh, neg, &req) {
                return rp.error(c, e, &m);
            }
            block_status(sh, rp, req)
        }
        CMD_FLUSH => match sh.dev.flush() {
            Ok(()) => rp.ok(c),
            Err(e) => rp.error(c, e.errno, &e.message),
        },
        CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM if sh.dev.writable() => {
            if let Err((e, m)) = check_range(sh, neg, &req) {
                return rp.error(c, e, &m);
            }
            let r = match req.kind {
                CMD_WRITE => sh.dev.write_at(req.offset, data),
                // Zeroes written through the overlay (a trim reads back as zeroes too).
                _ => write_zeroes(sh, req.offset, u64::from(req.length)),
            };
            let r = r.and_then(|()| {
                if req.flags & CMD_FLAG_FUA != 0 {
                    sh.dev.flush()
                } else {
                    Ok(())
                }
            });
            match r {
                Ok(()) => rp.ok(c),
                Err(e) => rp.error(c, e.errno, &e.message),
            }
        }
        CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM => rp.error(c, EPERM, "the export is read-only"),
        _ => rp.error(c, EINVAL, "command not supported"),
    }
}

fn write_zeroes(sh: &Shared, offset: u64, len: u64) -> Result<(), ReadError> {
    let zero = vec![0u8; len.min(1 << 20) as usize];
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(zero.len() as u64) as usize;
        sh.dev.write_at(at, &zero[..n])?;
        at += n as u64;
    }
    Ok(())
}

fn read(sh: &Shared, rp: &Replies, req: Request) -> io::Result<()> {
    let c = req.cookie;
    let mut buf = vec![0u8; req.length as usize];
    if req.length == 0 {
        return rp.ok(c);
    }
    if !rp.structured {
        return match sh.dev.read_at(req.offset, &mut buf) {
            Ok(()) => {
                sh.stats
                    .bytes_read
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                rp.simple(c, 0, &buf)
            }
            Err(e) => {
                sh.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("nbd: read failed: {e}");
                rp.simple(c, e.errno, &[])
            }
        };
    }
    // Structured: good parts as data chunks, each failed range as an error at its offset.
    let end = req.offset + u64::from(req.length);
    let mut at = req.offset;
    while at < end {
        let part = &mut buf[(at - req.offset) as usize..];
        let (good, failed) = match sh.dev.read_at(at, part) {
            Ok(()) => (end - at, None),
            Err(e) if e.offset >= at && e.offset < end => (e.offset - at, Some(e)),
            Err(e) => {
                // A device that names a range outside the request: fail all of it.
                sh.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                return rp.error(c, e.errno, &e.message);
            }
        };
        if good > 0 {
            let done = failed.is_none();
            let off = at.to_be_bytes();
            let data = &buf[(at - req.offset) as usize..(at - req.offset + good) as usize];
            sh.stats.bytes_read.fetch_add(good, Ordering::Relaxed);
            rp.chunk(c, REPLY_TYPE_OFFSET_DATA, done, &[&off, data])?;
        }
        let Some(e) = failed else { break };
        sh.stats.read_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("nbd: read failed: {e}");
        let next = e.offset.saturating_add(e.len.max(1)).min(end);
        let m = &e.message.as_bytes()[..e.message.len().min(1024)];
        let mut p = e.errno.to_be_bytes().to_vec();
        p.extend_from_slice(&(m.len() as u16).to_be_bytes());
        p.extend_from_slice(m);
        p.extend_from_slice(&e.offset.to_be_bytes());
        rp.chunk(c, REPLY_TYPE_ERROR_OFFSET, next >= end, &[&p])?;
        at = next;
    }
    Ok(())
}

fn block_status(sh: &Shared, rp: &Replies, req: Request) -> io::Result<()> {
    let c = req.cookie;
    if req.length == 0 {
        return rp.error(c, EINVAL, "block status of an empty range");
    }
    let mut runs = match sh.dev.extents(req.offset, u64::from(req.length)) {
        Ok(r) => r,
        Err(e) => return rp.error(c, e.errno, &e.message),
    };
    if req.flags & CMD_FLAG_REQ_ONE != 0 {
        runs.truncate(1);
    }
    runs.truncate(MAX_EXTENTS);
    let mut ex = Vec::with_capacity(runs.len());
    let mut total = 0u64;
    for (len, flags) in runs {
        let len = len.min(u64::from(req.length) - total);
        if len == 0 {
            break;
        }
        total += len;
        ex.push(Extent {
            length: len as u32,
            flags,
        });
    }
    if ex.is_empty() {
        return rp.error(c, EIO, "the device reported no extent");
    }
    let p = encode_block_status(BASE_ALLOCATION_ID, &ex);
    rp.chunk(c, REPLY_TYPE_BLOCK_STATUS, true, &[&p])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            Listen::parse("unix:/tmp/x.sock"),
            Ok(Listen::Unix("/tmp/x.sock".into()))
        );
        assert!(Listen::parse("unix:").is_err());
        assert_eq!(
            Listen::parse("127.0.0.1:10809"),
            Ok(Listen::Tcp("127.0.0.1:10809".parse().unwrap()))
        );
        assert!(Listen::parse("nowhere").is_err());
        assert_eq!(Listen::Unix("/s".into()).uri(""), "nbd+unix:///?socket=/s");
    }
}
