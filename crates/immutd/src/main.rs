//! `bulwark-immutd`: the root-only immutability service and its root commands.
//!
//! Exit codes: 0 ok, 1 damage found (`audit verify`), 2 operational error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use bulwark_immut_msg::{ImmutClient, TimePreview};
use bulwark_immutd::clock::{human, ClockState};
use bulwark_immutd::config::{Config, DEFAULT_CONFIG};
use bulwark_immutd::ledger::Ledger;
use bulwark_immutd::service::{load_clock, ClockSource, StatePaths, SystemClock};
use bulwark_immutd::{audit, server, Service};

const USAGE: &str = "usage: bulwark-immutd [--config PATH] <command>

commands:
  run            run the service (the default; must be root)
  status [--json]  show the trusted clock, alerts and every sealed file with its expiry
  time preview   show what `time accept` would unlock now, changing nothing
  time accept [--yes]
                 credit the current wall-clock time and end a clock alert (root at the
                 console): shows the step and what would unlock early, then asks to confirm;
                 --yes skips the question (scripts)
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
        ["time", "accept"] => time_accept(&config, false),
        ["time", "accept", "--yes"] => time_accept(&config, true),
        ["time", "preview"] => time_preview(&config).map(|_| 0),
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
    bulwark_time::UnixTime(t).zulu()
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
    let (trusted, wall, frozen, alert) = match &live {
        Some(s) => (
            s.trusted_unix,
            s.wall_unix,
            s.unlocks_frozen,
            s.alert.clone(),
        ),
        None => (
            clock.last_trusted,
            r.wall,
            clock.frozen(),
            clock.alert_message(),
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
            "{{\"running\":{},\"trusted_unix\":{trusted},\"wall_unix\":{wall},\"unlocks_frozen\":{frozen},\"alert\":{},\"files\":[{}]}}",
            live.is_some(),
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
        println!(
            "wall clock:     {} ({wall}){}",
            fmt_time(wall),
            if live.is_some() {
                " as the service reads it"
            } else {
                ""
            }
        );
        if frozen {
            println!("ALERT:          unlocks are FROZEN: {alert}");
        } else if !alert.is_empty() {
            println!("ALERT:          {alert}");
            println!("unlocks:        running");
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

/// What accepting would do: from the running service, or from the state on disk.
fn preview(cfg: &Config) -> anyhow::Result<(TimePreview, bool)> {
    if let Ok(mut c) = ImmutClient::connect(&cfg.socket) {
        let p = c
            .time_preview()
            .context("asking the running service what accepting would unlock")?;
        return Ok((p, true));
    }
    let paths = StatePaths::new(&cfg.state_dir);
    let ledger = Ledger::load(&paths.ledger)?;
    let r = SystemClock.read();
    let clock = load_clock(&paths, ledger.entries.is_empty(), &r)?;
    let (clock, _) = clock.observe(&r, cfg.tolerance(), true);
    let x = bulwark_immutd::expiry::expiries(&ledger.entries, |p| {
        cfg.repo(p).map(|c| c.min_period_days)
    });
    let p = bulwark_immutd::service::time_preview(&clock, &r, &ledger.entries, &x);
    Ok((p, false))
}

fn print_preview(p: &TimePreview) {
    println!(
        "trusted clock:  {} ({})",
        fmt_time(p.trusted_unix),
        p.trusted_unix
    );
    println!(
        "wall clock:     {} ({})",
        fmt_time(p.wall_unix),
        p.wall_unix
    );
    let step = p.wall_unix - p.trusted_unix;
    if step >= 0 {
        println!(
            "step:           the wall clock is {} ahead of the trusted clock",
            human(step)
        );
    } else {
        println!(
            "step:           the wall clock is {} BEHIND the trusted clock; accepting keeps the trusted time (it never goes backwards)",
            human(-step)
        );
    }
    if !p.alert.is_empty() {
        println!("alert:          {}", p.alert);
    }
    if p.files_unlocking == 0 {
        println!("accepting unlocks nothing early");
    } else {
        println!(
            "accepting unlocks {} files ({} bytes) EARLIER than the trusted clock would; the earliest was protected until {}",
            p.files_unlocking,
            p.bytes_unlocking,
            fmt_time(p.earliest_expiry_unix)
        );
    }
}

fn time_preview(config: &Path) -> anyhow::Result<TimePreview> {
    let cfg = Config::load(config)?;
    let (p, _) = preview(&cfg)?;
    print_preview(&p);
    Ok(p)
}

fn confirm() -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!("`time accept` asks for confirmation at a terminal; after reading the preview (`bulwark-immutd time preview`), run `bulwark-immutd time accept --yes` from a script");
    }
    print!(
        "Accept the wall clock as the trusted time? Fix the clock first if it is wrong. Type yes: "
    );
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

fn time_accept(config: &Path, yes: bool) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    let (p, running) = preview(&cfg)?;
    print_preview(&p);
    if !yes && !confirm()? {
        println!("nothing changed");
        return Ok(2);
    }
    if running {
        let mut c = ImmutClient::connect(&cfg.socket)?;
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
    let ledger = Ledger::load(&paths.ledger)?;
    let r = SystemClock.read();
    let clock = load_clock(&paths, ledger.entries.is_empty(), &r)?;
    let (clock, _) = clock.observe(&r, cfg.tolerance(), true);
    let s = clock.accept_now(&r);
    bulwark_immutd::atomic::write_atomic(&paths.clock, s.encode().as_bytes(), 0o600)?;
    let mut log = audit::AuditLog::open(&cfg.state_dir)?;
    log.append(
        r.wall,
        s.last_trusted,
        "time-accept",
        &format!(
            "trusted clock moved from {} to {} by root while the service was stopped (wall {}); {} files ({} bytes) unlock early, earliest expiry {}",
            p.trusted_unix, s.last_trusted, r.wall, p.files_unlocking, p.bytes_unlocking, p.earliest_expiry_unix
        ),
    )?;
    println!(
        "time accepted: the trusted clock is now {} ({})",
        fmt_time(s.last_trusted),
        s.last_trusted
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
