//! Listing the restore points of a job from the sealed files themselves.

use std::path::{Path, PathBuf};

use bulwark_format::{Digest, PointId, PointMeta, PointReader};
use bulwark_immut_msg::layout;

use crate::{RepoError, Repository, Result};

/// What a sealed restore-point file says about itself.
#[derive(Clone, Debug)]
pub struct PointInfo {
    pub path: PathBuf,
    pub meta: PointMeta,
    pub root: Digest,
    /// Size of the file (logical bytes).
    pub file_size: u64,
}

/// The files of one job: those that open cleanly, and those that do not.
#[derive(Debug, Default)]
pub struct JobScan {
    /// Sorted by creation time (the id's leading bytes).
    pub points: Vec<PointInfo>,
    pub unreadable: Vec<(PathBuf, RepoError)>,
}

/// Restore-point files of a job as (chain, point, path), sorted by point id (creation time).
pub(crate) fn point_files(repo: &Path, job: &str) -> Result<Vec<(PointId, PointId, PathBuf)>> {
    let jdir = layout::job_dir(repo, job);
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&jdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(RepoError::io(&jdir, "listing")(e)),
    };
    for chain in rd {
        let chain = chain.map_err(RepoError::io(&jdir, "listing"))?;
        let Ok(chain_id) = chain.file_name().to_string_lossy().parse::<PointId>() else {
            continue;
        };
        let cdir = chain.path();
        for f in std::fs::read_dir(&cdir).map_err(RepoError::io(&cdir, "listing"))? {
            let f = f.map_err(RepoError::io(&cdir, "listing"))?;
            if let Some(id) = layout::parse_point_file_name(&f.file_name().to_string_lossy()) {
                out.push((chain_id, id, f.path()));
            }
        }
    }
    out.sort_by_key(|(_, p, _)| *p);
    Ok(out)
}

/// Opens a restore-point file and checks it sits where its metadata says it belongs.
pub(crate) fn open_checked(
    path: &Path,
    job: &str,
    chain: PointId,
    point: PointId,
) -> Result<PointReader> {
    let f = std::fs::File::open(path).map_err(RepoError::io(path, "opening"))?;
    check_opened(f, path, job, chain, point)
}

/// Reads a restore point's header and checks its metadata names `job`, `chain`, `point`.
fn check_opened(
    f: std::fs::File,
    path: &Path,
    job: &str,
    chain: PointId,
    point: PointId,
) -> Result<PointReader> {
    let r = PointReader::open(f).map_err(RepoError::format(path))?;
    if r.meta.job != job || r.meta.chain != chain || r.meta.point != point {
        return Err(RepoError::Format {
            path: path.to_path_buf(),
            source: bulwark_format::FormatError::Meta(format!(
                "file says job {:?}, chain {}, point {}: it was moved or replaced",
                r.meta.job, r.meta.chain, r.meta.point
            )),
        });
    }
    Ok(r)
}

/// What a job's restore points say of its encryption ([`Repository::job_encryption`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEncryption {
    /// No restore point, or the newest readable one is not encrypted.
    Plain,
    /// The encryption record (its bytes) of the newest readable point, or of a newer damaged
    /// one whose metadata still shows it.
    Encrypted(Vec<u8>),
}

impl JobEncryption {
    /// Why a backup of `job` without a key is refused, or `None` when it may go ahead. The
    /// same words locally and from the repository service.
    pub fn plain_refusal(&self, job: &str) -> Option<String> {
        match self {
            JobEncryption::Plain => None,
            JobEncryption::Encrypted(bytes) => {
                let (mode, fp, give) = match bulwark_format::EncryptionRecord::decode(bytes) {
                    Ok(r) => (
                        r.mode.as_str(),
                        r.fingerprint(),
                        match r.mode {
                            bulwark_format::KeyMode::Symmetric => {
                                "give its key file with --key KEYFILE (`key = \"…\"` in a job file)"
                            }
                            bulwark_format::KeyMode::WriteOnly => {
                                "give its public key with --public-key PUBLIC (`public_key = \"…\"` in a job file)"
                            }
                        },
                    ),
                    Err(_) => ("unreadable", "?".into(), "give its key (--key or --public-key)"),
                };
                Some(format!(
                    "job {job:?} is encrypted ({mode} key {fp}): {give}; an unencrypted backup of an encrypted job is refused, \
                     also as a new full (to stop encrypting this disk, back it up under a new job name); nothing was written"
                ))
            }
        }
    }
}

