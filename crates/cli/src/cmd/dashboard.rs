//! `bulwark dashboard --repo HOST:6162 --listen 127.0.0.1:8080`: the report page of the jobs
//! this client may see, live, served on the client or admin machine (never on the hardened
//! host, which keeps its single port). Read-only: it lists jobs, restore points and their
//! ledger entries (`ListLocks`) through the protocol, and has the server verify them when
//! asked to; nothing it serves can change anything. See docs/report.md.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_protocol::{Msg, PointSummary};
use bulwark_remote::{Conn, RemoteAddr};
use bulwark_report as rep;

use crate::output::{Output, EXIT_OK};

/// Longest request URL accepted (the page has two paths).
const MAX_URL: usize = 256;
/// Most restore points accepted for one job (a bound on a misbehaving server).
const MAX_POINTS: usize = 1 << 20;
/// Most jobs shown.
const MAX_JOBS: usize = 10_000;
/// Nothing stops a page load from reaching the server more often than this.
const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(5);

/// The page's Content-Security-Policy: inline style and script only, nothing to load, no
/// form to send, no framing.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                   img-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// Arguments of `bulwark dashboard`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository service, HOST:PORT (or bulwark://HOST:PORT), this client is enrolled with.
    #[arg(long)]
    repo: String,
    /// Address to serve the page on. Loopback by default; any other address needs
    /// --allow-remote-viewers.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve on a non-loopback address. Anyone who can reach it sees this client's jobs and
    /// restore points (the page has no login): use it on a trusted management network only.
    #[arg(long)]
    allow_remote_viewers: bool,
    /// Reload the page in the browser every so many seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(5..=86_400))]
    refresh: u32,
    /// Have the server re-read every stored block of this client's jobs every so many hours
    /// (0: never), so the page shows verify results and their age.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=8_760))]
    verify_every_hours: u32,
}

/// The figures last fetched from the server, and when.
struct Cache {
    at: Option<Instant>,
    page: String,
}

/// What the last verify by the server found, per job.
#[derive(Clone, Default)]
struct VerifyState {
    at_unix: Option<i64>,
    /// Damaged points per job (point ids, `None` when unknown); empty when all is well.
    damaged: Vec<(String, Option<String>)>,
    error: Option<String>,
}

/// Runs `bulwark dashboard` until interrupted.
pub fn run(a: Args, config_dir: &Path, out: &Output) -> anyhow::Result<i32> {
    let addr = RemoteAddr::parse(&a.repo)?;
    if !a.listen.ip().is_loopback() && !a.allow_remote_viewers {
        anyhow::bail!(
            "--listen {} is not a loopback address: the page has no login, so anyone who can reach that address would see this client's jobs and restore points; \
             serve on 127.0.0.1 (the default) and open it through an ssh tunnel, or add --allow-remote-viewers on a trusted management network",
            a.listen
        );
    }
    // Fail early when this client is not enrolled with that repository.
    let probe = fetch(config_dir, &addr, a.refresh, &VerifyState::default())
        .with_context(|| format!("reading the jobs of this client from {addr}"))?;
    let server = tiny_http::Server::http(a.listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {}: {e}; choose a free port with --listen",
            a.listen
        )
    })?;
    let bound = server
        .server_addr()
        .to_ip()
        .context("the dashboard listens on a TCP address")?;
    if out.json {
        outln!(
            "{}",
            serde_json::json!({"listening": format!("http://{bound}/"), "repository": addr.to_string()})
        );
    } else {
        outln!("dashboard of {addr} on http://{bound}/ (read-only; Ctrl-C stops it)");
        if !bound.ip().is_loopback() {
            outln!(
                "WARNING: serving on {bound}, reachable from other machines: the page has no login"
            );
        }
    }
    let verify = Arc::new(Mutex::new(VerifyState::default()));
    if a.verify_every_hours > 0 {
        let (v, dir, addr) = (verify.clone(), config_dir.to_path_buf(), addr.clone());
        let every = Duration::from_secs(u64::from(a.verify_every_hours) * 3600);
        std::thread::spawn(move || verify_loop(&dir, &addr, &v, every));
    }
    let mut cache = Cache {
        at: Some(Instant::now()),
        page: probe,
    };
    for req in server.incoming_requests() {
        handle(req, &a, config_dir, &addr, bound, &verify, &mut cache);
    }
    Ok(EXIT_OK)
}

