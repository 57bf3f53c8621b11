//! The repository a client command works on, parsed once from `--repo`: a local folder, or a
//! repository service reached over the network with this client's credentials. Each
//! operation returns a report (`Serialize`, printed as JSON with `--json`); the command
//! prints it once, whichever side produced it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulwark_engine::{
    backup_local_source, BackupOptions, Counters, RestoreOptions, Source, WriteKey,
};
use bulwark_format::PointId;
use bulwark_remote::RemoteAddr;
use bulwark_repository::Repository;
use serde::Serialize;

use crate::output::Output;

/// Where `--repo` points.
pub enum Repo {
    /// A repository folder on this machine.
    Local(PathBuf),
    /// A repository service, with the folder of this client's credentials.
    Remote {
        addr: RemoteAddr,
        config_dir: PathBuf,
    },
}

/// What `bulwark backup` did.
#[derive(Serialize)]
pub struct BackupReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    pub job: String,
    pub point: String,
    pub chain: String,
    pub kind: &'static str,
    pub disk_size: u64,
    pub block_size: u32,
    /// blocks_read, blocks_zero, blocks_unchanged, blocks_new, bytes_read,
    /// bytes_new_plain, bytes_stored.
    #[serde(flatten)]
    pub counters: Counters,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub root_digest: String,
    pub created_unix: i64,
    pub immutable: bool,
    pub expiry_unix: Option<i64>,
    pub full_reason: Option<String>,
    pub synthetic_full: Option<SynthReport>,
    /// The immutability service's clock alert while one lasts.
    pub clock_alert: Option<String>,
    /// Changed-block tracking of live sources (docs/sources.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cbt: Option<bulwark_engine::CbtReport>,
}

/// A synthetic full built right after a backup.
#[derive(Serialize)]
pub struct SynthReport {
    pub point: String,
    pub chain: String,
    pub method: &'static str,
    pub fallback_reason: Option<String>,
    pub blocks: u64,
    pub bytes_cloned: u64,
    pub bytes_copied: u64,
    pub seconds: f64,
    pub path: PathBuf,
    pub immutable: bool,
    pub expiry_unix: Option<i64>,
}

/// What `bulwark restore` did.
#[derive(Serialize)]
pub struct RestoreReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub job: String,
    pub point: String,
    pub target: PathBuf,
    pub disk_size: u64,
    pub blocks_written: u64,
    pub bytes_written: u64,
    pub seconds: f64,
}

/// What `bulwark list` found.
#[derive(Serialize)]
pub struct ListReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub jobs: Vec<JobListing>,
}

/// One job's restore points, oldest first.
#[derive(Serialize)]
pub struct JobListing {
    pub job: String,
    pub points: Vec<PointListing>,
    pub unreadable: Vec<Unreadable>,
}

/// One restore point in a listing. Points only the S3 tier holds carry what their record
/// and id say (no sizes).
#[derive(Serialize)]
pub struct PointListing {
    pub point: String,
    pub chain: String,
    pub parent: Option<String>,
    pub kind: &'static str,
    pub created_unix: i64,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_blocks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<&'static str>,
    /// `local` or `tier` (local repositories only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<&'static str>,
    /// The client that made it (repository services only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// When verify last re-read it (local repositories; `REPO/health/verified.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_verified_unix: Option<i64>,
    /// `symmetric` or `write-only` for an encrypted point (local repositories), with the
    /// fingerprint of the key that reads it (`bulwark key show`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
}

impl PointListing {
    /// What a point's id and record say: its creation time also as UTC text, no parent for
    /// [`PointId::NONE`], no sizes, location or verify time yet.
    fn bare(
        point: PointId,
        chain: PointId,
        parent: PointId,
        kind: &'static str,
        created_unix: i64,
    ) -> PointListing {
        PointListing {
            point: point.to_hex(),
            chain: chain.to_hex(),
            parent: (!parent.is_none()).then(|| parent.to_hex()),
            kind,
            created_unix,
            created: bulwark_cli_common::utc(created_unix),
            disk_size: None,
            block_size: None,
            file_bytes: None,
            stored_bytes: None,
            new_bytes: None,
            new_blocks: None,
            root_digest: None,
            retention: None,
            location: None,
            client: None,
            last_verified_unix: None,
            encryption: None,
            key_fingerprint: None,
        }
    }
}

