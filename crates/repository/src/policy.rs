//! Per-job retention policies on the repository, and applying the retention plan.

use std::path::PathBuf;

use bulwark_format::{PointId, PointKind, RetentionClass};
use bulwark_immut_msg::{layout, ErrorCode, ImmutClient, Target};

use crate::points::point_files;
use crate::retention::{gfs_class_for_new_full, gfs_lifetime_secs, plan, Mark, PointFacts, Policy};
use crate::seal_immutd::Ledger;
use crate::{error_chain, fsync_dir, write_atomic, RepoError, Repository, Result};

const MAX_POLICY_LEN: u64 = 16 * 1024;

/// Seconds since the epoch encoded in a point id (the repository's clock at creation).
pub(crate) fn id_time(p: PointId) -> i64 {
    (p.unix_nanos() / 1_000_000_000) as i64
}

/// What applying retention did (or would do, with `dry_run`).
#[derive(Debug, Default)]
pub struct RetentionReport {
    pub job: String,
    /// `None`: the job has no policy, and nothing is removed.
    pub policy: Option<Policy>,
    pub marks: Vec<(Mark, PointFacts)>,
    pub removed: Vec<PointId>,
    /// Points whose removal the immutability service refused, with its reason.
    pub refused: Vec<(PointId, String)>,
}

impl Repository {
    fn policy_path(&self, job: &str) -> PathBuf {
        self.root().join("policies").join(format!("{job}.toml"))
    }

    /// The retention policy of `job`, if one was set.
    pub fn policy(&self, job: &str) -> Result<Option<Policy>> {
        bulwark_format::validate_name("job", job).map_err(|e| RepoError::Usage(e.to_string()))?;
        let path = self.policy_path(job);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RepoError::io(&path, "reading")(e)),
        };
        if meta.len() > MAX_POLICY_LEN {
            return Err(RepoError::Config(format!(
                "{} is larger than 16 KiB",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(RepoError::io(&path, "reading"))?;
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| RepoError::Config(format!("{}: {e}", path.display())))
    }

    /// Sets the retention policy of `job`.
    pub fn set_policy(&self, job: &str, policy: &Policy) -> Result<()> {
        bulwark_format::validate_name("job", job).map_err(|e| RepoError::Usage(e.to_string()))?;
        if policy.keep_days == 0 && policy.keep_points == 0 {
            return Err(RepoError::Usage(
                "a policy must keep something: give --keep-days or --keep-points (or both)".into(),
            ));
        }
        let dir = self.root().join("policies");
        if !dir.exists() {
            std::fs::create_dir(&dir).map_err(RepoError::io(&dir, "creating"))?;
            fsync_dir(self.root())?;
        }
        let text = toml::to_string(policy).map_err(|e| RepoError::Config(e.to_string()))?;
        write_atomic(&self.policy_path(job), text.as_bytes())
    }

    /// The retention class of a new restore point, decided here from the job's policy (a
    /// client has no say): a full that is the first of its GFS year, month or week gets that
    /// class; everything else is regular. Also returns how long a GFS full must be protected.
    pub(crate) fn retention_for_new(
        &self,
        job: &str,
        kind: PointKind,
        created: i64,
    ) -> Result<(RetentionClass, Option<i64>)> {
        let Some(policy) = self.policy(job)? else {
            return Ok((RetentionClass::Regular, None));
        };
        if !kind.is_full() {
            return Ok((RetentionClass::Regular, None));
        }
        // A chain's id is its full's id, and ids carry their creation time.
        let mut fulls: Vec<i64> = point_files(self.root(), job)?
            .iter()
            .map(|(c, _, _)| id_time(*c))
            .collect();
        fulls.dedup();
        let class = gfs_class_for_new_full(&fulls, created, &policy);
        let until =
            (class != RetentionClass::Regular).then(|| created + gfs_lifetime_secs(class, &policy));
        Ok((class, until))
    }

    /// Plans retention for `job` at `now` and, unless `dry_run`, removes every chain none of
    /// whose points is kept — through the immutability service when one guards the
    /// repository, which checks the expiry itself and refuses anything unexpired.
    pub fn apply_retention(&self, job: &str, now: i64, dry_run: bool) -> Result<RetentionReport> {
        let mut report = RetentionReport {
            job: job.to_string(),
            policy: self.policy(job)?,
            ..Default::default()
        };
        let Some(policy) = report.policy else {
            return Ok(report);
        };
        let scan = self.scan_job(job)?;
        let mut ledger = match &self.config().immutd_socket {
            Some(s) => Some(Ledger::connect(s)?),
            None => None,
        };
        let mut facts = Vec::with_capacity(scan.points.len());
        for p in &scan.points {
            let expiry = match ledger.as_mut() {
                Some(l) => l.entry(p.meta.point)?.map(|e| e.expiry_unix),
                None => None,
            };
            facts.push(PointFacts {
                point: p.meta.point,
                chain: p.meta.chain,
                kind: p.meta.kind,
                created: p.meta.created_unix_secs,
                expiry,
            });
        }
        let marks = plan(&facts, &policy, now);
        report.marks = marks.iter().cloned().zip(facts.iter().copied()).collect();
        if dry_run {
            return Ok(report);
        }
        let mut client = match &self.config().immutd_socket {
            Some(s) => {
                Some(ImmutClient::connect(s).map_err(|e| RepoError::Config(error_chain(&e)))?)
            }
            None => None,
        };
        let mut chains: Vec<PointId> = marks.iter().map(|m| m.chain).collect();
        chains.dedup();
        for chain in chains {
            let members: Vec<&Mark> = marks.iter().filter(|m| m.chain == chain).collect();
            if members.iter().any(|m| m.keep()) {
                continue;
            }
            // Newest first, so an interrupted run never leaves an incremental without its parent.
            for m in members.iter().rev() {
                let path = layout::sealed_path(self.root(), job, chain, m.point);
                match client.as_mut() {
                    Some(c) => match c.delete(Target::Point(m.point)) {
                        Ok(_) => report.removed.push(m.point),
                        Err(e) => {
                            let why = error_chain(&e);
                            tracing::warn!(point = %m.point, %why, "the immutability service refused a removal");
                            report.refused.push((m.point, why));
                            if e.code() != Some(ErrorCode::NotFound) {
                                break;
                            }
                        }
                    },
                    None => {
                        std::fs::remove_file(&path).map_err(RepoError::io(&path, "removing"))?;
                        report.removed.push(m.point);
                    }
                }
            }
            if client.is_none() {
                let dir = layout::chain_dir(self.root(), job, chain);
                let _ = std::fs::remove_dir(&dir);
                fsync_dir(&layout::job_dir(self.root(), job))?;
            }
        }
        Ok(report)
    }
}
