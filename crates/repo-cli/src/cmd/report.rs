//! `bulwark-repo report --html FILE`: the repository as one self-contained HTML page (jobs,
//! chains, the lock timeline from the immutability service's ledger, space, alerts, the host
//! audit), written atomically so a timer can mail it. See docs/report.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bulwark_immut_msg::{layout, FileInfo, ImmutClient, StatusInfo};
use bulwark_report as rep;
use bulwark_repository::{error_chain, Protection, Repository};

/// Arguments of `bulwark-repo report`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
    /// Write the page to this file (replaced atomically).
    #[arg(long, value_name = "FILE")]
    html: PathBuf,
    /// Re-read every stored block first (as `bulwark-repo verify`), so the page shows damage
    /// found now; without it, the page shows what the last verify recorded.
    #[arg(long)]
    verify: bool,
    /// Leave out the host audit (`bulwark-repo audit`).
    #[arg(long)]
    no_audit: bool,
    /// The transport service's port, for the audit's open-ports check.
    #[arg(long, default_value_t = 6162)]
    port: u16,
}

/// Runs `bulwark-repo report`: exit 0 when the page shows nothing failing, 1 when it shows a
/// failing alert or audit check (the page is written in both cases), 2 when it cannot be made.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let out = absolute(&a.html)?;
    let report = gather(&a)?;
    let page = rep::render(&report);
    bulwark_repository::write_atomic(&out, page.as_bytes()).with_context(|| {
        format!(
            "writing the report to {}; choose a folder the service user can write to",
            out.display()
        )
    })?;
    let worst = report.worst();
    if json {
        outln!(
            "{}",
            serde_json::json!({"report": out, "bytes": page.len(), "alerts": report.alerts.len(),
                "status": worst.as_str(),
                "sealed_files": report.sealed().count()})
        );
    } else {
        outln!("{}", out.display());
        for al in &report.alerts {
            outln!("ALERT: {}", al.text);
        }
    }
    Ok(if worst == rep::Level::Fail { 1 } else { 0 })
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("reading the current folder")?
            .join(p)
    };
    anyhow::ensure!(
        p.file_name().is_some(),
        "--html {} names no file: give a file name such as report.html",
        p.display()
    );
    Ok(p)
}