/// A file in the store that could not be read as a restore point.
#[derive(Serialize)]
pub struct Unreadable {
    pub path: PathBuf,
    pub error: String,
}

/// What `bulwark verify` found.
#[derive(Serialize)]
pub struct VerifyReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub points_checked: u64,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub damaged: Vec<Damaged>,
    pub clean: bool,
}

/// One damaged restore point.
#[derive(Serialize)]
pub struct Damaged {
    pub job: String,
    pub point: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub problems: Vec<String>,
    pub blocks: Vec<u64>,
    /// Damaged blocks beyond those listed.
    pub more_blocks: u64,
}

impl Repo {
    /// Parses `--repo` once: a folder that exists, or `bulwark://HOST:PORT` / `HOST:PORT`.
    pub fn parse(arg: &Path, config_dir: &Path) -> Repo {
        match bulwark_remote::parse_repo_arg(arg) {
            bulwark_remote::RepoTarget::Remote(addr) => Repo::Remote {
                addr,
                config_dir: config_dir.to_path_buf(),
            },
            bulwark_remote::RepoTarget::Local(p) => Repo::Local(p),
        }
    }

    /// The repository service's address, for reports.
    fn remote_name(&self) -> Option<String> {
        match self {
            Repo::Remote { addr, .. } => Some(addr.to_string()),
            Repo::Local(_) => None,
        }
    }

    /// A new restore point of `job` from `source`; a synthetic full after it when asked
    /// (local repositories), encrypted with `key` when one is given (docs/encryption.md).
    pub fn backup_with(
        &self,
        job: &str,
        source: &Path,
        opts: &BackupOptions,
        synthetic_full: bool,
        key: Option<&WriteKey>,
        out: &Output,
    ) -> anyhow::Result<BackupReport> {
        let (path, config_dir, addr) = match self {
            Repo::Local(p) => return backup_local(p, job, source, opts, synthetic_full, key, out),
            Repo::Remote { addr, config_dir } => (source, config_dir, addr),
        };
        if synthetic_full {
            anyhow::bail!("--synthetic-full builds on the repository host: run `bulwark-repo synthesize` there");
        }
        let size = Source::open(path).map(|s| s.size).unwrap_or(0);
        let pb = out.progress(size, "backup");
        let s = bulwark_remote::backup_remote_with(config_dir, addr, job, path, opts, key, &|n| {
            pb.inc(n)
        })
        .with_context(|| format!("backing up {} as job {job:?} to {addr}", path.display()))?;
        pb.finish_and_clear();
        Ok(remote_report(addr, job, &s, None))
    }

    /// Restores a point of `job` (the latest when `point` is `None`) to `target`.
    /// With `key` (the symmetric key file or the private restore key) for an encrypted point.
    pub fn restore_with(
        &self,
        job: &str,
        point: Option<PointId>,
        target: &Path,
        opts: &RestoreOptions,
        key: Option<&bulwark_crypto::KeyFile>,
        out: &Output,
    ) -> anyhow::Result<RestoreReport> {
        let pb = out.progress(0, "restore");
        let s = match self {
            Repo::Local(p) => {
                let repo = open_with_tier(p)?;
                bulwark_engine::restore_local_with(&repo, job, point, target, opts, key, &|n| {
                    pb.inc(n)
                })
                .with_context(|| format!("restoring job {job:?} to {}", target.display()))?
            }
            Repo::Remote { addr, config_dir } => bulwark_remote::restore_remote_with(
                config_dir,
                addr,
                job,
                point,
                target,
                opts,
                key,
                &|n| pb.inc(n),
            )
            .with_context(|| {
                format!("restoring job {job:?} from {addr} to {}", target.display())
            })?,
        };
        pb.finish_and_clear();
        Ok(RestoreReport {
            repository: self.remote_name(),
            job: job.to_string(),
            point: s.point.to_hex(),
            target: target.to_path_buf(),
            disk_size: s.disk_size,
            blocks_written: s.blocks_written,
            bytes_written: s.bytes_written,
            seconds: s.elapsed.as_secs_f64().max(1e-9),
        })
    }

