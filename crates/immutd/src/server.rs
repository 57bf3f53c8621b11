//! The Unix socket: one thread per connection (a bounded number), every request handled
//! under the service lock, and the timer that unlocks expired files.
//!
//! Who may hold a connection is decided at `accept`, from `SO_PEERCRED`, before a thread or
//! a slot is spent on it ([`admit`]): a uid other than root and the service user is answered
//! `NotPermitted` and closed at once; one uid holds at most [`MAX_PER_UID`] of the
//! [`MAX_CONNECTIONS`] slots, so root and the service user always find one free (a few
//! connections over a limit wait [`SLOT_WAIT`] for a slot before they are refused). A request
//! must arrive whole within [`REQUEST_DEADLINE`] of its first byte (a deadline, not an idle
//! timeout that a trickle of bytes restarts). Refused and cut connections are counted for
//! `status` and audited: at most [`AUDITS_PER_MINUTE`] lines a minute, then one summary
//! line every [`SUMMARY_EVERY`], so a flood is visible without filling the disk.

use std::collections::{BTreeSet, HashMap};
use std::fs::Permissions;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulwark_immut_msg::{
    read_frame, write_frame, ErrorCode, FrameError, Request, Response, StatusInfo,
};
use bulwark_sys::PeerCred;

use crate::error::{ImmutdError, Result};
use crate::service::Service;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Connections one uid may hold at once: the other permitted uid always finds
/// `MAX_CONNECTIONS - MAX_PER_UID` slots free.
pub const MAX_PER_UID: usize = 12;
/// A connection that starts no request for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// A request must be complete this long after its first byte, and its answer written.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Refused or cut connections audited one by one per minute; the rest are summed up.
pub const AUDITS_PER_MINUTE: u32 = 20;
/// Connections of root and the service user that may wait (up to [`SLOT_WAIT`]) for a slot
/// when their uid or the service is at its limit; more are refused at once.
pub const MAX_WAITING: u64 = 8;
/// How long such a connection waits for a slot before it is answered `Busy`.
pub const SLOT_WAIT: Duration = Duration::from_secs(10);
/// Events waiting for the audit thread; more are counted and dropped.
const AUDIT_QUEUE: usize = 256;

/// What happens to a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Served by a thread of its own.
    Serve,
    /// Neither root nor the service user: answered `NotPermitted` and closed.
    Stranger,
    /// This uid already holds [`MAX_PER_UID`] connections.
    UidFull,
    /// All [`MAX_CONNECTIONS`] slots are taken.
    Full,
}

/// The admission rule: `of_uid` connections are open for this uid, `total` in all.
pub fn admit(uid: u32, service_uid: u32, of_uid: usize, total: usize) -> Admit {
    if uid != 0 && uid != service_uid {
        Admit::Stranger
    } else if of_uid >= MAX_PER_UID {
        Admit::UidFull
    } else if total >= MAX_CONNECTIONS {
        Admit::Full
    } else {
        Admit::Serve
    }
}

/// Counters of the socket since the service started, for `status` and the log.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: Mutex<HashMap<u32, usize>>,
    /// Connections from uids that may not use the service, closed at accept.
    pub refused_strangers: AtomicU64,
    /// Connections closed at accept because their uid or the service was at its limit.
    pub refused_busy: AtomicU64,
    /// Requests cut at [`REQUEST_DEADLINE`].
    pub timed_out: AtomicU64,
    /// Connections of root or the service user waiting for a slot.
    waiting: AtomicU64,
}

/// A taken slot; dropping it frees the slot.
struct Slot {
    stats: Arc<ConnStats>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.stats.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

impl ConnStats {
    /// Connections being served now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    /// Applies [`admit`] and takes a slot when the connection is served.
    fn take(self: &Arc<Self>, uid: u32, service_uid: u32) -> (Admit, Option<Slot>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total = open.values().sum();
        let of_uid = open.get(&uid).copied().unwrap_or(0);
        let a = admit(uid, service_uid, of_uid, total);
        if a != Admit::Serve {
            return (a, None);
        }
        *open.entry(uid).or_insert(0) += 1;
        let slot = Slot {
            stats: self.clone(),
            uid,
        };
        (a, Some(slot))
    }

