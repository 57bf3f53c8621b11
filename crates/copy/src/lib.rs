//! Backup copy jobs (`docs/copy-jobs.md`): the restore points of one or more jobs copied from
//! a source repository to a target repository, each side a local folder or a repository
//! service reached over TLS.
//!
//! The receiving rules live in the target repository (`bulwark_repository::CopyReceiver`):
//! verbatim copies keep their root digest, blocks the target holds are not sent, a partial
//! copy resumes, a chain the target no longer holds continues as a new chain there. This crate
//! drives it: which points to copy, reading stored bytes from the source, bandwidth limit,
//! progress, the per-job summary, and `--verify`.
//!
//! Which points are copied: for each job, the source's points newer than the newest one the
//! target already holds (as itself or as a re-chained copy), oldest first; when the target
//! holds none, all of them. Points the target's retention removed are therefore never sent
//! again.

mod local;
mod net;
mod verify;

use std::time::{Duration, Instant};

use bulwark_format::{BlockNo, Digest, MapEntry, PointId, PointKind};
use bulwark_repository::{error_chain, CopyHead, CopyMode, CopyPlan, HeldPoint, RepoError};
use serde::Serialize;

pub use local::{LocalSource, LocalTarget};
pub use net::{NetSource, NetTarget};
pub use verify::{verify_copies, PointCheck, VerifyCopies, VerifyJob};

/// What went wrong in a copy.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Remote(#[from] bulwark_remote::RemoteError),
    #[error("{0}")]
    Usage(String),
    /// A source file that is damaged (exit code 1, like any damage): what and what to do.
    #[error("{0}")]
    Damaged(String),
}

impl CopyError {
    /// True when the target's filesystem is full (ENOSPC there, or the repository service's
    /// "repository full").
    pub fn is_no_space(&self) -> bool {
        match self {
            CopyError::Repo(r) => r.is_no_space(),
            CopyError::Remote(bulwark_remote::RemoteError::Refused { code, .. }) => {
                *code == bulwark_protocol::ErrorCode::RepositoryFull
            }
            _ => false,
        }
    }

    /// True when the error means stored data is damaged (exit code 1).
    pub fn is_damage(&self) -> bool {
        match self {
            CopyError::Repo(r) => r.is_damage(),
            CopyError::Remote(r) => r.is_damage(),
            CopyError::Usage(_) => false,
            CopyError::Damaged(_) => true,
        }
    }
}

impl From<bulwark_protocol::ProtocolError> for CopyError {
    fn from(e: bulwark_protocol::ProtocolError) -> Self {
        CopyError::Remote(e.into())
    }
}

/// Result type of this crate.
pub type Result<T, E = CopyError> = std::result::Result<T, E>;

/// A restore point the source offers.
#[derive(Clone, Debug)]
pub struct SourcePoint {
    pub point: PointId,
    pub chain: PointId,
    pub parent: PointId,
    pub kind: PointKind,
    pub root: Digest,
    pub created: i64,
}

/// The repository restore points are copied from.
pub trait Source {
    /// How to name it in messages (`/srv/repo`, `host:6162`).
    fn describe(&self) -> String;
    /// Jobs it holds (readable to this identity), sorted.
    fn jobs(&mut self) -> Result<Vec<String>>;
    /// A job's restore points, oldest first.
    fn points(&mut self, job: &str) -> Result<Vec<SourcePoint>>;
    /// Everything of a point but its blocks.
    fn head(&mut self, job: &str, point: PointId) -> Result<CopyHead>;
    /// The stored bytes of `blocks` (ascending) of `point`, in that order.
    fn read(
        &mut self,
        job: &str,
        point: PointId,
        blocks: &[BlockNo],
        each: &mut dyn FnMut(&MapEntry, &[u8]) -> Result<()>,
    ) -> Result<()>;
    /// Re-reads every stored block of `job` (and checks its ledger entries when guarded).
    fn verify(&mut self, job: &str) -> Result<Vec<String>>;
}

/// What the target did with a point.
#[derive(Clone, Debug)]
pub struct Finished {
    pub mode: CopyMode,
    /// The point as held on the target (the source's id for a verbatim copy).
    pub point: PointId,
    pub chain: PointId,
    pub root: Digest,
    pub immutable: bool,
    pub expiry: Option<i64>,
    /// The retention class the target's own policy gives the point (`None`: not known, e.g.
    /// a held point).
    pub retention: Option<bulwark_format::RetentionClass>,
}