fn verify_loop(dir: &Path, addr: &RemoteAddr, state: &Mutex<VerifyState>, every: Duration) {
    loop {
        let now = bulwark_time::UnixTime::now().secs();
        let next = match bulwark_remote::verify_remote(dir, addr, None) {
            Ok(r) => VerifyState {
                at_unix: Some(now),
                damaged: r
                    .damaged
                    .iter()
                    .map(|d| (d.job.clone(), d.point.map(|p| p.to_hex())))
                    .collect(),
                error: None,
            },
            Err(e) => {
                let mut s = state.lock().unwrap().clone();
                s.error = Some(format!("{e:#}"));
                s
            }
        };
        *state.lock().unwrap() = next;
        std::thread::sleep(every);
    }
}

/// The Host header names this dashboard (not a name an attacker's page re-bound to our
/// address, DNS rebinding): on loopback only loopback names are accepted.
fn host_ok(host: Option<&str>, bound: SocketAddr) -> bool {
    let Some(host) = host else {
        return false;
    };
    let port = bound.port();
    if !bound.ip().is_loopback() {
        return true;
    }
    [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("{bound}"),
    ]
    .iter()
    .any(|h| h.eq_ignore_ascii_case(host))
}

fn handle(
    req: tiny_http::Request,
    a: &Args,
    config_dir: &Path,
    addr: &RemoteAddr,
    bound: SocketAddr,
    verify: &Mutex<VerifyState>,
    cache: &mut Cache,
) {
    let host = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| h.value.as_str().to_string());
    let status = |code: u16, text: &str| {
        tiny_http::Response::from_string(format!("{text}\n"))
            .with_status_code(code)
            .with_header(header("Content-Type", "text/plain; charset=utf-8"))
    };
    if req.url().len() > MAX_URL {
        let _ = req.respond(status(414, "URL too long"));
        return;
    }
    if !host_ok(host.as_deref(), bound) {
        let _ = req.respond(status(
            421,
            "this dashboard answers to its own address only",
        ));
        return;
    }
    let get = matches!(
        req.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    );
    if !get {
        let _ = req
            .respond(status(405, "read-only: GET only").with_header(header("Allow", "GET, HEAD")));
        return;
    }
    if req.body_length().unwrap_or(0) > 0 {
        let _ = req.respond(status(413, "a GET has no body"));
        return;
    }
    let path = req.url().split('?').next().unwrap_or("");
    match path {
        "/" | "/index.html" => {
            let fresh = cache.at.is_some_and(|t| t.elapsed() < MIN_FETCH_INTERVAL);
            if !fresh {
                let v = verify.lock().unwrap().clone();
                cache.page = match fetch(config_dir, addr, a.refresh, &v) {
                    Ok(p) => p,
                    Err(e) => unreachable_page(addr, a.refresh, &format!("{e:#}")),
                };
                cache.at = Some(Instant::now());
            }
            let resp = tiny_http::Response::from_string(cache.page.clone())
                .with_header(header("Content-Type", "text/html; charset=utf-8"))
                .with_header(header("Cache-Control", "no-store"))
                .with_header(header("Content-Security-Policy", CSP))
                .with_header(header("X-Content-Type-Options", "nosniff"))
                .with_header(header("Referrer-Policy", "no-referrer"))
                .with_header(header("X-Frame-Options", "DENY"));
            let _ = req.respond(resp);
        }
        "/favicon.ico" => {
            let _ = req.respond(tiny_http::Response::empty(204));
        }
        _ => {
            let _ = req.respond(status(404, "not found: the dashboard is at /"));
        }
    }
}

fn header(k: &str, v: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("valid header")
}

