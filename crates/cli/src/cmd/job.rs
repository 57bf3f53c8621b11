//! `bulwark job run`, `bulwark job plan` and `bulwark job check`: scheduled jobs from a job
//! file, over a local folder or a repository service.
//!
//! A run backs up every disk of the job (each its own repository job and chain), prints and
//! records one result per disk in the state folder, and sends a notification when a disk
//! failed. `check` reports jobs with no successful run within their alert interval (a killed
//! or missed run), for a timer.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulwark_engine::{backup_local_source, BackupOptions, Source};
use bulwark_format::PointKind;
use bulwark_jobs::record::{overdue, DiskResult, RunRecord};
use bulwark_jobs::{decide, plan, DiskJob, JobFile, JobKind, JobState, Target};
use bulwark_remote::RemoteAddr;
use bulwark_repository::{utc, Repository};
use serde_json::json;

use crate::output::{human, Output, EXIT_DAMAGE, EXIT_OK};

/// Exit code of a run in which a disk failed.
const EXIT_FAILED: i32 = 2;

/// Arguments of `bulwark job`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

/// Where records and notification settings live.
#[derive(clap::Args, Clone)]
struct StateArgs {
    /// Folder of the run records (default $BULWARK_STATE_DIR, else /var/lib/bulwark as
    /// root, else $XDG_STATE_HOME/bulwark or ~/.local/state/bulwark).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Notification settings (default $BULWARK_NOTIFY_CONFIG, else /etc/bulwark/notify.toml
    /// when it exists; none: no notification is sent, only logged).
    #[arg(long)]
    notify_config: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Run the job now: for each disk decide incremental, synthetic full or active full, and
    /// do it; exit 2 when a disk failed.
    Run {
        /// The job file (see docs/jobs.md).
        file: PathBuf,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show what the next daily runs would be, and why.
    Plan {
        /// The job file.
        file: PathBuf,
        /// How many daily runs to show.
        #[arg(long, default_value_t = 14)]
        runs: usize,
    },
    /// Report (and notify) each job with no successful run within its alert interval (a job
    /// that never ran: since its file was written), and each job file that cannot be read;
    /// exit 1 when one is overdue or bad.
    Check {
        /// Job files, or folders of job files (*.toml).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        state: StateArgs,
    },
}

fn now() -> i64 {
    bulwark_time::UnixTime::now().secs()
}

/// The folder of run records.
fn state_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("BULWARK_STATE_DIR") {
        return PathBuf::from(p);
    }
    if bulwark_sys::effective_uid() == 0 {
        return PathBuf::from("/var/lib/bulwark");
    }
    if let Some(p) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(p).join("bulwark");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/state/bulwark")
}

/// The job's repository, ready for the kind of run.
enum Place {
    Local(Repository),
    Remote {
        addr: RemoteAddr,
        config_dir: PathBuf,
    },
}

impl Place {
    fn open(job: &JobFile, file: &Path, config_dir: &Path) -> anyhow::Result<Place> {
        match job.target() {
            Target::Local(p) => Ok(Place::Local(super::open_repo(&p).with_context(|| {
                format!(
                    "job file {}: repository {:?} (a folder here; for a repository service \
                     write HOST:PORT)",
                    file.display(),
                    job.repository
                )
            })?)),
            Target::Network(a) => Ok(Place::Remote {
                addr: RemoteAddr::parse(&a)
                    .with_context(|| format!("job file {}: repository {a:?}", file.display()))?,
                config_dir: config_dir.to_path_buf(),
            }),
        }
    }

    /// What the repository holds for one repository job.
    fn state(&self, job: &str) -> anyhow::Result<JobState> {
        match self {
            Place::Local(repo) => {
                let scan = repo.scan_job(job)?;
                Ok(JobState {
                    points: scan
                        .points
                        .iter()
                        .map(|p| (p.meta.kind, p.meta.created_unix_secs))
                        .collect(),
                    damage: repo.chain_damage(job)?,
                })
            }
            Place::Remote { addr, config_dir } => {
                let jobs = bulwark_remote::list_jobs(config_dir, addr)
                    .with_context(|| format!("listing this client's jobs on {addr}"))?;
                let points = if jobs.iter().any(|j| j == job) {
                    bulwark_remote::list_points(config_dir, addr, job)
                        .with_context(|| format!("listing job {job:?} on {addr}"))?
                        .iter()
                        .map(|m| (m.kind, m.created_unix))
                        .collect()
                } else {
                    vec![]
                };
                // The service decides a new chain itself after damage (its full_reason).
                Ok(JobState {
                    points,
                    damage: None,
                })
            }
        }
    }
}

