//! `bulwark-immutd`: the root-only immutability service and its root commands.
//!
//! Exit codes: 0 ok, 1 damage found (`audit verify`), 2 operational error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use bulwark_immut_msg::ImmutClient;
use bulwark_immutd::clock::ClockState;
use bulwark_immutd::config::{Config, DEFAULT_CONFIG};
use bulwark_immutd::ledger::Ledger;
use bulwark_immutd::service::{load_clock, ClockSource, StatePaths, SystemClock};
use bulwark_immutd::{audit, server, Service};

const USAGE: &str = "usage: bulwark-immutd [--config PATH] <command>

commands:
  run            run the service (the default; must be root)
  status [--json]  show the trusted clock, alerts and every sealed file with its expiry
  time accept    credit the current wall-clock time and end a clock freeze (root at the console)
  audit verify   check the hash chain of the audit log (exit 1 when it is broken)
  check-config   validate the configuration and exit

The configuration defaults to /etc/bulwark/immutd.toml and must be owned by root.";

fn main() {
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulwark-immutd: error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn real_main() -> anyhow::Result<i32> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    if let Some(i) = args.iter().position(|a| a == "--config") {
        if i + 1 >= args.len() {
            bail!("--config needs a path\n\n{USAGE}");
        }
        config = PathBuf::from(args.remove(i + 1));
        args.remove(i);
    }
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    if matches!(words.as_slice(), ["--help"] | ["-h"] | ["help"]) {
        println!("{USAGE}");
        return Ok(0);
    }
    if bulwark_sys::effective_uid() != 0 {
        bail!("bulwark-immutd must run as root: it sets and clears the immutable attribute, which only root can (it has no network and talks only on its Unix socket)");
    }
    match words.as_slice() {
        [] | ["run"] => run(&config),
        ["status"] => status(&config, false),
        ["status", "--json"] => status(&config, true),
        ["time", "accept"] => time_accept(&config),
        ["audit", "verify"] => audit_verify(&config),
        ["check-config"] => {
            let c = Config::load(&config)?;
            println!(
                "configuration {} is valid: {} repositories, service uid {}",
                config.display(),
                c.repositories.len(),
                c.service_uid
            );
            Ok(0)
        }
        _ => bail!("unknown command {:?}\n\n{USAGE}", words.join(" ")),
    }
}

fn run(config: &Path) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    let socket = cfg.socket.clone();
    let tick = Duration::from_secs(cfg.tick_secs);
    let svc = Service::open(cfg, Box::new(SystemClock)).context("starting the service")?;
    let listener = server::bind(&socket)?;
    eprintln!("bulwark-immutd: listening on {}", socket.display());
    let svc = Arc::new(Mutex::new(svc));
    server::spawn_acceptor(svc.clone(), listener);
    server::run_timer(svc, tick)?;
    Ok(0)
}

fn fmt_time(t: i64) -> String {
    // Civil date from unix seconds (UTC), without a date crate.
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn status(config: &Path, json: bool) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    let paths = StatePaths::new(&cfg.state_dir);
    let ledger = Ledger::load(&paths.ledger)?;
    let live = ImmutClient::connect(&cfg.socket)
        .ok()
        .and_then(|mut c| c.status().ok());
    let r = SystemClock.read();
    let clock: ClockState = load_clock(&paths, ledger.entries.is_empty(), &r)?;
    let (trusted, frozen, alert) = match &live {
        Some(s) => (s.trusted_unix, s.unlocks_frozen, s.alert.clone()),
        None => (
            clock.last_trusted,
            clock.frozen(),
            clock
                .alert
                .as_ref()
                .map(|a| a.message.clone())
                .unwrap_or_default(),
        ),
    };
    let x = bulwark_immutd::expiry::expiries(&ledger.entries, |p| {
        cfg.repo(p).map(|c| c.min_period_days)
    });
    if json {
        let files: Vec<String> = ledger
            .entries
            .iter()
            .zip(&x)
            .map(|(e, x)| {
                format!(
                    "{{\"path\":{},\"job\":{},\"chain\":\"{}\",\"point\":\"{}\",\"size\":{},\"root_digest\":\"{}\",\"sealed_unix\":{},\"expiry_unix\":{},\"state\":\"{}\"}}",
                    json_str(&e.path().to_string_lossy()), json_str(&e.job), e.chain, e.point, e.size, e.root, e.sealed, x, e.state.as_str()
                )
            })
            .collect();
        println!(
            "{{\"running\":{},\"trusted_unix\":{trusted},\"wall_unix\":{},\"unlocks_frozen\":{frozen},\"alert\":{},\"files\":[{}]}}",
            live.is_some(),
            r.wall,
            json_str(&alert),
            files.join(",")
        );
    } else {
        println!(
            "service:        {}",
            if live.is_some() {
                "running"
            } else {
                "NOT RUNNING (state read from disk)"
            }
        );
        println!("trusted clock:  {} ({trusted})", fmt_time(trusted));
        println!("wall clock:     {} ({})", fmt_time(r.wall), r.wall);
        if frozen {
            println!("ALERT:          {alert}");
        } else {
            println!("unlocks:        running");
        }
        if let Some(s) = &live {
            if !s.audit_problem.is_empty() {
                println!("AUDIT LOG:      {}", s.audit_problem);
            }
            println!(
                "connections:    {} open; since start {} refused (uid not permitted), {} over a limit, {} cut at the request deadline",
                s.connections_open, s.refused_strangers, s.refused_busy, s.requests_timed_out
            );
        }
        println!("files:          {}", ledger.entries.len());
        for (e, x) in ledger.entries.iter().zip(&x) {
            println!(
                "  {:<8} until {}  {}  root {}",
                e.state.as_str(),
                fmt_time(*x),
                e.path().display(),
                &e.root.to_hex()[..16]
            );
        }
    }
    Ok(0)
}

fn time_accept(config: &Path) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    if let Ok(mut c) = ImmutClient::connect(&cfg.socket) {
        let t = c
            .time_accept()
            .context("asking the running service to accept the time")?;
        println!(
            "time accepted: the trusted clock is now {} ({t}); unlocks resume",
            fmt_time(t)
        );
        return Ok(0);
    }
    // Not running: rewrite the checkpoint under the state lock, and say so in the audit log.
    let paths = StatePaths::new(&cfg.state_dir);
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&paths.lock)?;
    if !bulwark_sys::try_lock_exclusive(&lock)? {
        bail!(
            "the service holds the state lock but does not answer on {}; try again",
            cfg.socket.display()
        );
    }
    let r = SystemClock.read();
    let s = ClockState::accept(&r);
    bulwark_immutd::atomic::write_atomic(&paths.clock, s.encode().as_bytes(), 0o600)?;
    let mut log = audit::AuditLog::open(&cfg.state_dir)?;
    log.append(
        r.wall,
        r.wall,
        "time-accept",
        "trusted clock set to the wall clock by root while the service was stopped",
    )?;
    println!(
        "time accepted: the trusted clock is now {} ({})",
        fmt_time(r.wall),
        r.wall
    );
    Ok(0)
}

fn audit_verify(config: &Path) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    let log = cfg.state_dir.join("audit.log");
    match audit::verify(&log, Some(&cfg.state_dir.join("audit.head"))) {
        Ok(v) => {
            println!(
                "audit log {} is intact: {} entries",
                log.display(),
                v.entries
            );
            Ok(0)
        }
        Err(e) => {
            println!("audit log {} is DAMAGED: {e}", log.display());
            Ok(1)
        }
    }
}