fn gather(a: &Args) -> anyhow::Result<rep::Report> {
    let repo = Repository::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let now = bulwark_time::UnixTime::now().secs();
    let mut report = rep::Report {
        title: repo.root().display().to_string(),
        source: format!("bulwark-repo report on {}", hostname()),
        generated_unix: now,
        immutable_days: Some(repo.config().immutable_days),
        ..rep::Report::default()
    };
    // The immutability service: its clock and its ledger of this repository.
    let mut status: Option<StatusInfo> = None;
    let mut ledger: HashMap<(String, String), FileInfo> = HashMap::new();
    match &repo.config().immutd_socket {
        None => report.alerts.push(alert(
            rep::Level::Fail,
            "immutability",
            "no immutability service guards this repository: restore points are NOT immutable (see README, 'Setting up a hardened repository host')",
        )),
        Some(sock) => {
            let asked = ImmutClient::connect(sock).and_then(|mut c| {
                let st = c.status()?;
                let entries = c.list(repo.root())?;
                Ok((st, entries))
            });
            match asked {
                Ok((st, entries)) => {
                    for e in entries {
                        ledger.insert((e.job.clone(), e.point.to_hex()), e);
                    }
                    status = Some(st);
                }
                Err(e) => report.alerts.push(alert(
                    rep::Level::Fail,
                    "service",
                    format!(
                        "the immutability service on {} does not answer ({}): new restore points are not sealed; start bulwark-immutd",
                        sock.display(),
                        error_chain(&e)
                    ),
                )),
            }
        }
    }
    if let Some(st) = &status {
        report.clock = Some(rep::Clock {
            trusted_unix: st.trusted_unix,
            wall_unix: st.wall_unix,
            unlocks_frozen: st.unlocks_frozen,
            alert: st.alert.clone(),
        });
        if st.unlocks_frozen {
            report.alerts.push(alert(
                rep::Level::Fail,
                "clock",
                format!(
                    "unlocks are FROZEN by the immutability service's clock alert: {}",
                    st.alert
                ),
            ));
        } else if !st.alert.is_empty() {
            report.alerts.push(alert(
                rep::Level::Fail,
                "clock",
                format!("the immutability service's clock: {}", st.alert),
            ));
        }
        if !st.audit_problem.is_empty() {
            report.alerts.push(alert(
                rep::Level::Fail,
                "audit log",
                st.audit_problem.clone(),
            ));
        }
    }
    unsealed(&repo, &mut report)?;
    // Verify: now, when asked; else what the last verify recorded.
    let mut damaged: HashMap<String, Vec<(Option<String>, String)>> = HashMap::new();
    let mut verified_now = false;
    if a.verify {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let v = repo
            .verify(None, threads, &|_| {})
            .with_context(|| format!("verifying {}", a.dir.display()))?;
        for d in v.damaged {
            damaged
                .entry(d.job.clone())
                .or_default()
                .push((d.point.map(|p| p.to_hex()), d.problems.join("; ")));
        }
        verified_now = true;
    }
    let verified = verified_record(repo.root());
    for job in repo.jobs()? {
        let scan = repo.scan_job(&job)?;
        let recorded = if verified_now {
            None
        } else {
            recorded_damage(repo.root(), &job)
        };
        let bad: Vec<(Option<String>, String)> = match &recorded {
            Some((_, lines)) => lines.clone(),
            None => damaged.get(&job).cloned().unwrap_or_default(),
        };
        for (path, e) in &scan.unreadable {
            report.alerts.push(alert(
                rep::Level::Fail,
                "damage",
                format!(
                    "job {job}: {} cannot be read ({}); run `bulwark-repo verify {}`",
                    path.display(),
                    error_chain(e),
                    a.dir.display()
                ),
            ));
        }
        for (point, why) in &bad {
            report.alerts.push(alert(
                rep::Level::Fail,
                "damage",
                format!(
                    "job {job}, restore point {}: {why}; the next backup is an active full",
                    point.as_deref().unwrap_or("(unknown)")
                ),
            ));
        }
        let mut chains: Vec<rep::Chain> = Vec::new();
        for p in &scan.points {
            let id = p.meta.point.to_hex();
            let chain_id = p.meta.chain.to_hex();
            let lock = ledger.get(&(job.clone(), id.clone())).map(|e| rep::Lock {
                sealed_unix: e.sealed_unix,
                expiry_unix: e.expiry_unix,
                state: e.state.as_str().to_string(),
            });
            if lock.is_none() && status.is_some() {
                report.alerts.push(alert(
                    rep::Level::Fail,
                    "unsealed",
                    format!(
                        "job {job}, restore point {id} is in the store but not in the immutability service's ledger: it was never sealed; run `bulwark-repo verify {}`",
                        a.dir.display()
                    ),
                ));
            }
            let point = rep::Point {
                verified_unix: verified_now
                    .then_some(now)
                    .or_else(|| verified.get(&job).and_then(|m| m.get(&id)).copied()),
                damaged: bad.iter().any(|(bp, _)| bp.as_deref() == Some(id.as_str())),
                id,
                kind: p.meta.kind.as_str().replace('-', " "),
                class: match p.meta.retention {
                    bulwark_format::RetentionClass::Regular => rep::Gfs::Regular,
                    bulwark_format::RetentionClass::Weekly => rep::Gfs::Weekly,
                    bulwark_format::RetentionClass::Monthly => rep::Gfs::Monthly,
                    bulwark_format::RetentionClass::Yearly => rep::Gfs::Yearly,
                },
                created_unix: p.meta.created_unix_secs,
                disk_bytes: p.meta.disk_size,
                file_bytes: p.file_size,
                new_bytes: p.meta.stats.bytes_new_plain,
                lock,
            };
            match chains.iter_mut().find(|c| c.id == chain_id) {
                Some(c) => c.points.push(point),
                None => chains.push(rep::Chain {
                    id: chain_id,
                    points: vec![point],
                }),
            }
        }
        let verify = if !bad.is_empty() || !scan.unreadable.is_empty() {
            rep::Verify::Damaged {
                at_unix: if verified_now {
                    Some(now)
                } else {
                    recorded.as_ref().and_then(|(t, _)| *t)
                },
                points: (bad.len() + scan.unreadable.len()) as u64,
            }
        } else if verified_now {
            rep::Verify::Clean { at_unix: now }
        } else {
            // The oldest verify of the job's points, once every point has been verified.
            let times: Vec<Option<i64>> = chains
                .iter()
                .flat_map(|c| &c.points)
                .map(|p| p.verified_unix)
                .collect();
            match times.iter().copied().collect::<Option<Vec<i64>>>() {
                Some(t) if !t.is_empty() => rep::Verify::Clean {
                    at_unix: t.into_iter().min().unwrap_or(now),
                },
                _ => rep::Verify::Unknown,
            }
        };
        report.jobs.push(rep::Job {
            name: job,
            chains,
            verify,
        });
    }
    if !verified_now {
        report.notes.push(format!(
            "Damage and verify ages shown are what the last verify recorded; `bulwark-repo report --verify` re-reads every stored block first (as `bulwark-repo verify {}`).",
            a.dir.display()
        ));
    }
    // Space, with the bytes locked per date.
    match repo.space() {
        Ok(sp) => {
            let locked = match &sp.protection {
                Protection::Locked(days) => days
                    .iter()
                    .map(|d| rep::LockedDay {
                        until_unix: d.until_unix,
                        files: d.files,
                        logical_bytes: d.logical_bytes,
                        physical_bytes: d.physical_bytes,
                    })
                    .collect(),
                Protection::Unknown(why) => {
                    report
                        .notes
                        .push(format!("Locked bytes are unknown: {why}"));
                    Vec::new()
                }
                Protection::NotProtected => Vec::new(),
            };
            report.space = Some(rep::Space {
                filesystem: sp.filesystem.name.clone(),
                fs_total_bytes: sp.filesystem.total_bytes,
                fs_free_bytes: sp.filesystem.free_bytes,
                logical_bytes: sp.logical_bytes,
                allocated_bytes: sp.allocated_bytes,
                physical_bytes: sp.physical_bytes,
                shared_bytes: sp.shared_bytes,
                locked,
                // bulwark-immutd's max_locked_bytes is in its root-owned configuration, which
                // its protocol does not report.
                locked_cap_bytes: None,
                locked_now_bytes: status.as_ref().map(|s| s.bytes_locked),
            });
        }
        Err(e) => report.alerts.push(alert(
            rep::Level::Warn,
            "space",
            format!("the space report failed: {}", error_chain(&e)),
        )),
    }
    // Tier lag, from the tier catalog alone.
    for t in bulwark_tier_catalog::status(&repo)? {
        if t.pending > 0 || t.uploads_in_progress > 0 {
            report.alerts.push(alert(
                rep::Level::Warn,
                "tier",
                format!(
                    "tier {}: {} restore point(s) not copied yet, {} upload(s) in progress; run `bulwark-tier sync {} --name {}`",
                    t.name,
                    t.pending,
                    t.uploads_in_progress,
                    a.dir.display(),
                    t.name
                ),
            ));
        }
    }
    if !a.no_audit {
        match host_audit(&a.dir, a.port) {
            Ok(f) => report.audit = f,
            Err(e) => report.alerts.push(alert(
                rep::Level::Warn,
                "audit",
                format!("the host audit did not run: {e:#}"),
            )),
        }
    }
    Ok(report)
}