/// The repository restore points are copied to; one copy at a time.
pub trait Target {
    /// How to name it in messages.
    fn describe(&self) -> String;
    /// What it holds of `job`, with copy origins.
    fn held(&mut self, job: &str) -> Result<Vec<HeldPoint>>;
    /// Starts the copy of one point: the target says which blocks it needs.
    fn begin(&mut self, job: &str, head: &CopyHead) -> Result<CopyPlan>;
    /// The stored bytes of the next needed block.
    fn put(&mut self, e: &MapEntry, stored: &[u8]) -> Result<()>;
    /// Ends the copy of the point: checked, durable, sealed.
    fn finish(&mut self) -> Result<Finished>;
    /// Lets go of a copy that failed, so that what it holds (a re-chained copy's temporary
    /// file, the open partial file) is released now rather than at the next point.
    fn abandon(&mut self) {}
    /// Re-reads every stored block of `job` (and checks its ledger entries when guarded).
    fn verify(&mut self, job: &str) -> Result<Vec<String>>;
}

/// Options of a copy run.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Jobs to copy; empty: every job of the source.
    pub jobs: Vec<String>,
    /// Bytes per second sent at most; `None`: no limit.
    pub bandwidth: Option<u64>,
}

/// One restore point's copy.
#[derive(Clone, Debug, Serialize)]
pub struct PointReport {
    pub source_point: String,
    pub target_point: String,
    /// `verbatim`, `new-chain`, `rechained-incremental` or `held`.
    pub mode: &'static str,
    pub root_digest: String,
    pub source_root_digest: String,
    pub bytes_sent: u64,
    pub bytes_local: u64,
    pub bytes_resumed: u64,
    pub immutable: bool,
    pub expiry_unix: Option<i64>,
    /// `regular`, `weekly`, `monthly` or `yearly`: the class the target's own policy gives
    /// the point, which its GFS lifetime there follows (null when not known, e.g. held). A
    /// verbatim copy's file keeps the class the source recorded in it (what `bulwark list`
    /// shows); the target never reads that one.
    pub retention: Option<&'static str>,
}

/// One job's summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobReport {
    pub job: String,
    pub points_copied: u64,
    /// Source points the target already held, or older than what it holds.
    pub points_skipped: u64,
    pub points_failed: u64,
    /// Stored bytes sent, including those of a point that failed (and was not kept).
    pub bytes_sent: u64,
    pub bytes_local: u64,
    pub bytes_resumed: u64,
    pub points: Vec<PointReport>,
    /// Why the job stopped, when it did.
    pub error: Option<String>,
    /// The source point at which it stopped.
    pub failed_point: Option<String>,
    /// True when it stopped because the target's filesystem is full: the point's partial
    /// copy was removed there, and running again only helps once the target has space.
    pub target_full: bool,
    /// True when the error is damage to stored data.
    #[serde(skip)]
    pub damaged: bool,
}

/// A whole copy run.
#[derive(Clone, Debug, Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    /// True when every job copied without failure (as [`CopyReport::ok`]).
    pub ok: bool,
    pub jobs: Vec<JobReport>,
    pub bytes_sent: u64,
    pub seconds: f64,
}

impl CopyReport {
    /// True when every job copied without failure.
    pub fn ok(&self) -> bool {
        self.jobs.iter().all(|j| j.error.is_none())
    }
}

/// Progress of a copy: called with (job, point, bytes sent so far of this point).
pub type Progress<'a> = &'a mut dyn FnMut(&str, PointId, u64);

/// The points of `points` (oldest first) the target does not represent yet and that are newer
/// than the newest it does: what a copy sends. Also returns how many are skipped.
pub fn to_copy(points: &[SourcePoint], held: &[HeldPoint]) -> (Vec<SourcePoint>, u64) {
    let newest_held = points
        .iter()
        .rposition(|p| held.iter().any(|h| h.source_point() == p.point));
    let from = newest_held.map_or(0, |i| i + 1);
    (points[from..].to_vec(), from as u64)
}

