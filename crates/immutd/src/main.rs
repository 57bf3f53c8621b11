//! `bulwark-immutd`: the root-only immutability service and its root commands.
//!
//! Exit codes: 0 ok, 1 damage found (`audit verify`) or alerts (`status`), 2 operational
//! error, 3 refused (`approve apply`). Standard output follows the rule of every Bulwark
//! program (`bulwark_stdout`): a closed pipe (`bulwark-immutd status | head -1`) is cut off
//! quietly and the code stands; any other write error is said once and the code is 2.

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
use bulwark_stdout::{out, outln};

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
  approve release TARGET... --out STATEMENT [--valid-for SECS]
                 write the statement that releases these sealed files before their expiry
                 (TARGET: sealed path, point id, or chain:<chain id>)
  approve time-accept --out STATEMENT [--valid-for SECS]
                 the statement for a time accept that unlocks files early
  approve config --out STATEMENT [--valid-for SECS]
                 the statement for the weakening edits of the configuration file (and of
                 repositories' settings) that the service refused
  approve apply STATEMENT --sig A.sig --sig B.sig ...
                 perform the statement's action with the approvers' signatures
                 (approvers sign with: ssh-keygen -Y sign -f KEY -n bulwark-approval STATEMENT)
  alerts ack     clear the alerts of root's hand that the service undid (re-sealed files)

The configuration defaults to /etc/bulwark/immutd.toml and must be owned by root.";

fn main() {
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulwark-immutd: error: {e:#}");
            2
        }
    };
    bulwark_stdout::exit(code);
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
        outln!("{USAGE}");
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
        ["approve", "apply", rest @ ..] => approve_apply(&config, rest),
        ["approve", action, rest @ ..] => approve_prepare(&config, action, rest),
        ["alerts", "ack"] => alerts_ack(&config),
        ["check-config"] => {
            let c = Config::load(&config)?;
            outln!(
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
    let svc = Service::open_at(cfg, Box::new(SystemClock), Some(config.to_path_buf()))
        .context("starting the service")?;
    // From the configuration in force: a weakening edit of the file is not applied.
    let socket = svc.config.socket.clone();
    let tick = Duration::from_secs(svc.config.tick_secs);
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
    let protection: Vec<String> = match &live {
        Some(s) => s.protection_alerts.clone(),
        None => bulwark_immutd::service::read_alerts(&cfg.state_dir),
    };
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
    let mut x = bulwark_immutd::expiry::expiries(&ledger.entries, |p| {
        cfg.repo(p).map(|c| c.min_period_days)
    });
    bulwark_immutd::service::released_expiries(&ledger.entries, &mut x);
    let alerted = !alert.is_empty() || !protection.is_empty();
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
        outln!(
            "{{\"running\":{},\"trusted_unix\":{trusted},\"wall_unix\":{wall},\"unlocks_frozen\":{frozen},\"alert\":{},\"protection_alerts\":[{}],\"files\":[{}]}}",
            live.is_some(),
            json_str(&alert),
            protection.iter().map(|a| json_str(a)).collect::<Vec<_>>().join(","),
            files.join(",")
        );
    } else {
        outln!(
            "service:        {}",
            if live.is_some() {
                "running"
            } else {
                "NOT RUNNING (state read from disk)"
            }
        );
        outln!("trusted clock:  {} ({trusted})", fmt_time(trusted));
        outln!(
            "wall clock:     {} ({wall}){}",
            fmt_time(wall),
            if live.is_some() {
                " as the service reads it"
            } else {
                ""
            }
        );
        if frozen {
            outln!("ALERT:          unlocks are FROZEN: {alert}");
        } else if !alert.is_empty() {
            outln!("ALERT:          {alert}");
            outln!("unlocks:        running");
        } else {
            outln!("unlocks:        running");
        }
        for a in &protection {
            outln!("ALERT:          {a}");
        }
        if let Some(s) = &live {
            if !s.audit_problem.is_empty() {
                outln!("AUDIT LOG:      {}", s.audit_problem);
            }
            outln!(
                "connections:    {} open; since start {} refused (uid not permitted), {} over a limit, {} cut at the request deadline",
                s.connections_open, s.refused_strangers, s.refused_busy, s.requests_timed_out
            );
        }
        outln!("files:          {}", ledger.entries.len());
        for (e, x) in ledger.entries.iter().zip(&x) {
            outln!(
                "  {:<8} until {}  {}  root {}",
                e.state.as_str(),
                fmt_time(*x),
                e.path().display(),
                &e.root.to_hex()[..16]
            );
        }
    }
    Ok(if alerted { 1 } else { 0 })
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
    outln!(
        "trusted clock:  {} ({})",
        fmt_time(p.trusted_unix),
        p.trusted_unix
    );
    outln!(
        "wall clock:     {} ({})",
        fmt_time(p.wall_unix),
        p.wall_unix
    );
    let step = p.wall_unix - p.trusted_unix;
    if step >= 0 {
        outln!(
            "step:           the wall clock is {} ahead of the trusted clock",
            human(step)
        );
    } else {
        outln!(
            "step:           the wall clock is {} BEHIND the trusted clock; accepting keeps the trusted time (it never goes backwards)",
            human(-step)
        );
    }
    if !p.alert.is_empty() {
        outln!("alert:          {}", p.alert);
    }
    if p.files_unlocking == 0 {
        outln!("accepting unlocks nothing early");
    } else {
        outln!(
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
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        bail!("`time accept` asks for confirmation at a terminal; after reading the preview (`bulwark-immutd time preview`), run `bulwark-immutd time accept --yes` from a script");
    }
    // `out!` flushes, so the prompt shows before the answer is read.
    out!(
        "Accept the wall clock as the trusted time? Fix the clock first if it is wrong. Type yes: "
    );
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

fn time_accept(config: &Path, yes: bool) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    let (p, running) = preview(&cfg)?;
    print_preview(&p);
    if !yes && !confirm()? {
        outln!("nothing changed");
        return Ok(2);
    }
    if running {
        let mut c = ImmutClient::connect(&cfg.socket)?;
        let t = c
            .time_accept()
            .context("asking the running service to accept the time")?;
        outln!(
            "time accepted: the trusted clock is now {} ({t}); unlocks resume",
            fmt_time(t)
        );
        return Ok(0);
    }
    if let Some(a) = &cfg.approval {
        if p.files_unlocking > 0 {
            bail!(
                "accepting the wall clock would unlock {} files early, which needs {} approvers' signatures; start the service, then run `bulwark-immutd approve time-accept --out STATEMENT`",
                p.files_unlocking,
                a.threshold
            );
        }
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
    outln!(
        "time accepted: the trusted clock is now {} ({})",
        fmt_time(s.last_trusted),
        s.last_trusted
    );
    Ok(0)
}

/// Largest statement or signature file read.
const MAX_FILE: u64 = 64 * 1024;

fn read_small(p: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let f =
        std::fs::File::open(p).with_context(|| format!("opening the {what} {}", p.display()))?;
    let mut b = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut b)
        .with_context(|| format!("reading the {what} {}", p.display()))?;
    if b.len() as u64 > MAX_FILE {
        bail!(
            "the {what} {} is larger than {MAX_FILE} bytes; it is not one",
            p.display()
        );
    }
    Ok(b)
}

fn connect_running(cfg: &Config) -> anyhow::Result<ImmutClient> {
    ImmutClient::connect(&cfg.socket).with_context(|| {
        format!(
            "approvals go through the running service, which does not answer on {}; start it (`bulwark-immutd run`)",
            cfg.socket.display()
        )
    })
}

fn approve_prepare(config: &Path, action: &str, rest: &[&str]) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    let mut out = None;
    let mut valid: u32 = 86_400;
    let mut targets = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match *a {
            "--out" => out = Some(PathBuf::from(it.next().context("--out needs a file name")?)),
            "--valid-for" => {
                valid = it
                    .next()
                    .context("--valid-for needs seconds")?
                    .parse()
                    .context("--valid-for takes whole seconds")?
            }
            t if t.starts_with("--") => bail!("unknown option {t}\n\n{USAGE}"),
            t => targets.push(t.to_string()),
        }
    }
    let out = out.context("give --out STATEMENT: the file approvers sign")?;
    if action != "release" && !targets.is_empty() {
        bail!("approve {action} takes no targets\n\n{USAGE}");
    }
    let mut c = connect_running(&cfg)?;
    let text = c
        .prepare(action, &targets, valid)
        .with_context(|| format!("preparing the {action} statement"))?;
    write_new(&out, &text)?;
    out!("{}", String::from_utf8_lossy(&text));
    outln!(
        "\nstatement written to {}; each approver signs it with\n  ssh-keygen -Y sign -f KEY -n {} {}\nthen: bulwark-immutd approve apply {} --sig {}.sig --sig …",
        out.display(),
        bulwark_approval::NAMESPACE,
        out.display(),
        out.display(),
        out.display()
    );
    Ok(0)
}