    /// The jobs (or one job) and their restore points.
    pub fn list(&self, job: Option<&str>) -> anyhow::Result<ListReport> {
        let jobs = match self {
            Repo::Local(p) => list_local(p, job)?,
            Repo::Remote { addr, config_dir } => {
                let names = match job {
                    Some(j) => vec![j.to_string()],
                    None => bulwark_remote::list_jobs(config_dir, addr)
                        .with_context(|| format!("listing jobs on {addr}"))?,
                };
                let mut jobs = Vec::new();
                for name in names {
                    let points = bulwark_remote::list_points(config_dir, addr, &name)
                        .with_context(|| format!("listing job {name:?} on {addr}"))?;
                    let points = points
                        .iter()
                        .map(|m| PointListing {
                            disk_size: Some(m.disk_size),
                            block_size: Some(m.block_size),
                            file_bytes: Some(m.file_bytes),
                            stored_bytes: Some(m.stored_bytes),
                            new_bytes: Some(m.new_bytes),
                            new_blocks: Some(m.new_blocks),
                            root_digest: Some(m.root.to_hex()),
                            retention: Some(m.retention.as_str()),
                            client: Some(m.client.clone()),
                            ..PointListing::bare(
                                m.point,
                                m.chain,
                                m.parent,
                                m.kind.as_str(),
                                m.created_unix,
                            )
                        })
                        .collect();
                    jobs.push(JobListing {
                        job: name,
                        points,
                        unreadable: vec![],
                    });
                }
                jobs
            }
        };
        Ok(ListReport {
            repository: self.remote_name(),
            jobs,
        })
    }

    /// Re-reads every stored block (of one job) and names each damaged restore point.
    pub fn verify(
        &self,
        job: Option<&str>,
        threads: usize,
        out: &Output,
    ) -> anyhow::Result<VerifyReport> {
        let damaged_of = |job: &str,
                          point: Option<PointId>,
                          path: Option<PathBuf>,
                          problems: &[String],
                          blocks: &[u64],
                          more_blocks: u64| Damaged {
            job: job.to_string(),
            point: point.map(|p| p.to_hex()),
            path,
            problems: problems.to_vec(),
            blocks: blocks.to_vec(),
            more_blocks,
        };
        let (points_checked, blocks_checked, bytes_checked, damaged) = match self {
            Repo::Local(p) => {
                let repo = open_with_tier(p)?;
                let pb = out.progress(0, "verify");
                let r = repo.verify(job, threads, &|n| pb.inc(n))?;
                pb.finish_and_clear();
                let damaged: Vec<Damaged> = r
                    .damaged
                    .iter()
                    .map(|d| {
                        let path = Some(d.path.clone());
                        damaged_of(&d.job, d.point, path, &d.problems, &d.blocks, 0)
                    })
                    .collect();
                (r.points_checked, r.blocks_checked, r.bytes_checked, damaged)
            }
            Repo::Remote { addr, config_dir } => {
                let r = bulwark_remote::verify_remote(config_dir, addr, job)
                    .with_context(|| format!("verifying on {addr}"))?;
                let damaged: Vec<Damaged> = r
                    .damaged
                    .iter()
                    .map(|d| {
                        damaged_of(&d.job, d.point, None, &d.problems, &d.blocks, d.more_blocks)
                    })
                    .collect();
                (r.points_checked, r.blocks_checked, r.bytes_checked, damaged)
            }
        };
        Ok(VerifyReport {
            repository: self.remote_name(),
            points_checked,
            blocks_checked,
            bytes_checked,
            clean: damaged.is_empty(),
            damaged,
        })
    }
}

/// Opens a local repository.
pub fn open_local(path: &Path) -> anyhow::Result<Repository> {
    Repository::open(path).with_context(|| format!("opening repository {}", path.display()))
}

/// Opens a local repository and attaches its S3 tier, so that restore points missing locally
/// are read from their copies.
fn open_with_tier(path: &Path) -> anyhow::Result<Repository> {
    let mut repo = open_local(path)?;
    bulwark_tier_s3::attach(&mut repo)
        .with_context(|| format!("reading the tier settings of {}", path.display()))?;
    Ok(repo)
}