/// Copies the chosen jobs from `src` to `dst`. A job stops at its first failed point (later
/// points of a chain depend on it); other jobs go on.
pub fn copy(
    src: &mut dyn Source,
    dst: &mut dyn Target,
    opts: &CopyOptions,
    progress: Progress<'_>,
) -> Result<CopyReport> {
    let started = Instant::now();
    let held = src.jobs()?;
    let jobs = if opts.jobs.is_empty() {
        held.clone()
    } else {
        opts.jobs.clone()
    };
    let mut report = CopyReport {
        from: src.describe(),
        to: dst.describe(),
        ok: false,
        jobs: Vec::new(),
        bytes_sent: 0,
        seconds: 0.0,
    };
    let mut limiter = Limiter::new(opts.bandwidth);
    for job in jobs {
        let mut jr = JobReport {
            job: job.clone(),
            ..Default::default()
        };
        if !held.contains(&job) {
            // A mistyped name copies nothing: that is a failed job, not "0 copied".
            jr.points_failed += 1;
            jr.error = Some(format!(
                "the source has no job {job:?} (its jobs: {})",
                if held.is_empty() {
                    "none".to_string()
                } else {
                    held.join(", ")
                }
            ));
        } else if let Err(e) = copy_job(src, dst, &job, &mut jr, &mut limiter, progress) {
            tracing::warn!(%job, error = %error_chain(&e), "copy of the job stopped");
            dst.abandon();
            jr.points_failed += 1;
            jr.damaged = e.is_damage();
            jr.target_full = e.is_no_space();
            jr.error = Some(if jr.target_full {
                target_full_text(&report.to, &jr, &e)
            } else {
                error_chain(&e)
            });
        }
        report.bytes_sent += jr.bytes_sent;
        report.jobs.push(jr);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.ok = report.ok();
    Ok(report)
}

/// What a copy into a full target says: which target, that it is full, what became of the
/// point, and what to do.
fn target_full_text(to: &str, jr: &JobReport, e: &CopyError) -> String {
    format!(
        "the target {to} is full: no space left on its filesystem (ENOSPC) while copying restore \
         point {} of job {:?}; its partial copy was removed and nothing of this point is kept \
         there. Free space on the target (`bulwark-repo space` shows what uses it; \
         `bulwark-repo retention` removes what its policy no longer keeps) or give it more \
         capacity, then run the copy again. ({})",
        jr.failed_point.as_deref().unwrap_or("?"),
        jr.job,
        error_chain(e)
    )
}

fn copy_job(
    src: &mut dyn Source,
    dst: &mut dyn Target,
    job: &str,
    jr: &mut JobReport,
    limiter: &mut Limiter,
    progress: Progress<'_>,
) -> Result<()> {
    bulwark_format::validate_name("job", job).map_err(|e| CopyError::Usage(e.to_string()))?;
    let points = src.points(job)?;
    let held = dst.held(job)?;
    let (todo, skipped) = to_copy(&points, &held);
    jr.points_skipped = skipped;
    for p in todo {
        let mut sent = 0u64;
        let done = (|| -> Result<(CopyPlan, Finished)> {
            let head = src.head(job, p.point)?;
            let plan = dst.begin(job, &head)?;
            src.read(job, p.point, &plan.needed, &mut |e, stored| {
                limiter.take(stored.len() as u64);
                dst.put(e, stored)?;
                sent += stored.len() as u64;
                progress(job, p.point, sent);
                Ok(())
            })?;
            Ok((plan, dst.finish()?))
        })();
        // What went over the wire counts, also when the point then failed.
        jr.bytes_sent += sent;
        let (plan, f) = done.inspect_err(|_| jr.failed_point = Some(p.point.to_hex()))?;
        if f.mode == CopyMode::Held {
            jr.points_skipped += 1;
        } else {
            jr.points_copied += 1;
        }
        jr.bytes_local += plan.local_bytes;
        jr.bytes_resumed += plan.resumed_bytes;
        tracing::info!(%job, point = %p.point, mode = f.mode.as_str(), sent, "restore point copied");
        jr.points.push(PointReport {
            source_point: p.point.to_hex(),
            target_point: f.point.to_hex(),
            mode: f.mode.as_str(),
            root_digest: f.root.to_string(),
            source_root_digest: p.root.to_string(),
            bytes_sent: sent,
            bytes_local: plan.local_bytes,
            bytes_resumed: plan.resumed_bytes,
            immutable: f.immutable,
            expiry_unix: f.expiry,
            retention: f.retention.map(|c| c.as_str()),
        });
    }
    Ok(())
}

/// Burst a [`Limiter`] allows: short, so that even a copy of a few MiB keeps to the rate
/// (with a second of burst, a 20 MiB incremental at `--bwlimit 20M` went out at full speed).
const BURST: Duration = Duration::from_millis(100);

/// A token bucket: at most `rate` bytes per second, with [`BURST`] of burst.
struct Limiter {
    rate: Option<u64>,
    start: Instant,
    sent: u64,
}

impl Limiter {
    fn new(rate: Option<u64>) -> Self {
        Limiter {
            rate: rate.filter(|r| *r > 0),
            start: Instant::now(),
            sent: 0,
        }
    }
    /// Counts `n` more bytes sent `elapsed` after the start; how long to wait before the next
    /// send so that the average stays at the rate (a burst of [`BURST`] allowed).
    fn wait_after(&mut self, n: u64, elapsed: Duration) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        self.sent += n;
        let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
        due.saturating_sub(elapsed + BURST)
    }
    fn take(&mut self, n: u64) {
        let wait = self.wait_after(n, self.start.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(n: u8) -> SourcePoint {
        SourcePoint {
            point: PointId([n; 16]),
            chain: PointId([1; 16]),
            parent: PointId::NONE,
            kind: PointKind::Incremental,
            root: Digest([n; 32]),
            created: i64::from(n),
        }
    }
    fn hp(n: u8, origin: Option<u8>) -> HeldPoint {
        HeldPoint {
            point: PointId([n; 16]),
            chain: PointId([1; 16]),
            root: Digest([n; 32]),
            created: 0,
            origin: origin.map(|o| (PointId([o; 16]), PointId([1; 16]), Digest([o; 32]))),
        }
    }

    /// Seconds that sending `mib` chunks of 1 MiB through a limiter of `rate` takes on a
    /// simulated clock: each send takes `send` seconds, each wait passes exactly.
    fn simulated(rate: Option<u64>, mib: u32, send: f64) -> f64 {
        let mut l = Limiter::new(rate);
        let mut now = Duration::ZERO;
        for _ in 0..mib {
            now += Duration::from_secs_f64(send);
            now += l.wait_after(1 << 20, now);
        }
        now.as_secs_f64()
    }

    #[test]
    fn the_bandwidth_limit_holds_even_for_short_copies() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        // 24 MiB at 8 MiB/s: 3 s, less the 0.1 s of burst; the same when sending takes time.
        assert!(close(simulated(Some(8 << 20), 24, 0.0), 2.9));
        assert!(close(simulated(Some(8 << 20), 24, 0.05), 2.9));
        // 4 MiB at 8 MiB/s: half a second, not let through as a burst.
        assert!(close(simulated(Some(8 << 20), 4, 0.0), 0.4));
        // A slow link is never slowed further: 1 MiB a second is under the limit.
        assert!(close(simulated(Some(8 << 20), 4, 1.0), 4.0));
        // No limit (or 0): no wait at all, also through the real clock.
        assert_eq!(simulated(None, 1000, 0.0), 0.0);
        assert_eq!(simulated(Some(0), 1000, 0.0), 0.0);
        let mut free = Limiter::new(None);
        let t = Instant::now();
        free.take(1 << 40);
        assert!(t.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn only_points_newer_than_the_newest_held_are_copied() {
        let pts: Vec<_> = (1..=5).map(sp).collect();
        // Nothing held: everything.
        assert_eq!(to_copy(&pts, &[]).0.len(), 5);
        // 1 and 3 held (2 pruned on the target): 4 and 5, 3 skipped.
        let (todo, skipped) = to_copy(&pts, &[hp(1, None), hp(3, None)]);
        assert_eq!(
            todo.iter().map(|p| p.point.0[0]).collect::<Vec<_>>(),
            [4, 5]
        );
        assert_eq!(skipped, 3);
        // A re-chained copy stands for its origin.
        let (todo, _) = to_copy(&pts, &[hp(9, Some(4))]);
        assert_eq!(todo.iter().map(|p| p.point.0[0]).collect::<Vec<_>>(), [5]);
        // All held: nothing.
        let all: Vec<_> = (1..=5).map(|n| hp(n, None)).collect();
        assert!(to_copy(&pts, &all).0.is_empty());
    }
}