fn alert(level: rep::Level, kind: &str, text: impl Into<String>) -> rep::Alert {
    rep::Alert {
        level,
        kind: kind.to_string(),
        text: text.into(),
    }
}

/// Files waiting in `incoming/` longer than sealing takes.
fn unsealed(repo: &Repository, report: &mut rep::Report) -> anyhow::Result<()> {
    let incoming = layout::incoming_dir(repo.root());
    let waiting = match super::status::waiting_to_be_sealed(&incoming) {
        Ok(w) => w,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", incoming.display())),
    };
    for (name, secs) in waiting {
        report.alerts.push(alert(
            rep::Level::Fail,
            "unsealed",
            format!(
                "{name} has waited {secs} s in incoming/ without being sealed: check that bulwark-immutd runs"
            ),
        ));
    }
    Ok(())
}

/// Longest verify record read from `health/verified.json`.
const MAX_VERIFIED_FILE: u64 = 64 << 20;

/// When each point was last verified (`health/verified.json`, written by the scheduled
/// verify: job → point → unix time); empty when there is no record or it cannot be read.
fn verified_record(root: &Path) -> HashMap<String, HashMap<String, i64>> {
    use std::io::Read;
    let mut out = HashMap::new();
    let Ok(f) = std::fs::File::open(root.join("health").join("verified.json")) else {
        return out;
    };
    let mut text = String::new();
    if f.take(MAX_VERIFIED_FILE).read_to_string(&mut text).is_err() {
        return out;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return out;
    };
    for (job, points) in v["jobs"].as_object().into_iter().flatten() {
        let m: HashMap<String, i64> = points
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(p, t)| Some((p.clone(), t.as_i64()?)))
            .collect();
        out.insert(job.clone(), m);
    }
    out
}