fn backup_local(
    path: &Path,
    job: &str,
    source: &Path,
    opts: &BackupOptions,
    synthetic_full: bool,
    key: Option<&WriteKey>,
    out: &Output,
) -> anyhow::Result<BackupReport> {
    let opened = crate::cmd::become_repo_owner(path, source)?;
    let repo = open_local(path)?;
    let src = match opened {
        Some(s) => s,
        None => Source::open(source).map_err(|e| match crate::cmd::source_advice(&e) {
            Some(advice) => anyhow::anyhow!("{e}; {advice}"),
            None => e.into(),
        })?,
    };
    let pb = out.progress(src.size, "backup");
    let s = match key {
        Some(k) => bulwark_engine::backup_local_encrypted(&repo, job, src, opts, k, &|n| pb.inc(n)),
        None => backup_local_source(&repo, job, src, opts, &|n| pb.inc(n)),
    }
    .with_context(|| format!("backing up {} as job {job:?}", source.display()))?;
    pb.finish_and_clear();
    let synth = synthetic_full
        .then(|| synthesize(&repo, job, &s))
        .transpose()?;
    Ok(local_report(&repo, &s, synth, None))
}

/// Builds a synthetic full of `job` in `repo` right after `backup` (`--synthetic-full`); a
/// failure says that the backup itself was kept.
pub(crate) fn synthesize(
    repo: &Repository,
    job: &str,
    backup: &bulwark_engine::BackupSummary,
) -> anyhow::Result<SynthReport> {
    let o = repo.synthesize(job).with_context(|| {
        format!(
            "the backup was stored ({} {}), but building a synthetic full of job {job:?} after it failed",
            backup.sealed.meta.kind.as_str(),
            backup.sealed.meta.point
        )
    })?;
    Ok(SynthReport {
        point: o.sealed.meta.point.to_hex(),
        chain: o.sealed.meta.chain.to_hex(),
        method: o.method.as_str(),
        fallback_reason: o.fallback_reason.clone(),
        blocks: o.blocks,
        bytes_cloned: o.bytes_cloned,
        bytes_copied: o.bytes_copied,
        seconds: o.elapsed.as_secs_f64(),
        path: o.sealed.path.clone(),
        immutable: o.sealed.immutable,
        expiry_unix: o.sealed.expiry,
    })
}

/// The report of a backup sealed in the local repository `repo`.
pub(crate) fn local_report(
    repo: &Repository,
    s: &bulwark_engine::BackupSummary,
    synthetic_full: Option<SynthReport>,
    cbt: Option<bulwark_engine::CbtReport>,
) -> BackupReport {
    let m = &s.sealed.meta;
    BackupReport {
        repository: None,
        client: None,
        job: m.job.clone(),
        point: m.point.to_hex(),
        chain: m.chain.to_hex(),
        kind: m.kind.as_str(),
        disk_size: m.disk_size,
        block_size: m.block_size,
        counters: s.counters.clone(),
        seconds: s.elapsed.as_secs_f64().max(1e-9),
        path: Some(s.sealed.path.clone()),
        root_digest: s.sealed.root.to_hex(),
        created_unix: m.created_unix_secs,
        immutable: s.sealed.immutable,
        expiry_unix: s.sealed.expiry,
        full_reason: s.full_reason.clone(),
        synthetic_full,
        clock_alert: repo.clock_alert(),
        cbt,
    }
}

/// The report of a backup sealed by the repository service at `addr`.
pub(crate) fn remote_report(
    addr: &RemoteAddr,
    job: &str,
    s: &bulwark_remote::RemoteBackupSummary,
    cbt: Option<bulwark_engine::CbtReport>,
) -> BackupReport {
    let m = &s.sealed.summary;
    BackupReport {
        repository: Some(addr.to_string()),
        client: Some(s.client.clone()),
        job: job.to_string(),
        point: m.point.to_hex(),
        chain: m.chain.to_hex(),
        kind: m.kind.as_str(),
        disk_size: m.disk_size,
        block_size: m.block_size,
        counters: s.counters.clone(),
        seconds: s.elapsed.as_secs_f64().max(1e-9),
        path: None,
        root_digest: m.root.to_hex(),
        created_unix: m.created_unix,
        immutable: s.sealed.immutable,
        expiry_unix: s.sealed.expiry,
        full_reason: s.full_reason.clone(),
        synthetic_full: None,
        clock_alert: (!s.sealed.notice.is_empty()).then(|| s.sealed.notice.clone()),
        cbt,
    }
}

