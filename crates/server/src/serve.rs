//! The listener: bounded connections, one thread each, a span per connection carrying the
//! client's identity, and a logged reason for every close.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulwark_protocol::{Fingerprint, ALPN_ENROLL};
use bulwark_repository::Repository;
use rustls::server::Acceptor;
use rustls::StreamOwned;

use crate::conn::{Session, TimedSock};
use crate::pki::NetPaths;
use crate::tls::{configs, Configs};
use crate::{Registry, Result, ServerError};

/// Limits and timeouts of the service.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Once a frame (or the TLS handshake) starts, all of it must arrive within this.
    pub frame_timeout: Duration,
    /// Longest wait for the next frame to start.
    pub idle_timeout: Duration,
    /// Longest a single write may block on a client that does not read.
    pub write_timeout: Duration,
    /// Enrollment attempts per source address per minute.
    pub enroll_per_minute: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([0, 0, 0, 0], bulwark_protocol::DEFAULT_PORT)),
            max_connections: 64,
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(120),
            enroll_per_minute: 10,
        }
    }
}

/// Sliding-window counter of enrollment attempts per source address.
#[derive(Default)]
pub(crate) struct RateLimiter {
    seen: HashMap<IpAddr, Vec<Instant>>,
}

impl RateLimiter {
    /// Records an attempt; false when `ip` already made `max` in the last minute.
    pub(crate) fn allow(&mut self, ip: IpAddr, max: usize, now: Instant) -> bool {
        let window = Duration::from_secs(60);
        if self.seen.len() > 10_000 {
            self.seen
                .retain(|_, v| v.last().is_some_and(|t| now.duration_since(*t) < window));
        }
        let v = self.seen.entry(ip).or_default();
        v.retain(|t| now.duration_since(*t) < window);
        if v.len() >= max {
            return false;
        }
        v.push(now);
        true
    }
}

/// What every connection thread shares.
pub(crate) struct State {
    pub repo: Repository,
    pub registry: Registry,
    pub paths: NetPaths,
    pub opts: ServeOptions,
    pub tls: Configs,
    pub limiter: Mutex<RateLimiter>,
    /// Bytes of running backups, per client (the per-client limits).
    pub inflight: crate::limits::InFlight,
    active: AtomicUsize,
}

/// A bound, not yet running, service.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