/// Writes a new file by temp name, fsync, rename, fsync of the folder.
fn write_new(p: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = p.file_name().context("--out needs a file name")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, p).with_context(|| format!("renaming to {}", p.display()))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsyncing {}", dir.display()))?;
    Ok(())
}

fn approve_apply(config: &Path, rest: &[&str]) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    let mut statement = None;
    let mut sigs = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match *a {
            "--sig" => {
                let p = PathBuf::from(it.next().context("--sig needs a signature file")?);
                sigs.push(read_small(&p, "signature file")?);
            }
            t if t.starts_with("--") => bail!("unknown option {t}\n\n{USAGE}"),
            t if statement.is_none() => statement = Some(PathBuf::from(t)),
            t => bail!("unexpected {t:?}: give one STATEMENT and --sig per signature\n\n{USAGE}"),
        }
    }
    let statement = statement.context("give the STATEMENT file to apply")?;
    let text = read_small(&statement, "statement")?;
    let mut c = connect_running(&cfg)?;
    match c.apply(&text, &sigs) {
        Ok(summary) => {
            outln!("{summary}");
            Ok(0)
        }
        Err(e) if e.code().is_some() => {
            outln!("refused: {e}");
            Ok(3)
        }
        Err(e) => Err(e).context("applying the statement"),
    }
}

fn alerts_ack(config: &Path) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    let mut c = connect_running(&cfg)?;
    outln!("{}", c.ack_alerts().context("acknowledging the alerts")?);
    Ok(0)
}

fn audit_verify(config: &Path) -> anyhow::Result<i32> {
    let cfg = Config::load(config)?;
    let log = cfg.state_dir.join("audit.log");
    match audit::verify(&log, Some(&cfg.state_dir.join("audit.head"))) {
        Ok(v) => {
            outln!(
                "audit log {} is intact: {} entries",
                log.display(),
                v.entries
            );
            Ok(0)
        }
        Err(e) => {
            outln!("audit log {} is DAMAGED: {e}", log.display());
            Ok(1)
        }
    }
}