fn list_local(path: &Path, job: Option<&str>) -> anyhow::Result<Vec<JobListing>> {
    let mut repo = open_local(path)?;
    // Points only the S3 tier holds (after `tier import`, or moved) are listed too. The
    // tier's records are local files: listing makes no request to the store.
    if let Err(e) = bulwark_tier_s3::attach(&mut repo) {
        eprintln!(
            "warning: the S3 tier's records are unreadable, listing local files only: {}",
            bulwark_repository::error_chain(&e)
        );
    }
    let names = match job {
        Some(j) => vec![j.to_string()],
        None => repo.jobs()?,
    };
    let verified = bulwark_jobs::verified::Verified::load(repo.root()).unwrap_or_else(|e| {
        eprintln!("warning: {e}; verify times are not shown");
        Default::default()
    });
    let mut jobs = Vec::new();
    for name in names {
        let scan = repo.scan_job(&name)?;
        let mut points: Vec<PointListing> = scan
            .points
            .iter()
            .map(|p| {
                let m = &p.meta;
                let enc = bulwark_engine::record_of(m).ok().flatten();
                PointListing {
                    encryption: enc.as_ref().map(|r| r.mode.as_str()),
                    key_fingerprint: enc.as_ref().map(|r| hex::encode(r.key_id)),
                    disk_size: Some(m.disk_size),
                    block_size: Some(m.block_size),
                    file_bytes: Some(p.file_size),
                    stored_bytes: Some(m.stats.bytes_stored),
                    new_bytes: Some(m.stats.bytes_new_plain),
                    new_blocks: Some(m.stats.blocks_new),
                    root_digest: Some(p.root.to_hex()),
                    retention: Some(m.retention.as_str()),
                    location: Some("local"),
                    last_verified_unix: verified.point(&name, &m.point.to_hex()),
                    ..PointListing::bare(
                        m.point,
                        m.chain,
                        m.parent,
                        m.kind.as_str(),
                        m.created_unix_secs,
                    )
                }
            })
            .collect();
        for (chain, point) in tier_only_points(&repo, &name, &scan)? {
            let kind = if chain == point {
                "full"
            } else {
                "incremental"
            };
            points.push(PointListing {
                location: Some("tier"),
                ..PointListing::bare(point, chain, PointId::NONE, kind, created_unix(point))
            });
        }
        let unreadable = scan
            .unreadable
            .iter()
            .map(|(p, e)| Unreadable {
                path: p.clone(),
                error: bulwark_repository::error_chain(e),
            })
            .collect();
        jobs.push(JobListing {
            job: name,
            points,
            unreadable,
        });
    }
    Ok(jobs)
}

/// (chain, point) of the restore points of `job` that only the attached tier holds, oldest
/// first.
fn tier_only_points(
    repo: &Repository,
    job: &str,
    scan: &bulwark_repository::JobScan,
) -> anyhow::Result<Vec<(PointId, PointId)>> {
    let Some(r) = repo.remote() else {
        return Ok(vec![]);
    };
    let local: std::collections::HashSet<PointId> = scan
        .points
        .iter()
        .map(|p| p.meta.point)
        .chain(scan.unreadable.iter().filter_map(|(p, _)| {
            bulwark_immut_msg::layout::parse_point_file_name(&p.file_name()?.to_string_lossy())
        }))
        .collect();
    let mut v: Vec<_> = r
        .points(job)
        .map_err(|e| anyhow::anyhow!("listing {}: {e}", r.describe()))?
        .into_iter()
        .filter(|(_, p)| !local.contains(p))
        .collect();
    v.sort_by_key(|(_, p)| *p);
    Ok(v)
}

/// Creation time a point id carries (its leading nanoseconds by the repository's clock).
fn created_unix(p: PointId) -> i64 {
    (p.unix_nanos() / 1_000_000_000) as i64
}