fn backup_options(job: &JobFile, force_full: bool) -> anyhow::Result<BackupOptions> {
    let block_size = job
        .block_size
        .as_deref()
        .map(super::parse_size)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if block_size.is_some_and(|b| !bulwark_repository::plan::block_size_choosable(b)) {
        anyhow::bail!(
            "job {}: block_size {} is not allowed: use a power of two from 64K to 4M",
            job.name,
            job.block_size.as_deref().unwrap_or_default()
        );
    }
    let compression_level = job
        .compression
        .unwrap_or(bulwark_engine::DEFAULT_COMPRESSION);
    if !bulwark_repository::plan::compression_level_ok(compression_level) {
        anyhow::bail!(
            "job {}: compression {compression_level} is out of range: use 1 to 19 (zstd), -7 to -1 (faster), or 0 for none",
            job.name
        );
    }
    if job.key.is_some() && job.public_key.is_some() {
        anyhow::bail!(
            "job {}: give `key` (symmetric) or `public_key` (write-only), not both",
            job.name
        );
    }
    Ok(BackupOptions {
        block_size,
        compression_level,
        force_full,
        threads: bulwark_engine::default_threads(),
    })
}

/// What a run against `place` does of the schedule's `decision`: a network job's synthetic
/// full day sends an incremental (the host builds synthetic fulls itself). `job run` and
/// `job plan` both go through here, so the plan shows what the runs will do.
fn for_place(decision: bulwark_jobs::Decision, place: &Place) -> bulwark_jobs::Decision {
    if decision.kind == PointKind::SyntheticFull && matches!(place, Place::Remote { .. }) {
        return bulwark_jobs::Decision {
            kind: PointKind::Incremental,
            reason: "synthetic fulls of network jobs are built on the repository host \
                     (bulwark-repo synthesize); this run sends the changed blocks"
                .into(),
        };
    }
    decision
}