    /// Puts the counters into a `Status` answer.
    pub fn fill(&self, s: &mut StatusInfo) {
        s.connections_open = u32::try_from(self.open()).unwrap_or(u32::MAX);
        s.refused_strangers = self.refused_strangers.load(Ordering::Relaxed);
        s.refused_busy = self.refused_busy.load(Ordering::Relaxed);
        s.requests_timed_out = self.timed_out.load(Ordering::Relaxed);
    }

    fn summary(&self) -> String {
        format!(
            "open={} refused_strangers={} refused_busy={} timed_out={}",
            self.open(),
            self.refused_strangers.load(Ordering::Relaxed),
            self.refused_busy.load(Ordering::Relaxed),
            self.timed_out.load(Ordering::Relaxed)
        )
    }
}

/// One connection event for the audit log.
struct Event {
    kind: &'static str,
    uid: u32,
    detail: String,
}

/// Hands events to the audit thread without ever blocking the caller.
#[derive(Clone)]
struct Auditor {
    tx: SyncSender<Event>,
    dropped: Arc<AtomicU64>,
}

impl Auditor {
    fn note(&self, kind: &'static str, uid: u32, detail: String) {
        if self.tx.try_send(Event { kind, uid, detail }).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The budget of audit lines for connection events: [`AUDITS_PER_MINUTE`] lines of their
/// own, then one summary every [`SUMMARY_EVERY`] while events keep coming.
#[derive(Debug, Default)]
struct Budget {
    minute: u64,
    logged: u32,
    suppressed: u64,
    uids: BTreeSet<u32>,
}

/// How often suppressed events are summed up in one line.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

impl Budget {
    /// True when an event in minute `m` (since the service started) gets a line of its own.
    fn spend(&mut self, m: u64, uid: u32) -> bool {
        if m != self.minute {
            self.minute = m;
            self.logged = 0;
        }
        if self.logged < AUDITS_PER_MINUTE {
            self.logged += 1;
            return true;
        }
        self.suppress(1, Some(uid));
        false
    }

    fn suppress(&mut self, n: u64, uid: Option<u32>) {
        self.suppressed += n;
        if let Some(u) = uid {
            if self.uids.len() < 16 {
                self.uids.insert(u);
            }
        }
    }

    /// The summary of the suppressed events, if any, which starts a new count.
    fn take_summary(&mut self) -> Option<String> {
        if self.suppressed == 0 {
            return None;
        }
        let uids: Vec<String> = self.uids.iter().map(u32::to_string).collect();
        let s = format!(
            "{} further connections refused or cut without a line each (uids {})",
            self.suppressed,
            uids.join(",")
        );
        self.suppressed = 0;
        self.uids.clear();
        Some(s)
    }
}

/// Writes connection events to the audit log (and the service's log), within the budget.
fn run_auditor(
    svc: Arc<Mutex<Service>>,
    rx: Receiver<Event>,
    stats: Arc<ConnStats>,
    dropped: Arc<AtomicU64>,
) {
    let start = Instant::now();
    let mut budget = Budget::default();
    let mut last_summary = Instant::now();
    let write = |event: &str, detail: &str| {
        let mut s = svc.lock().unwrap_or_else(|p| p.into_inner());
        s.audit_connection_event(event, detail);
    };
    loop {
        let got = rx.recv_timeout(Duration::from_secs(1));
        budget.suppress(dropped.swap(0, Ordering::Relaxed), None);
        match got {
            Ok(ev) => {
                if budget.spend(start.elapsed().as_secs() / 60, ev.uid) {
                    write(ev.kind, &ev.detail);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if last_summary.elapsed() >= SUMMARY_EVERY {
            last_summary = Instant::now();
            if let Some(s) = budget.take_summary() {
                write(
                    "connections-suppressed",
                    &format!("{s}; totals since start: {}", stats.summary()),
                );
            }
        }
    }
}

/// Binds the socket: its folder root-owned, a stale socket replaced, mode 0666 (the peer's
/// uid, checked on every connection, is the real gate; others get an audited refusal).
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(ImmutdError::io("creating socket folder", dir))?;
            std::fs::set_permissions(dir, Permissions::from_mode(0o755))
                .map_err(ImmutdError::io("chmod", dir))?;
        }
        crate::config::check_root_owned(dir, "socket folder")?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(ImmutdError::Other(format!(
                    "another service is listening on {}",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(ImmutdError::io("removing stale socket", path))?;
        }
        Ok(_) => {
            return Err(ImmutdError::Other(format!(
                "{} exists and is not a socket; remove it",
                path.display()
            )));
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path).map_err(ImmutdError::io("binding socket", path))?;
    std::fs::set_permissions(path, Permissions::from_mode(0o666))
        .map_err(ImmutdError::io("chmod", path))?;
    Ok(l)
}

/// Reads with a deadline: [`IDLE`] for the first byte of a request, then
/// [`REQUEST_DEADLINE`] for the whole of it, however the bytes trickle in.
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    idle_until: Instant,
    deadline: Duration,
    until: Option<Instant>,
}

impl DeadlineReader<'_> {
    fn new(stream: &UnixStream, idle: Duration, deadline: Duration) -> DeadlineReader<'_> {
        DeadlineReader {
            stream,
            idle_until: Instant::now() + idle,
            deadline,
            until: None,
        }
    }
    fn started(&self) -> bool {
        self.until.is_some()
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let until = self.until.unwrap_or(self.idle_until);
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        match (&mut &*self.stream).read(buf) {
            Ok(n) => {
                if n > 0 && self.until.is_none() {
                    self.until = Some(Instant::now() + self.deadline);
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::ErrorKind::TimedOut.into()),
            Err(e) => Err(e),
        }
    }
}

fn is_timeout(e: &FrameError) -> bool {
    matches!(e, FrameError::Io(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock))
}

fn who(peer: &PeerCred) -> String {
    format!("uid={} pid={}", peer.uid, peer.pid)
}

fn serve_one(svc: &Mutex<Service>, mut stream: UnixStream, peer: PeerCred, ctx: &Ctx) {
    let _ = stream.set_write_timeout(Some(REQUEST_DEADLINE));
    loop {
        let mut rd = DeadlineReader::new(&stream, IDLE, REQUEST_DEADLINE);
        let payload = match read_frame(&mut rd) {
            Ok(p) => p,
            Err(FrameError::Closed) => return,
            Err(e) if is_timeout(&e) && !rd.started() => return,
            Err(e) if is_timeout(&e) => {
                ctx.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                let secs = REQUEST_DEADLINE.as_secs();
                ctx.audit.note(
                    "request-deadline",
                    peer.uid,
                    format!("{} sent a request that was not complete {secs} s after its first byte; connection closed", who(&peer)),
                );
                let r = Response::Error {
                    code: ErrorCode::BadRequest,
                    message: format!(
                        "the request was not complete within {secs} s of its first byte"
                    ),
                };
                let _ = write_frame(&mut stream, &r.encode());
                return;
            }
            Err(e) => {
                let r = Response::Error {
                    code: ErrorCode::BadRequest,
                    message: e.to_string(),
                };
                let _ = write_frame(&mut stream, &r.encode());
                return;
            }
        };
        let (mut resp, close) = match Request::decode(&payload) {
            Ok(req) => {
                let mut s = svc.lock().unwrap_or_else(|p| p.into_inner());
                let r = s.handle(peer, req);
                let close = matches!(
                    r,
                    Response::Error {
                        code: ErrorCode::NotPermitted,
                        ..
                    }
                );
                (r, close)
            }
            Err(e) => (
                Response::Error {
                    code: ErrorCode::BadRequest,
                    message: e.to_string(),
                },
                true,
            ),
        };
        if let Response::Status(s) = &mut resp {
            ctx.stats.fill(s);
        }
        if write_frame(&mut stream, &resp.encode()).is_err() || close {
            return;
        }
    }
}

/// What every connection thread shares.
struct Ctx {
    stats: Arc<ConnStats>,
    audit: Auditor,
}

/// Answers a connection refused at accept with one error frame and closes it, never
/// waiting on the peer.
fn refuse(stream: UnixStream, code: ErrorCode, message: String) {
    let _ = stream.set_nonblocking(true);
    let r = Response::Error { code, message };
    let _ = write_frame(&mut &stream, &r.encode());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Accepts connections forever on a thread of its own; returns the counters it keeps.
pub fn spawn_acceptor(svc: Arc<Mutex<Service>>, listener: UnixListener) -> Arc<ConnStats> {
    let stats = Arc::new(ConnStats::default());
    let service_uid = svc
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .config
        .service_uid;
    let (tx, rx) = sync_channel(AUDIT_QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    {
        let (svc, stats, dropped) = (svc.clone(), stats.clone(), dropped.clone());
        std::thread::spawn(move || run_auditor(svc, rx, stats, dropped));
    }
    let ctx = Arc::new(Ctx {
        stats: stats.clone(),
        audit: Auditor { tx, dropped },
    });
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(stream) = conn else {
                // EMFILE and the like: do not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            accept_one(&svc, stream, service_uid, &ctx);
        }
    });
    stats
}

fn accept_one(svc: &Arc<Mutex<Service>>, stream: UnixStream, service_uid: u32, ctx: &Arc<Ctx>) {
    let peer = match bulwark_sys::peer_cred(&stream) {
        Ok(p) => p,
        Err(e) => {
            ctx.stats.refused_strangers.fetch_add(1, Ordering::Relaxed);
            ctx.audit.note(
                "refused-connection",
                u32::MAX,
                format!("cannot read the peer's credentials ({e}); connection closed"),
            );
            return;
        }
    };
    let (admit, slot) = ctx.stats.take(peer.uid, service_uid);
    match admit {
        Admit::Serve => {}
        Admit::Stranger => {
            ctx.stats.refused_strangers.fetch_add(1, Ordering::Relaxed);
            ctx.audit.note(
                "refused-connection",
                peer.uid,
                format!("{} may not use this service (only root and the service user may); closed at accept", who(&peer)),
            );
            refuse(
                stream,
                ErrorCode::NotPermitted,
                format!("uid {} may not make requests to this service; only root and the service user may", peer.uid),
            );
            return;
        }
        Admit::UidFull | Admit::Full => {
            // A burst of honest seals waits a moment for a slot rather than failing.
            if ctx.stats.waiting.fetch_add(1, Ordering::SeqCst) < MAX_WAITING {
                let (svc, ctx2) = (svc.clone(), ctx.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("wait-{}", peer.uid))
                    .spawn(move || {
                        let end = Instant::now() + SLOT_WAIT;
                        let slot = loop {
                            match ctx2.stats.take(peer.uid, service_uid) {
                                (_, Some(slot)) => break Some(slot),
                                _ if Instant::now() >= end => break None,
                                _ => std::thread::sleep(Duration::from_millis(20)),
                            }
                        };
                        ctx2.stats.waiting.fetch_sub(1, Ordering::SeqCst);
                        match slot {
                            Some(_slot) => serve_one(&svc, stream, peer, &ctx2),
                            None => refuse_busy(stream, peer, admit, &ctx2),
                        }
                    });
                if spawned.is_err() {
                    ctx.stats.waiting.fetch_sub(1, Ordering::SeqCst);
                }
                return;
            }
            ctx.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            refuse_busy(stream, peer, admit, ctx);
            return;
        }
    }
    let (svc, ctx2) = (svc.clone(), ctx.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("conn-{}", peer.uid))
        .spawn(move || {
            let _slot = slot;
            serve_one(&svc, stream, peer, &ctx2);
        });
    if let Err(e) = spawned {
        eprintln!("bulwark-immutd: cannot start a connection thread: {e}");
    }
}

/// Answers `Busy` to a connection of a permitted uid over a limit, counted and audited.
fn refuse_busy(stream: UnixStream, peer: PeerCred, admit: Admit, ctx: &Ctx) {
    ctx.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
    let why = if admit == Admit::UidFull {
        format!("uid {} already holds {MAX_PER_UID} connections", peer.uid)
    } else {
        format!("all {MAX_CONNECTIONS} connections are in use")
    };
    ctx.audit.note(
        "connection-limit",
        peer.uid,
        format!("{}: {why}; closed", who(&peer)),
    );
    refuse(
        stream,
        ErrorCode::Busy,
        format!("{why}; close one and try again"),
    );
}

/// Runs the timer forever: every `tick` the clock is checked and expired files unlocked.
pub fn run_timer(svc: Arc<Mutex<Service>>, tick: Duration) -> Result<()> {
    loop {
        std::thread::sleep(tick);
        let mut s = svc.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = s.tick() {
            eprintln!("bulwark-immutd: timer step failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_root_and_the_service_user_are_admitted_and_neither_can_take_every_slot() {
        let svc = 990;
        for uid in [0, svc, 1, 1000, u32::MAX] {
            for of_uid in 0..=MAX_CONNECTIONS + 2 {
                for total in of_uid..=MAX_CONNECTIONS + 4 {
                    let a = admit(uid, svc, of_uid, total);
                    let permitted = uid == 0 || uid == svc;
                    let want = match (permitted, of_uid < MAX_PER_UID, total < MAX_CONNECTIONS) {
                        (false, _, _) => Admit::Stranger,
                        (true, false, _) => Admit::UidFull,
                        (true, true, false) => Admit::Full,
                        (true, true, true) => Admit::Serve,
                    };
                    assert_eq!(a, want, "uid {uid} of_uid {of_uid} total {total}");
                }
            }
        }
        // Whatever one permitted uid holds, the other still gets a slot.
        for (a, b) in [(0, svc), (svc, 0)] {
            let stats = Arc::new(ConnStats::default());
            let mut held = Vec::new();
            loop {
                match stats.take(a, svc) {
                    (Admit::Serve, Some(s)) => held.push(s),
                    (r, _) => {
                        assert_eq!(r, Admit::UidFull);
                        break;
                    }
                }
            }
            assert_eq!(held.len(), MAX_PER_UID);
            let mut other = Vec::new();
            for _ in 0..MAX_CONNECTIONS - MAX_PER_UID {
                let (r, s) = stats.take(b, svc);
                assert_eq!(r, Admit::Serve);
                other.push(s);
            }
            assert_eq!(stats.open(), MAX_CONNECTIONS);
            assert_eq!(stats.take(b, svc).0, Admit::Full);
            assert_eq!(stats.take(4242, svc).0, Admit::Stranger);
            drop(held);
            assert_eq!(stats.open(), MAX_CONNECTIONS - MAX_PER_UID);
        }
    }

    #[test]
    fn a_request_trickled_byte_by_byte_is_cut_at_its_deadline() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            // A valid length, then one byte every 50 ms: every read sees progress.
            let _ = b.write_all(&100u32.to_le_bytes());
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(50));
                if b.write_all(&[1]).is_err() {
                    break;
                }
            }
        });
        let t = Instant::now();
        let mut rd = DeadlineReader::new(&a, Duration::from_secs(5), Duration::from_millis(400));
        let e = read_frame(&mut rd).unwrap_err();
        assert!(is_timeout(&e), "{e}");
        assert!(rd.started());
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        drop(a);
        writer.join().unwrap();
    }

    #[test]
    fn an_idle_connection_times_out_without_having_started_a_request() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut rd = DeadlineReader::new(&a, Duration::from_millis(200), Duration::from_secs(5));
        let e = read_frame(&mut rd).unwrap_err();
        assert!(is_timeout(&e));
        assert!(!rd.started());
    }

    #[test]
    fn connection_audits_are_bounded_per_minute_and_summed_up() {
        let mut b = Budget::default();
        let own = (0..1000).filter(|i| b.spend(0, 1000 + i % 3)).count();
        assert_eq!(own, AUDITS_PER_MINUTE as usize);
        let s = b.take_summary().unwrap();
        assert!(
            s.starts_with(&format!("{} further", 1000 - AUDITS_PER_MINUTE)),
            "{s}"
        );
        assert!(s.contains("1000,1001,1002"), "{s}");
        assert_eq!(b.take_summary(), None);
        // A new minute has a new allowance.
        assert!(b.spend(1, 7));
    }
}