impl Server {
    /// Checks the process is not root, opens the repository, loads its certificates and binds
    /// the listening socket.
    pub fn bind(repo: &Path, opts: ServeOptions) -> Result<Server> {
        if bulwark_sys::effective_uid() == 0 {
            return Err(ServerError::RunningAsRoot);
        }
        let repository = Repository::open(repo)?;
        repository.check_guard()?;
        crate::pki::ca_fingerprint(repo)?;
        let tls = configs(repo)?;
        let listener = TcpListener::bind(opts.listen).map_err(ServerError::Net)?;
        let registry = Registry::new(repo);
        release_unused_claims(&repository, &registry)?;
        // Partials of backups cut by a killed service or client (no session runs yet; a
        // local backup in progress holds its job's lock and keeps its file).
        let removed = repository.remove_interrupted_partials()?;
        if !removed.is_empty() {
            tracing::info!(
                files = removed.len(),
                "removed partial files of interrupted backups"
            );
        }
        Ok(Server {
            listener,
            state: Arc::new(State {
                repo: repository,
                registry: Registry::new(repo),
                paths: NetPaths::new(repo),
                opts,
                tls,
                limiter: Mutex::new(RateLimiter::default()),
                inflight: Default::default(),
                active: AtomicUsize::new(0),
            }),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(ServerError::Net)
    }

    /// The CA fingerprint clients pin.
    pub fn fingerprint(&self) -> Result<Fingerprint> {
        crate::pki::ca_fingerprint(self.state.repo.root())
    }

    /// Serves until the process ends, or — where the program called
    /// `bulwark_sys::catch_interrupts` (`bulwark-repo serve`) — until SIGTERM or SIGINT:
    /// then it accepts nothing more and lets running sessions finish ([`DRAIN`]), so that a
    /// `systemctl restart` does not cut the backups in progress.
    pub fn run(self) -> Result<()> {
        let max = self.state.opts.max_connections;
        // Polled, so that a stop signal is seen between connections.
        self.listener
            .set_nonblocking(true)
            .map_err(ServerError::Net)?;
        loop {
            if bulwark_sys::interrupted() {
                return self.drain();
            }
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(ACCEPT_POLL);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if let Err(e) = stream.set_nonblocking(false) {
                tracing::warn!("connection closed: cannot make its socket blocking: {e}");
                continue;
            }
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into());
            if self.state.active.fetch_add(1, Ordering::SeqCst) >= max {
                self.state.active.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(%peer, "connection closed: {max} connections already open (--max-connections)");
                continue;
            }
            let state = self.state.clone();
            let spawned = std::thread::Builder::new()
                .name("bulwark-conn".into())
                .spawn(move || {
                    connection(stream, &peer, &state);
                    state.active.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                self.state.active.fetch_sub(1, Ordering::SeqCst);
                tracing::error!("cannot start a connection thread: {e}");
            }
        }
    }

    /// After a stop signal: closes the listener and waits up to [`DRAIN`] for the running
    /// sessions. What is still running then ends with the process; a backup cut so keeps
    /// nothing (its temporary file is removed at the next start).
    fn drain(self) -> Result<()> {
        drop(self.listener);
        let running = self.state.active.load(Ordering::SeqCst);
        tracing::info!(
            running,
            "stopping: no new connections; waiting up to {} s for the running ones (a second signal stops at once)",
            DRAIN.as_secs()
        );
        let deadline = Instant::now() + DRAIN;
        while self.state.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        match self.state.active.load(Ordering::SeqCst) {
            0 => tracing::info!("stopped: every session ended"),
            n => tracing::warn!(
                "stopped with {n} sessions still open: backups among them keep nothing"
            ),
        }
        Ok(())
    }
}

/// How long a stopping service waits for running sessions (systemd's default stop timeout
/// is 90 s).
pub const DRAIN: Duration = Duration::from_secs(60);
/// How often the listener looks for new connections while none is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Gives back the job names of backups that a stopped service left without a restore point
/// (no connection runs yet, so none is in use).
fn release_unused_claims(repo: &Repository, registry: &Registry) -> Result<()> {
    for (job, client, _) in registry.claims()? {
        if registry.release_unused(repo, &job, &client)? {
            tracing::info!(%job, %client, "released a job name no restore point uses");
        }
    }
    Ok(())
}

/// Binds and serves (see [`Server::bind`]).
pub fn serve(repo: &Path, opts: ServeOptions) -> Result<()> {
    Server::bind(repo, opts)?.run()
}

fn connection(stream: TcpStream, peer: &str, state: &State) {
    let span = tracing::info_span!("conn", %peer, client = tracing::field::Empty);
    let _enter = span.enter();
    tracing::debug!("connection opened");
    let ip = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let reason = match run_connection(stream, ip, state, &span) {
        Ok(r) => r,
        Err(e) => format!("error: {}", bulwark_repository::error_chain(&e)),
    };
    tracing::info!(%reason, "connection closed");
}

/// Runs the handshake and the session; returns why the connection ended.
fn run_connection(
    stream: TcpStream,
    ip: IpAddr,
    state: &State,
    span: &tracing::Span,
) -> Result<String> {
    let o = &state.opts;
    let mut sock =
        TimedSock::new(stream, o.frame_timeout, o.write_timeout).map_err(ServerError::Net)?;
    let mut acceptor = Acceptor::default();
    let accepted = loop {
        match acceptor.read_tls(&mut sock) {
            Ok(0) => return Ok("closed by the peer before the TLS handshake".into()),
            Ok(_) => {}
            Err(e) => return Ok(format!("TLS handshake not completed: {e}")),
        }
        match acceptor.accept() {
            Ok(Some(a)) => break a,
            Ok(None) => {}
            Err((e, mut alert)) => {
                let _ = alert.write_all(&mut sock);
                return Ok(format!("not a TLS 1.3 client hello: {e}"));
            }
        }
    };
    let enroll = accepted
        .client_hello()
        .alpn()
        .is_some_and(|mut a| a.any(|p| p == ALPN_ENROLL));
    let cfg = if enroll {
        state.tls.enroll.clone()
    } else {
        state.tls.session.clone()
    };
    let mut conn = match accepted.into_connection(cfg) {
        Ok(c) => c,
        Err((e, mut alert)) => {
            let _ = alert.write_all(&mut sock);
            return Ok(format!("TLS handshake refused: {e}"));
        }
    };
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            return Ok(format!("TLS handshake failed: {e}"));
        }
    }
    let mut session = Session::new(StreamOwned::new(conn, sock), o.idle_timeout);
    let outcome = if enroll {
        crate::handlers::enrollment(&mut session, ip, state)
    } else {
        let Some(cert) = session.tls.conn.peer_certificates().and_then(|c| c.first()) else {
            return Ok("no client certificate".into());
        };
        let fp = Fingerprint::of(cert);
        let Some(rec) = state.registry.lookup(&fp)? else {
            return Ok("client certificate unknown".into());
        };
        span.record("client", rec.name.as_str());
        tracing::info!(fingerprint = %fp, "client authenticated");
        crate::handlers::session(&mut session, &rec.name, state)
    };
    let reason = match outcome {
        Ok(r) => r,
        Err(f) => {
            let _ = session.send(&bulwark_protocol::Msg::Error {
                code: f.code,
                message: f.message.clone(),
            });
            session.tls.conn.send_close_notify();
            let _ = session.tls.conn.complete_io(&mut session.tls.sock);
            session.tls.sock.linger();
            return Ok(format!("refused ({}): {}", f.code, f.log));
        }
    };
    session.tls.conn.send_close_notify();
    let _ = session.tls.conn.complete_io(&mut session.tls.sock);
    Ok(reason)
}