/// One disk, backed up.
fn run_disk(
    job: &JobFile,
    disk: &DiskJob,
    place: &Place,
    opened: Option<Source>,
    out: &Output,
) -> anyhow::Result<DiskResult> {
    let state = place.state(&disk.job)?;
    let decision = for_place(decide(job.schedule(), &state, now()), place);
    if !out.json {
        outln!(
            "job {} disk {}: {} — {}",
            job.name,
            disk.disk,
            decision.kind.as_str(),
            decision.reason
        );
    }
    let opts = backup_options(job, decision.kind == PointKind::ActiveFull)?;
    // `key` / `public_key` in the job file (docs/encryption.md).
    let key = super::key::write_key(job.key.as_deref(), job.public_key.as_deref())
        .with_context(|| format!("job {}: its encryption key", job.name))?;
    let pb = out.progress(0, "backup");
    // Image files, NBD URIs and changed-block tracking (docs/sources.md).
    let live = super::live::LiveArgs {
        format: job.format.clone(),
        cbt: job.cbt,
        dirty_bitmap: job.dirty_bitmap.clone(),
        ..Default::default()
    };
    let open_live = || {
        bulwark_engine::LiveSource::open(&disk.source, &live.options(), &disk.job)
            .with_context(|| format!("opening {}", disk.source.display()))
    };
    let mut cbt = None;
    let (point, kind, bytes_stored, seconds, synth) = match place {
        Place::Local(repo) => {
            let s = if opened.is_none() && live.is_live(&disk.source) {
                let src = open_live()?;
                let (s, report) =
                    bulwark_engine::backup_live(repo, &disk.job, src, &opts, key.as_ref(), &|n| {
                        pb.inc(n)
                    })
                    .with_context(|| format!("backing up {}", disk.source.display()))?;
                cbt = cbt_line(&report);
                s
            } else {
                let src = match opened {
                    Some(s) => s,
                    None => {
                        Source::open(&disk.source).map_err(|e| match super::source_advice(&e) {
                            Some(advice) => anyhow::anyhow!("{e}; {advice}"),
                            None => e.into(),
                        })?
                    }
                };
                match &key {
                    Some(k) => bulwark_engine::backup_local_encrypted(
                        repo,
                        &disk.job,
                        src,
                        &opts,
                        k,
                        &|n| pb.inc(n),
                    ),
                    None => backup_local_source(repo, &disk.job, src, &opts, &|n| pb.inc(n)),
                }
                .with_context(|| format!("backing up {}", disk.source.display()))?
            };
            let synth = if decision.kind == PointKind::SyntheticFull {
                Some(
                    repo.synthesize(&disk.job)
                        .context("building the synthetic full")?,
                )
            } else {
                None
            };
            (
                s.sealed.meta.point.to_hex(),
                s.sealed.meta.kind,
                s.counters.bytes_stored,
                s.elapsed.as_secs_f64(),
                synth.map(|o| (o.sealed.meta.point.to_hex(), o.method.as_str())),
            )
        }
        Place::Remote { addr, config_dir } => {
            let s = if live.is_live(&disk.source) {
                bulwark_remote::backup_remote_live(
                    config_dir,
                    addr,
                    &disk.job,
                    open_live()?,
                    &opts,
                    key.as_ref(),
                    &|n| pb.inc(n),
                )
                .map(|(s, report)| {
                    cbt = cbt_line(&report);
                    s
                })
            } else {
                bulwark_remote::backup_remote_with(
                    config_dir,
                    addr,
                    &disk.job,
                    &disk.source,
                    &opts,
                    key.as_ref(),
                    &|n| pb.inc(n),
                )
            }
            .with_context(|| format!("backing up {} to {addr}", disk.source.display()))?;
            (
                s.sealed.summary.point.to_hex(),
                s.sealed.summary.kind,
                s.counters.bytes_stored,
                s.elapsed.as_secs_f64(),
                None,
            )
        }
    };
    pb.finish_and_clear();
    if !out.json {
        outln!(
            "  {} {point}: {} stored in {seconds:.1}s",
            kind.as_str(),
            human(bytes_stored)
        );
        if let Some((p, method)) = &synth {
            outln!("  synthetic full {p} by {method}");
        }
        if let Some(c) = &cbt {
            outln!("  changed-block tracking: {c}");
        }
    }
    Ok(DiskResult {
        disk: disk.disk.clone(),
        job: disk.job.clone(),
        ok: true,
        kind: kind.as_str().to_string(),
        point: Some(point),
        bytes_stored,
        seconds,
        error: None,
        decision: decision.kind.as_str().to_string(),
        reason: decision.reason.clone(),
        synthetic_full: synth.as_ref().map(|(p, _)| p.clone()),
        synthetic_method: synth.map(|(_, m)| m.to_string()),
        cbt,
    })
}

/// A live source's changed-block tracking in one line, for the run's output and record:
/// `None` where the job uses none.
fn cbt_line(r: &bulwark_engine::CbtReport) -> Option<String> {
    r.mode?;
    let mut line = if r.used {
        format!(
            "read only the {} the bitmap {} marked dirty",
            human(r.dirty_block_bytes),
            r.bitmap.as_deref().unwrap_or("?")
        )
    } else {
        format!(
            "read everything: {}",
            r.fallback_reason.as_deref().unwrap_or("no usable bitmap")
        )
    };
    if let Some(e) = &r.cleanup_error {
        line.push_str(&format!("; cleanup: {e}"));
    }
    Some(line)
}

/// Root on a guarded host: open every disk as root, then continue as the repository's owner.
fn open_as_root(job: &JobFile, disks: &[DiskJob]) -> anyhow::Result<Option<Vec<Source>>> {
    let Target::Local(repo) = job.target() else {
        return Ok(None);
    };
    let sources: Vec<&Path> = disks.iter().map(|d| d.source.as_path()).collect();
    super::become_repo_owner_opening(&repo, &sources)
}

/// What one `bulwark job run` did, whatever the job's kind: the run record as saved, why the
/// run as a whole failed (when it stopped before or besides its per-job results), the fields
/// of its kind, and its exit code. Printed once, in one shape (docs/jobs.md, "What a run
/// records").
pub(crate) struct Ran {
    pub record: RunRecord,
    /// The error that stopped the run as a whole; its record holds it as the result `*`.
    pub error: Option<anyhow::Error>,
    /// Fields of this kind of job: a verify's `results` and `damaged`, a copy's report.
    pub extra: serde_json::Map<String, serde_json::Value>,
    pub code: i32,
}