/// The page when the server cannot be reached: the error, and that the page retries.
fn unreachable_page(addr: &RemoteAddr, refresh: u32, why: &str) -> String {
    let r = rep::Report {
        title: addr.to_string(),
        source: "bulwark dashboard".into(),
        generated_unix: bulwark_time::UnixTime::now().secs(),
        refresh_secs: Some(refresh),
        alerts: vec![rep::Alert {
            level: rep::Level::Fail,
            kind: "connection".into(),
            text: format!(
                "cannot read this client's jobs from {addr}: {why}; the page retries every {refresh} s"
            ),
        }],
        ..rep::Report::default()
    };
    rep::render(&r)
}

/// Reads this client's jobs and restore points from the server and renders the page.
fn fetch(
    config_dir: &Path,
    addr: &RemoteAddr,
    refresh: u32,
    verify: &VerifyState,
) -> anyhow::Result<String> {
    let mut c = Conn::session(config_dir, addr)?;
    c.send(&Msg::ListJobs)?;
    let mut jobs = match c.recv()? {
        Msg::Jobs { jobs } => jobs,
        m => anyhow::bail!("{}", m.unexpected("Jobs")),
    };
    jobs.truncate(MAX_JOBS);
    let mut report = rep::Report {
        title: addr.to_string(),
        source: format!("bulwark dashboard, client {} of {addr}", c.client),
        generated_unix: bulwark_time::UnixTime::now().secs(),
        refresh_secs: Some(refresh),
        ..rep::Report::default()
    };
    let skew = c.server_unix - report.generated_unix;
    if skew.abs() > 300 {
        report.alerts.push(rep::Alert {
            level: rep::Level::Warn,
            kind: "clock".into(),
            text: format!(
                "the repository's clock differs from this machine's by {skew} s: check NTP on both"
            ),
        });
    }
    let mut listed = Vec::new();
    for job in jobs {
        let points = bulwark_remote::points_on(&mut c, &job)
            .with_context(|| format!("listing the restore points of job {job}"))?;
        listed.push((job, points));
    }
    // The ledger's view of each job (ListLocks, 0x80): seal times, expiries, the clock.
    let mut guarded = None;
    for (job, points) in listed {
        let mut j = job_of(job, points, verify);
        let (g, clock, locks) = locks_of(&mut c, &j.name)?;
        guarded = Some(g);
        if report.clock.is_none() {
            report.clock = clock;
        }
        for p in j.chains.iter_mut().flat_map(|c| c.points.iter_mut()) {
            p.lock = locks
                .iter()
                .find(|l| l.point.to_hex() == p.id)
                .map(|l| rep::Lock {
                    sealed_unix: l.sealed_unix,
                    expiry_unix: l.expiry_unix,
                    state: l.state_name().to_string(),
                });
        }
        report.jobs.push(j);
    }
    c.close();
    match (guarded, &report.clock) {
        (Some(false), _) => report.alerts.push(rep::Alert {
            level: rep::Level::Fail,
            kind: "immutability".into(),
            text: "no immutability service guards this repository: restore points are NOT immutable".into(),
        }),
        (Some(true), None) => report.alerts.push(rep::Alert {
            level: rep::Level::Fail,
            kind: "service".into(),
            text: "the repository's immutability service does not answer: new restore points are not sealed; look at bulwark-immutd on the repository host".into(),
        }),
        (_, Some(clock)) if clock.unlocks_frozen => report.alerts.push(rep::Alert {
            level: rep::Level::Fail,
            kind: "clock".into(),
            text: format!("unlocks are FROZEN by the immutability service's clock alert: {}", clock.alert),
        }),
        (_, Some(clock)) if !clock.alert.is_empty() => report.alerts.push(rep::Alert {
            level: rep::Level::Fail,
            kind: "clock".into(),
            text: format!("the immutability service's clock: {}", clock.alert),
        }),
        _ => {}
    }
    if let Some(e) = &verify.error {
        report.alerts.push(rep::Alert {
            level: rep::Level::Warn,
            kind: "verify".into(),
            text: format!("the last verify request failed: {e}"),
        });
    }
    for (job, point) in &verify.damaged {
        report.alerts.push(rep::Alert {
            level: rep::Level::Fail,
            kind: "damage".into(),
            text: format!(
                "job {job}, restore point {}: damaged; the next backup is an active full",
                point.as_deref().unwrap_or("(unknown)")
            ),
        });
    }
    report.notes.push(
        "This page shows what the repository service tells this client: its jobs, chains, restore points, the immutability service's ledger entries and clock for them, and (with --verify-every-hours) verify results. \
         Space and the host audit are in the repository host's report (bulwark-repo report --html)."
            .into(),
    );
    Ok(rep::render(&report))
}

