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
    server.run()?;
    Ok(0)
}