/// Longest damage record read from `health/<job>.damaged`.
const MAX_HEALTH_FILE: u64 = 1 << 20;

/// What the last verify recorded for `job` (`health/<job>.damaged`, written by verify when it
/// found damage and removed when a verify is clean): its time and (point, problem) lines.
/// Damaged restore points as (point id when known, what is wrong).
type Damage = Vec<(Option<String>, String)>;

pub(crate) fn recorded_damage(root: &Path, job: &str) -> Option<(Option<i64>, Damage)> {
    use std::io::Read;
    let path = root.join("health").join(format!("{job}.damaged"));
    let f = std::fs::File::open(&path).ok()?;
    let at = f
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .map(bulwark_time::UnixTime::from_system)
        .map(|t| t.secs());
    let mut text = String::new();
    f.take(MAX_HEALTH_FILE).read_to_string(&mut text).ok()?;
    let lines = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let (_chain, point, why) = (it.next()?, it.next()?, it.next().unwrap_or(""));
            Some((
                (point != "unknown").then(|| point.to_string()),
                why.to_string(),
            ))
        })
        .collect();
    Some((at, lines))
}

/// The host audit, as `bulwark-repo audit --json` reports it (run as a child so the page
/// shows exactly the checks the audit command makes).
fn host_audit(dir: &Path, port: u16) -> anyhow::Result<Vec<rep::AuditFinding>> {
    let me = std::env::current_exe().context("finding the bulwark-repo binary")?;
    let o = std::process::Command::new(me)
        .args(["--json", "audit"])
        .arg(dir)
        .args(["--port", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running bulwark-repo audit")?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).with_context(|| {
        format!(
            "reading the audit's answer: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )
    })?;
    let findings = v["findings"]
        .as_array()
        .context("the audit's answer lists no findings")?;
    Ok(findings
        .iter()
        .map(|f| rep::AuditFinding {
            level: match f["level"].as_str() {
                Some("PASS") => rep::Level::Ok,
                Some("WARN") => rep::Level::Warn,
                _ => rep::Level::Fail,
            },
            check: f["check"].as_str().unwrap_or("?").to_string(),
            detail: f["detail"].as_str().unwrap_or("").to_string(),
        })
        .collect())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "this host".into())
}
