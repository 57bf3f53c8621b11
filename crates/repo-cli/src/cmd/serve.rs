//! `bulwark-repo serve`: the transport service on TCP 6162.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bulwark_server::{ServeOptions, Server};

/// Arguments of `bulwark-repo serve`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder (owned by the service user running this command).
    dir: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:6162")]
    listen: SocketAddr,
    /// Connections served at once; more are closed at once.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Seconds within which a frame (or the TLS handshake) must arrive completely once started.
    #[arg(long, default_value_t = 30)]
    frame_timeout: u64,
    /// Seconds a connection may stay silent between frames.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Enrollment attempts allowed per source address per minute.
    #[arg(long, default_value_t = 10)]
    enroll_per_minute: usize,
    /// Apply every job's retention policy this often, in minutes (0: never; then run
    /// `bulwark-repo retention` from a timer instead).
    #[arg(long, default_value_t = 60)]
    retention_every: u64,
}

/// Runs `bulwark-repo serve` until killed.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let opts = ServeOptions {
        listen: a.listen,
        max_connections: a.max_connections.max(1),
        frame_timeout: Duration::from_secs(a.frame_timeout.max(1)),
        idle_timeout: Duration::from_secs(a.idle_timeout.max(1)),
        enroll_per_minute: a.enroll_per_minute,
        ..ServeOptions::default()
    };
    let server = Server::bind(&a.dir, opts)
        .with_context(|| format!("starting the repository service for {}", a.dir.display()))?;
    let addr = server.local_addr()?;
    let fp = server.fingerprint()?;
    // SIGTERM (systemctl stop / restart) or Ctrl-C: running backups and restores finish
    // first (up to bulwark_server::DRAIN); a second signal stops at once. Caught before the
    // service says it listens, so no stop request finds it unprepared.
    bulwark_sys::catch_interrupts();
    // A closed stdout (a supervisor that stopped reading) must not stop the service.
    let mut out = std::io::stdout();
    let line = if json {
        serde_json::json!({"listening": addr.to_string(), "fingerprint": fp.to_string()})
            .to_string()
    } else {
        format!("listening on {addr}\nrepository CA fingerprint: {fp}")
    };
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    tracing::info!(%addr, fingerprint = %fp, "repository service started");
    if a.retention_every > 0 {
        let dir = a.dir.clone();
        let every = Duration::from_secs(a.retention_every * 60);
        std::thread::spawn(move || loop {
            apply_retention(&dir);
            std::thread::sleep(every);
        });
    }
    server.run()?;
    Ok(0)
}

/// One pass of retention over every job; failures are logged and retried at the next pass.
fn apply_retention(dir: &std::path::Path) {
    let repo = match bulwark_repository::Repository::open(dir) {
        Ok(r) => r,
        Err(e) => {
            return tracing::warn!(error = %bulwark_repository::error_chain(&e), "retention: cannot open the repository")
        }
    };
    let now = bulwark_time::UnixTime::now().secs();
    for job in repo.jobs().unwrap_or_default() {
        match repo.apply_retention(&job, now, false) {
            Ok(r) if !r.removed.is_empty() || !r.refused.is_empty() => {
                tracing::info!(%job, removed = r.removed.len(), refused = r.refused.len(), "retention applied")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%job, error = %bulwark_repository::error_chain(&e), "retention failed")
            }
        }
    }
}