impl Repository {
    /// Like `point_files`, plus the points only the attached remote tier holds (flagged
    /// `true`; their path is where the local file would be).
    pub(crate) fn all_point_files(
        &self,
        job: &str,
    ) -> Result<Vec<(PointId, PointId, PathBuf, bool)>> {
        let mut out: Vec<_> = point_files(self.root(), job)?
            .into_iter()
            .map(|(c, p, path)| (c, p, path, false))
            .collect();
        if let Some(r) = self.remote() {
            let remote = r.points(job).map_err(|source| RepoError::Remote {
                what: r.describe(),
                source,
            })?;
            for (c, p) in remote {
                if !out.iter().any(|(_, q, _, _)| *q == p) {
                    out.push((c, p, self.point_path(job, c, p), true));
                }
            }
            out.sort_by_key(|(_, p, _, _)| *p);
        }
        Ok(out)
    }

    /// Opens a restore-point file, from the remote tier when it is missing locally.
    pub(crate) fn open_stored(
        &self,
        path: &Path,
        job: &str,
        chain: PointId,
        point: PointId,
    ) -> Result<PointReader> {
        match (std::fs::File::open(path), self.remote()) {
            (Ok(f), _) => check_opened(f, path, job, chain, point),
            (Err(e), Some(r)) if e.kind() == std::io::ErrorKind::NotFound => {
                let f = r
                    .fetch(job, chain, point)
                    .map_err(|source| RepoError::Remote {
                        what: format!("restore point {point} from {}", r.describe()),
                        source,
                    })?;
                check_opened(f, path, job, chain, point)
            }
            (Err(e), _) => Err(RepoError::io(path, "opening")(e)),
        }
    }

    /// Reads every restore point of `job`.
    pub fn scan_job(&self, job: &str) -> Result<JobScan> {
        let mut scan = JobScan::default();
        for (chain, point, path) in point_files(self.root(), job)? {
            match open_checked(&path, job, chain, point) {
                Ok(r) => {
                    let file_size = r.file().metadata().map(|m| m.len()).unwrap_or(0);
                    scan.points.push(PointInfo {
                        root: r.trailer.root_digest,
                        meta: r.meta,
                        path,
                        file_size,
                    });
                }
                Err(e) => scan.unreadable.push((path, e)),
            }
        }
        Ok(scan)
    }

    /// The newest restore point of a job, if any.
    pub fn latest_point(&self, job: &str) -> Result<Option<PointInfo>> {
        Ok(self.scan_job(job)?.points.pop())
    }

    /// What the job's restore points say of its encryption (docs/encryption.md): the record
    /// of its newest readable point, or of a newer damaged one whose metadata still shows
    /// one ([`bulwark_format::probe_damaged_meta`]). A job is encrypted from then on: a
    /// backup without its key is refused even where it would start a new chain (`--full`,
    /// another disk size or block size, a damaged newest point).
    pub fn job_encryption(&self, job: &str) -> Result<JobEncryption> {
        // Newest first, stopping at the first that reads: one file in the usual case.
        for (chain, point, path) in point_files(self.root(), job)?.into_iter().rev() {
            let record = match open_checked(&path, job, chain, point) {
                Ok(r) => {
                    return Ok(match r.meta.extension(bulwark_format::EXT_ENCRYPTION) {
                        Some(rec) => JobEncryption::Encrypted(rec.to_vec()),
                        None => JobEncryption::Plain,
                    })
                }
                Err(_) => std::fs::File::open(&path)
                    .ok()
                    .and_then(|f| bulwark_format::probe_damaged_meta(&f))
                    .and_then(|m| {
                        m.extension(bulwark_format::EXT_ENCRYPTION)
                            .map(<[u8]>::to_vec)
                    }),
            };
            if let Some(rec) = record {
                return Ok(JobEncryption::Encrypted(rec));
            }
        }
        Ok(JobEncryption::Plain)
    }

    /// True when `job` has no file at all: none in the store (readable or not) and none
    /// finished and waiting in `incoming/` to be sealed. Its name is then unused.
    pub fn job_is_unused(&self, job: &str) -> Result<bool> {
        if !point_files(self.root(), job)?.is_empty() {
            return Ok(false);
        }
        let dir = layout::incoming_dir(self.root());
        for ent in std::fs::read_dir(&dir).map_err(RepoError::io(&dir, "listing"))? {
            let ent = ent.map_err(RepoError::io(&dir, "listing"))?;
            if layout::parse_point_file_name(&ent.file_name().to_string_lossy()).is_none() {
                continue;
            }
            match std::fs::File::open(ent.path()).map(PointReader::open) {
                Ok(Ok(r)) if r.meta.job != job => {}
                // Unreadable: it might be this job's; keep the name.
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}