/// The ledger entries of one job and the immutability service's clock, as
/// (guarded, clock, entries).
fn locks_of(
    c: &mut Conn,
    job: &str,
) -> anyhow::Result<(bool, Option<rep::Clock>, Vec<bulwark_protocol::LockEntry>)> {
    use bulwark_protocol::LockMsg;
    c.send(&Msg::Locks(LockMsg::List {
        job: job.to_string(),
    }))?;
    let mut out = Vec::new();
    loop {
        match c.recv()? {
            Msg::Locks(LockMsg::Page(p)) => {
                out.extend(p.entries);
                anyhow::ensure!(
                    out.len() <= MAX_POINTS,
                    "the server sent more than {MAX_POINTS} ledger entries for job {job}"
                );
                if p.last {
                    let clock = p.clock.map(|k| rep::Clock {
                        trusted_unix: k.trusted_unix,
                        wall_unix: k.wall_unix,
                        unlocks_frozen: k.unlocks_frozen,
                        alert: k.alert,
                    });
                    return Ok((p.guarded, clock, out));
                }
            }
            m => anyhow::bail!(
                "{} (a repository service older than this client answers no ListLocks: update bulwark-repo on the host)",
                m.unexpected("Locks")
            ),
        }
    }
}

fn job_of(name: String, points: Vec<PointSummary>, verify: &VerifyState) -> rep::Job {
    let bad: Vec<&Option<String>> = verify
        .damaged
        .iter()
        .filter(|(j, _)| *j == name)
        .map(|(_, p)| p)
        .collect();
    let mut chains: Vec<rep::Chain> = Vec::new();
    for p in points {
        let id = p.point.to_hex();
        let point = rep::Point {
            damaged: bad.iter().any(|b| b.as_deref() == Some(id.as_str())),
            id,
            kind: p.kind.as_str().replace('-', " "),
            class: match p.retention {
                bulwark_format::RetentionClass::Regular => rep::Gfs::Regular,
                bulwark_format::RetentionClass::Weekly => rep::Gfs::Weekly,
                bulwark_format::RetentionClass::Monthly => rep::Gfs::Monthly,
                bulwark_format::RetentionClass::Yearly => rep::Gfs::Yearly,
            },
            created_unix: p.created_unix,
            disk_bytes: p.disk_size,
            file_bytes: p.file_bytes,
            new_bytes: p.new_bytes,
            lock: None,
            verified_unix: None,
        };
        let chain = p.chain.to_hex();
        match chains.iter_mut().find(|c| c.id == chain) {
            Some(c) => c.points.push(point),
            None => chains.push(rep::Chain {
                id: chain,
                points: vec![point],
            }),
        }
    }
    let verify = match verify.at_unix {
        None => rep::Verify::Unknown,
        Some(at) if bad.is_empty() => rep::Verify::Clean { at_unix: at },
        Some(at) => rep::Verify::Damaged {
            at_unix: Some(at),
            points: bad.len() as u64,
        },
    };
    rep::Job {
        name,
        chains,
        verify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_loopback_only_loopback_host_names_are_answered() {
        let b: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(host_ok(Some("127.0.0.1:8080"), b));
        assert!(host_ok(Some("LOCALHOST:8080"), b));
        assert!(!host_ok(Some("evil.example:8080"), b));
        assert!(!host_ok(Some("127.0.0.1:9999"), b));
        assert!(!host_ok(None, b));
        let any: SocketAddr = "192.0.2.1:8080".parse().unwrap();
        assert!(host_ok(Some("dash.example:8080"), any));
    }
}