impl Ran {
    /// Finishes `record` with `results`, or with the one result `*` of a run that stopped as
    /// a whole, and saves it.
    pub fn finish(
        mut record: RunRecord,
        dir: &Path,
        kind: &str,
        results: anyhow::Result<Vec<DiskResult>>,
    ) -> anyhow::Result<(RunRecord, Option<anyhow::Error>)> {
        let (results, error) = match results {
            Ok(r) => (r, None),
            Err(e) => (
                vec![DiskResult::failed(
                    "*".into(),
                    "*".into(),
                    kind,
                    format!("{e:#}"),
                )],
                Some(e),
            ),
        };
        record.finish(results, now());
        record
            .save(dir)
            .with_context(|| format!("recording the result of job {}", record.job))?;
        Ok((record, error))
    }
}

/// The `error` of a run's JSON: the run's own error, else the one result's error, else
/// `job: error` of each failed result; `None` when it succeeded.
fn run_error(ran: &Ran) -> Option<String> {
    if let Some(e) = &ran.error {
        return Some(format!("{e:#}"));
    }
    let failed: Vec<&DiskResult> = ran.record.disks.iter().filter(|d| !d.ok).collect();
    match (ran.record.disks.as_slice(), failed.as_slice()) {
        (_, []) if ran.record.ok => None,
        ([one], _) => Some(one.error.clone().unwrap_or_else(|| "failed".into())),
        (_, []) => Some("no result".into()),
        _ => Some(
            failed
                .iter()
                .map(|d| format!("{}: {}", d.job, d.error.as_deref().unwrap_or("failed")))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// The one JSON document of `bulwark --json job run`, the same fields for every kind of job
/// and outcome, then the kind's own fields (docs/jobs.md).
fn run_json(job: &JobFile, dir: &Path, ran: &Ran) -> serde_json::Value {
    let kind = kind_name(job);
    let mut v = json!({
        "job": job.name, "job_kind": kind, "repository": job.repository,
        "ok": ran.record.ok && ran.error.is_none(), "error": run_error(ran),
        "exit_code": ran.code, "disks": ran.record.disks,
        "record": bulwark_jobs::record::record_path(dir, &job.name),
    });
    let top = v.as_object_mut().expect("an object");
    for (k, val) in &ran.extra {
        top.entry(k.clone()).or_insert_with(|| val.clone());
    }
    // A one-disk backup job also keeps the fields it printed before disks were added
    // (decision, reason, point, kind, bytes_stored, seconds, synthetic_full, …).
    if let (JobKind::Backup(_), [d], None) = (job.kind(), ran.record.disks.as_slice(), &ran.error) {
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(d) {
            for (k, val) in fields {
                if !matches!(k.as_str(), "job" | "ok" | "disk" | "error") {
                    top.entry(k).or_insert(val);
                }
            }
        }
    }
    v
}

/// `backup`, `verify` or `copy`.
fn kind_name(job: &JobFile) -> &'static str {
    match job.kind() {
        JobKind::Backup(_) => "backup",
        JobKind::Verify(_) => "verify",
        JobKind::Copy(_) => "copy",
    }
}

/// The JSON of a `job run` whose job file could not be read: the same fields, none known.
fn unreadable_json(e: &anyhow::Error) -> serde_json::Value {
    json!({
        "job": null, "job_kind": null, "repository": null, "ok": false,
        "error": format!("{e:#}"), "exit_code": bulwark_cli_common::exit_code_of(e),
        "disks": [], "record": null,
    })
}

fn run_backup(
    job: &JobFile,
    file: &Path,
    disks: Vec<DiskJob>,
    config_dir: &Path,
    state: &StateArgs,
    out: &Output,
) -> anyhow::Result<Ran> {
    // As `bulwark backup`: the first Ctrl-C / SIGTERM stops the disk being backed up (no
    // restore point, its file removed) and fails the others, and the run records it.
    bulwark_sys::catch_interrupts();
    let dir = state_dir(state.state_dir.as_deref());
    let previous = bulwark_jobs::record::RunRecord::load(&dir, &job.name)?;
    let record = RunRecord::starting(&job.name, previous.as_ref(), now());
    // Marked before anything happens: a killed run leaves "started, never finished".
    prepare_state_dir(&dir, job)?;
    record
        .save(&dir)
        .with_context(|| format!("recording the start of job {}", job.name))?;
    let results = (|| -> anyhow::Result<Vec<DiskResult>> {
        let mut opened = open_as_root(job, &disks)?.map(Vec::into_iter);
        let place = Place::open(job, file, config_dir)?;
        let mut results = Vec::new();
        for disk in &disks {
            let src = opened.as_mut().and_then(Iterator::next);
            let r = run_disk(job, disk, &place, src, out).unwrap_or_else(|e| {
                let error = format!("{e:#}");
                if !out.json {
                    outln!("job {} disk {}: FAILED: {error}", job.name, disk.disk);
                }
                DiskResult::failed(disk.disk.clone(), disk.job.clone(), "", error)
            });
            results.push(r);
        }
        Ok(results)
    })();
    let (record, error) = Ran::finish(record, &dir, "backup", results)?;
    if !record.ok {
        let failed: Vec<String> = record
            .disks
            .iter()
            .filter(|d| !d.ok)
            .map(|d| format!("{}: {}", d.disk, d.error.as_deref().unwrap_or("failed")))
            .collect();
        let what = match &error {
            Some(_) => "failed".to_string(),
            None => format!("failed on {} of {} disks", failed.len(), record.disks.len()),
        };
        crate::notify::send(
            state.notify_config.as_deref(),
            crate::notify::Event::BackupFailed,
            &job.name,
            &format!("backup job {} {what}: {}", job.name, failed.join("; ")),
        );
    }
    if !out.json && error.is_none() {
        outln!(
            "job {}: {} of {} disks backed up",
            job.name,
            record.disks.iter().filter(|d| d.ok).count(),
            record.disks.len()
        );
    }
    let code = match &error {
        Some(e) => bulwark_cli_common::exit_code_of(e),
        None if record.ok => EXIT_OK,
        None => EXIT_FAILED,
    };
    Ok(Ran {
        record,
        error,
        extra: Default::default(),
        code,
    })
}

/// The state folder exists; when root will continue as a guarded repository's owner, its
/// records folder belongs to that owner, so the run can record its result after the drop.
fn prepare_state_dir(dir: &Path, job: &JobFile) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let jobs = dir.join("jobs");
    std::fs::create_dir_all(&jobs).with_context(|| format!("creating {}", jobs.display()))?;
    if bulwark_sys::effective_uid() != 0 {
        return Ok(());
    }
    let Target::Local(repo) = job.target() else {
        return Ok(());
    };
    if !repo.join("repository.toml").is_file() {
        return Ok(());
    }
    let meta = std::fs::metadata(&repo).with_context(|| format!("reading {}", repo.display()))?;
    if meta.uid() != 0 {
        std::os::unix::fs::chown(&jobs, Some(meta.uid()), Some(meta.gid()))
            .with_context(|| format!("giving {} to the repository's owner", jobs.display()))?;
    }
    Ok(())
}

fn run_verify(
    job: &JobFile,
    spec: &bulwark_jobs::VerifySpec,
    config_dir: &Path,
    state: &StateArgs,
    out: &Output,
) -> anyhow::Result<Ran> {
    let repo = crate::repo::Repo::parse(Path::new(job.repository.trim()), config_dir);
    let dir = state_dir(state.state_dir.as_deref());
    let previous = RunRecord::load(&dir, &job.name)?;
    let record = RunRecord::starting(&job.name, previous.as_ref(), now());
    std::fs::create_dir_all(dir.join("jobs"))
        .with_context(|| format!("creating {}", dir.display()))?;
    record.save(&dir)?;
    let threads = bulwark_engine::default_threads();
    let targets: Vec<Option<&str>> = if spec.jobs.is_empty() {
        vec![None]
    } else {
        spec.jobs.iter().map(|j| Some(j.as_str())).collect()
    };
    let mut results = Vec::new();
    let mut damaged = Vec::new();
    for t in targets {
        let name = t.unwrap_or("*").to_string();
        match super::verify::verify_recorded(&repo, t, threads, out) {
            Ok(r) => {
                for d in &r.damaged {
                    damaged.push(format!(
                        "job {} point {}: {}",
                        d.job,
                        d.point.as_deref().unwrap_or("?"),
                        d.problems.join("; ")
                    ));
                }
                results.push(DiskResult {
                    disk: name.clone(),
                    job: name,
                    ok: r.clean,
                    kind: "verify".into(),
                    point: None,
                    bytes_stored: r.bytes_checked,
                    seconds: 0.0,
                    error: (!r.clean).then(|| format!("{} damaged", r.damaged.len())),
                    ..Default::default()
                });
            }
            Err(e) => results.push(DiskResult::failed(
                name.clone(),
                name,
                "verify",
                format!("{e:#}"),
            )),
        }
    }
    let (record, error) = Ran::finish(record, &dir, "verify", Ok(results))?;
    if !damaged.is_empty() {
        crate::notify::send(
            state.notify_config.as_deref(),
            crate::notify::Event::VerifyDamage,
            &job.name,
            &format!(
                "verify job {} found damage: {}",
                job.name,
                damaged.join(" | ")
            ),
        );
    }
    if !out.json {
        for d in &damaged {
            outln!("DAMAGED {d}");
        }
        for r in &record.disks {
            outln!(
                "verify {}: {}",
                r.job,
                if r.ok {
                    "clean".to_string()
                } else {
                    r.error.clone().unwrap_or_default()
                }
            );
        }
    }
    let code = if !damaged.is_empty() {
        EXIT_DAMAGE
    } else if record.ok {
        EXIT_OK
    } else {
        EXIT_FAILED
    };
    // `results` is the name this output had before `disks` was common to every kind.
    let mut extra = serde_json::Map::new();
    extra.insert("results".into(), json!(record.disks));
    extra.insert("damaged".into(), json!(damaged));
    Ok(Ran {
        record,
        error,
        extra,
        code,
    })
}

/// Job files named on the command line, folders expanded to their `*.toml`; a folder that
/// cannot be listed is an entry of its own with the error, so the others are still checked.
fn job_files(args: &[PathBuf]) -> Vec<(PathBuf, anyhow::Result<()>)> {
    let mut out = Vec::new();
    for a in args {
        if a.is_dir() {
            let listed = std::fs::read_dir(a).and_then(|rd| {
                rd.map(|e| e.map(|e| e.path()))
                    .collect::<std::io::Result<Vec<PathBuf>>>()
            });
            match listed {
                Ok(v) => {
                    let mut v: Vec<PathBuf> = v
                        .into_iter()
                        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                        .collect();
                    v.sort();
                    out.extend(v.into_iter().map(|p| (p, Ok(()))));
                }
                Err(e) => out.push((
                    a.clone(),
                    Err(anyhow::Error::new(e).context(format!(
                        "listing the job folder {}: its jobs are not checked",
                        a.display()
                    ))),
                )),
            }
        } else {
            out.push((a.clone(), Ok(())));
        }
    }
    out
}

/// What `job check` found for one job file.
enum Checked {
    /// The file and the job's record were read: `overdue` says why it is late, if it is.
    Job {
        job: Box<JobFile>,
        rec: Option<RunRecord>,
        overdue: Option<String>,
    },
    /// The file (or its record) could not be read: no job of it runs until it is fixed.
    Bad(String),
}

/// One job file checked at `now`.
fn check_file(f: &Path, dir: &Path, now: i64) -> anyhow::Result<Checked> {
    let job = JobFile::load(f)?;
    // What `job run` and `job plan` refuse is a bad file here too.
    if let JobKind::Backup(_) = job.kind() {
        backup_options(&job, false).with_context(|| format!("job file {}", f.display()))?;
    }
    // A job that never ran counts from when its file was written.
    let written = std::fs::metadata(f)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading the modification time of {}", f.display()))?;
    let written = bulwark_time::UnixTime::from_system(written).secs();
    let rec = RunRecord::load(dir, &job.name).with_context(|| {
        format!(
            "job file {}: the run record of job {}",
            f.display(),
            job.name
        )
    })?;
    let mut why = overdue(
        &job.name,
        rec.as_ref(),
        written,
        job.alert_after_secs(),
        now,
    );
    if let (Some(w), None) = (&mut why, &rec) {
        let unit = f
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default();
        w.push_str(&format!(
            "; is bulwark-job@{unit}.timer enabled? (systemctl enable --now \
             bulwark-job@{unit}.timer)"
        ));
    }
    Ok(Checked::Job {
        job: Box::new(job),
        rec,
        overdue: why,
    })
}

/// What a job file that cannot be read means, and what to do.
const NOT_RUN_UNTIL_FIXED: &str = "no job of this file runs until it is fixed \
    (`bulwark job plan FILE` shows whether a job file parses)";

/// Where `job check` remembers when it last sent each `backup_missed`.
fn sent_path(dir: &Path) -> PathBuf {
    dir.join("job-check-sent.json")
}

fn run_check(files: &[PathBuf], state: &StateArgs, out: &Output) -> anyhow::Result<i32> {
    use bulwark_notify::dedup::Sent;
    use bulwark_notify::Event;
    let dir = state_dir(state.state_dir.as_deref());
    let t = now();
    // A lasting overdue job is sent when it becomes overdue, then every repeat_hours.
    let repeat = bulwark_notify::Config::find(state.notify_config.as_deref())
        .ok()
        .flatten()
        .and_then(|c| c.repeat_hours)
        .unwrap_or(24);
    let repeat = i64::from(repeat) * 3600;
    let mut sent = Sent::load(&sent_path(&dir));
    let mut active = Vec::new();
    let mut notify = |subject: &str, message: &str| -> bool {
        active.push((Event::BackupMissed, subject.to_string()));
        if !sent.due(Event::BackupMissed, subject, t, repeat) {
            return false;
        }
        crate::notify::send(
            state.notify_config.as_deref(),
            Event::BackupMissed,
            subject,
            message,
        );
        sent.mark(Event::BackupMissed, subject, t);
        true
    };
    let mut rows = Vec::new();
    let (mut late, mut bad) = (0, 0);
    for (f, listed) in job_files(files) {
        let checked = listed
            .and_then(|()| check_file(&f, &dir, t))
            .unwrap_or_else(|e| Checked::Bad(format!("{e:#}").trim_end().to_string()));
        match checked {
            Checked::Bad(error) => {
                bad += 1;
                let notified = notify(
                    &f.display().to_string(),
                    &format!("{error}; {NOT_RUN_UNTIL_FIXED}"),
                );
                if !out.json {
                    outln!("BAD     {error}\n        {NOT_RUN_UNTIL_FIXED}");
                }
                rows.push(
                    json!({"file": f, "job": null, "error": error, "overdue": null,
                    "last_success_unix": null, "notified": notified}),
                );
            }
            Checked::Job { job, rec, overdue } => {
                let mut notified = false;
                if let Some(w) = &overdue {
                    late += 1;
                    notified = notify(&job.name, w);
                }
                if !out.json {
                    match &overdue {
                        Some(w) => outln!("OVERDUE {w}"),
                        None => outln!(
                            "ok      job {}: last success {}",
                            job.name,
                            rec.as_ref()
                                .and_then(|r| r.last_success_unix)
                                .map(utc)
                                .unwrap_or_else(|| match &rec {
                                    // Within the alert interval since the first run began.
                                    Some(_) => {
                                        "never (runs so far failed or did not finish)".into()
                                    }
                                    // Within the alert interval since the file was written.
                                    None => "never (no run yet)".into(),
                                })
                        ),
                    }
                }
                rows.push(
                    json!({"file": f, "job": job.name, "error": null, "overdue": overdue,
                    "last_success_unix": rec.as_ref().and_then(|r| r.last_success_unix),
                    "notified": notified}),
                );
            }
        }
    }
    // A job back within its interval is news again the next time it is late.
    sent.retain_active(&active);
    if let Err(e) = sent.save(&sent_path(&dir)) {
        eprintln!(
            "warning: {e}; an overdue job may be notified again at the next check \
             (repeat_hours not kept)"
        );
    }
    if out.json {
        out.json(&json!({"jobs": rows, "overdue": late, "bad_files": bad}));
    }
    Ok(if late > 0 || bad > 0 {
        EXIT_DAMAGE
    } else {
        EXIT_OK
    })
}

/// Runs `bulwark job`.
pub fn run(a: Args, config_dir: &Path, out: &Output) -> anyhow::Result<i32> {
    match a.action {
        Action::Plan { file, runs } => {
            let job = JobFile::load(&file)?;
            let JobKind::Backup(disks) = job.kind() else {
                anyhow::bail!(
                    "job file {}: a verify or copy job has no backup plan; `bulwark job run` it",
                    file.display()
                );
            };
            // What `job run` would refuse, `job plan` refuses too.
            backup_options(&job, false)?;
            let place = Place::open(&job, &file, config_dir)?;
            let mut all = Vec::new();
            for d in &disks {
                let state = place.state(&d.job)?;
                let p: Vec<_> = plan(job.schedule(), &state, now(), runs)
                    .into_iter()
                    .map(|(t, d)| (t, for_place(d, &place)))
                    .collect();
                if !out.json {
                    outln!("job {} (one run a day from now):", d.job);
                    for (t, dec) in &p {
                        outln!(
                            "  {}  {:14}  {}",
                            &utc(*t)[..10],
                            dec.kind.as_str(),
                            dec.reason
                        );
                    }
                }
                let v: Vec<_> = p
                    .iter()
                    .map(|(t, d)| json!({"at": utc(*t), "kind": d.kind.as_str(), "reason": d.reason}))
                    .collect();
                all.push(json!({"job": d.job, "disk": d.disk, "runs": v}));
            }
            if out.json {
                // One disk: the shape it always had; several: one entry per disk.
                if all.len() == 1 {
                    out.json(&all[0]);
                } else {
                    out.json(&json!({"job": job.name, "disks": all}));
                }
            }
            Ok(EXIT_OK)
        }
        Action::Run { file, state } => {
            let job = match JobFile::load(&file) {
                Ok(j) => j,
                Err(e) => {
                    let e = anyhow::Error::new(e);
                    if out.json {
                        out.json(&unreadable_json(&e));
                    }
                    return Err(e);
                }
            };
            let dir = state_dir(state.state_dir.as_deref());
            let ran = match job.kind() {
                JobKind::Backup(disks) => run_backup(&job, &file, disks, config_dir, &state, out),
                JobKind::Verify(spec) => {
                    let spec = spec.clone();
                    run_verify(&job, &spec, config_dir, &state, out)
                }
                JobKind::Copy(spec) => {
                    let spec = spec.clone();
                    let notify = state.notify_config.as_deref();
                    super::copy::run_job(&job, &spec, config_dir, &dir, notify, out)
                }
            };
            // A run that could not even record its start: nothing else happened.
            let ran = match ran {
                Ok(r) => r,
                Err(e) => {
                    if out.json {
                        let mut v = unreadable_json(&e);
                        v["job"] = json!(job.name);
                        v["job_kind"] = json!(kind_name(&job));
                        v["repository"] = json!(job.repository);
                        out.json(&v);
                        return Ok(bulwark_cli_common::exit_code_of(&e));
                    }
                    return Err(e);
                }
            };
            if out.json {
                out.json(&run_json(&job, &dir, &ran));
                return Ok(ran.code);
            }
            match ran.error {
                // Recorded (and notified); said once, on standard error, as other errors are.
                Some(e) => Err(e),
                None => Ok(ran.code),
            }
        }
        Action::Check { files, state } => run_check(&files, &state, out),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_example_job_files_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/jobs");
        let job = bulwark_jobs::JobFile::load(&dir.join("web01.toml")).unwrap();
        assert_eq!(job.name, "web01");
        assert_eq!(job.schedule().active_full_every_weeks, 4);
        assert_eq!(
            job.schedule().synthetic_full_day,
            Some(bulwark_jobs::Weekday::Sunday)
        );
        assert_eq!(
            job.target(),
            bulwark_jobs::Target::Network("backup.example.org:6162".into())
        );
        let db = bulwark_jobs::JobFile::load(&dir.join("db01.toml")).unwrap();
        assert_eq!(db.disk_jobs().len(), 2);
        let v = bulwark_jobs::JobFile::load(&dir.join("verify.toml")).unwrap();
        assert!(matches!(v.kind(), bulwark_jobs::JobKind::Verify(_)));
    }
}
