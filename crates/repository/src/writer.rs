//! Writing a new restore point into `incoming/` and sealing it into the store.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bulwark_format::{
    BlockNo, Digest, Header, PointId, PointKind, PointMeta, PointReader, PointWriter, Stats,
    StoredBlock,
};
use bulwark_immut_msg::layout;

use crate::{fsync_dir, now_unix, JobLock, ParentMap, RepoError, Repository, Result};

/// Bytes written between two starts of writeback.
const WRITEBACK_CHUNK: u64 = 32 << 20;

/// What a new restore point will be.
pub struct NewPoint {
    pub job: String,
    /// `None` for an active full; the parent's map for an incremental.
    pub parent: Option<ParentMap>,
    pub disk_size: u64,
    pub block_size: u32,
    pub compression_level: i32,
    /// The sending client's identity; empty for local backups.
    pub client: String,
    /// `ActiveFull` or `SyntheticFull` when there is no parent.
    pub full_kind: PointKind,
}

impl NewPoint {
    /// An active full of `job` written on this host (no parent, no client, stored
    /// uncompressed unless `compression_level` is set afterwards).
    pub fn active_full(job: &str, disk_size: u64, block_size: u32) -> NewPoint {
        NewPoint {
            job: job.to_string(),
            parent: None,
            disk_size,
            block_size,
            compression_level: 0,
            client: String::new(),
            full_kind: PointKind::ActiveFull,
        }
    }
}

/// A restore point being written. Dropping it unfinished removes its temporary file.
pub struct PointBuilder {
    writer: Option<PointWriter>,
    tmp: PathBuf,
    repo: PathBuf,
    immutd_socket: Option<PathBuf>,
    meta: PointMeta,
    parent: Option<ParentMap>,
    /// A GFS full's longer protection, requested from the immutability service after sealing.
    gfs_until: Option<i64>,
    /// The repository's immutability period, which may be longer than the service's minimum.
    immutable_days: u32,
    /// Start of the written range whose writeback has not been started yet.
    writeback_from: u64,
    _lock: JobLock,
}

/// A restore point that is complete, durable and in the store.
#[derive(Debug, Clone)]
pub struct SealedPoint {
    pub path: PathBuf,
    pub meta: PointMeta,
    pub root: Digest,
    /// True when the immutability service set the immutable attribute.
    pub immutable: bool,
    /// Expiry of the protection (unix seconds), when immutable.
    pub expiry: Option<i64>,
}

impl Repository {
    /// The creation time of a new point of `np.job`: the repository's clock, but always after
    /// the job's newest restore point (and the parent). Point ids carry their creation time
    /// and order the job's points, so a clock stepped back (a bad NTP source, a VM restored
    /// from a snapshot) would otherwise make the newest point sort before its parent: the
    /// default restore would pick the older point, and retention would date the new one in
    /// the past. Such a point is dated one nanosecond after the newest, with a warning.
    fn point_time(&self, np: &NewPoint, held: &[PointId]) -> (i64, u32) {
        let (secs, nanos) = now_unix();
        let now = (secs.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(nanos));
        let newest = held
            .iter()
            .chain(np.parent.as_ref().map(|p| &p.point))
            .map(PointId::unix_nanos)
            .max();
        match newest {
            Some(n) if n >= now => {
                let t = n + 1;
                let at = ((t / 1_000_000_000) as i64, (t % 1_000_000_000) as u32);
                tracing::warn!(
                    job = %np.job,
                    clock = %crate::utc(secs),
                    newest = %crate::utc(at.0),
                    "the repository's clock is behind the job's newest restore point: the new point is dated just after it, so that the chain stays in order; check this host's clock"
                );
                at
            }
            _ => (secs, nanos),
        }
    }

    /// Starts a new restore point of `np.job`: takes the job's lock, clears leftovers of
    /// interrupted runs, applies the flood limit, and creates the temporary file.
    pub fn begin_point(&self, np: NewPoint) -> Result<PointBuilder> {
        bulwark_format::validate_name("job", &np.job)
            .map_err(|e| RepoError::Usage(e.to_string()))?;
        self.check_guard()?;
        bulwark_format::check_block_size(np.block_size)
            .map_err(|e| RepoError::Usage(e.to_string()))?;
        if let Some(p) = &np.parent {
            if p.block_size != np.block_size {
                return Err(RepoError::Usage(format!(
                    "the chain uses {} KiB blocks, not {} KiB: use the chain's block size or start a new chain with --full",
                    p.block_size / 1024,
                    np.block_size / 1024
                )));
            }
        }
        let lock = JobLock::acquire(self.root(), &np.job)?;
        self.clean_incoming(&np.job)?;
        // The job's points, listed once: for the flood limit and for the new point's time.
        let held: Vec<PointId> = crate::points::point_files(self.root(), &np.job)?
            .into_iter()
            .map(|(_, p, _)| p)
            .collect();
        self.check_flood(&np.job, held.iter().copied(), "points")?;
        let (secs, nanos) = self.point_time(&np, &held);
        let kind_now = if np.parent.is_some() {
            PointKind::Incremental
        } else {
            np.full_kind
        };
        let (retention, gfs_until) = self.retention_for_new(&np.job, kind_now, secs)?;
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd)
            .map_err(|e| RepoError::Config(format!("no randomness: {e}")))?;
        let unix_nanos = (secs as u64).saturating_mul(1_000_000_000) + u64::from(nanos);
        let point = PointId::new(unix_nanos, rnd);
        let (kind, parent_id, chain) = match &np.parent {
            Some(p) => (PointKind::Incremental, p.point, p.chain),
            None => (np.full_kind, PointId::NONE, point),
        };
        let tmp = layout::incoming_dir(self.root()).join(format!(
            "{}{}-{}",
            layout::TMP_PREFIX,
            np.job,
            layout::point_file_name(point)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(RepoError::io(&tmp, "creating"))?;
        let header = Header {
            block_size: np.block_size,
            disk_size: np.disk_size,
            point_id: point,
        };
        let writer = PointWriter::new(file, header).map_err(RepoError::format(&tmp))?;
        let meta = PointMeta {
            kind,
            retention,
            compression_level: np.compression_level,
            created_unix_secs: secs,
            created_nanos: nanos,
            block_size: np.block_size,
            disk_size: np.disk_size,
            point,
            parent: parent_id,
            chain,
            job: np.job,
            client: np.client,
            stats: Stats::default(),
            files: vec![],
            extensions: vec![],
        };
        Ok(PointBuilder {
            writer: Some(writer),
            tmp,
            repo: self.root().to_path_buf(),
            immutd_socket: self.config().immutd_socket.clone(),
            gfs_until,
            immutable_days: self.config().immutable_days,
            writeback_from: 0,
            meta,
            parent: np.parent,
            _lock: lock,
        })
    }

    /// Removes temporary files that interrupted runs of `job` left, and seals finished files
    /// that were waiting to be sealed. Called with the job's lock held.
    fn clean_incoming(&self, job: &str) -> Result<()> {
        let dir = layout::incoming_dir(self.root());
        let prefix = format!("{}{job}-", layout::TMP_PREFIX);
        for ent in std::fs::read_dir(&dir).map_err(RepoError::io(&dir, "listing"))? {
            let ent = ent.map_err(RepoError::io(&dir, "listing"))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                tracing::info!(file = %name, "removing leftover of an interrupted backup");
                std::fs::remove_file(ent.path()).map_err(RepoError::io(&ent.path(), "removing"))?;
            } else if layout::parse_point_file_name(&name).is_some() {
                let path = ent.path();
                let Ok(f) = File::open(&path) else { continue };
                let Ok(r) = PointReader::open(f) else {
                    tracing::warn!(file = %path.display(), "unreadable file waiting in incoming/ left in place");
                    continue;
                };
                if r.meta.job == job {
                    tracing::info!(file = %name, "sealing a finished restore point left by an interrupted run");
                    let (meta, root) = (r.meta.clone(), r.trailer.root_digest);
                    drop(r);
                    let socket = self.config().immutd_socket.as_deref();
                    seal(self.root(), socket, &path, &meta, root)?;
                }
            }
        }
        Ok(())
    }

    /// Removes the partial files of interrupted backups (`incoming/.tmp-JOB-POINT.bwrp`, not
    /// resumable) of every job nobody is writing now (its lock is free), and returns them.
    /// A backup's own next run does this for its job; the repository service does it for all
    /// jobs when it starts, so a partial left by a killed service or client does not wait for
    /// that job's next backup, which may never come. Resumable copies (`.copy-…`) stay.
    pub fn remove_interrupted_partials(&self) -> Result<Vec<PathBuf>> {
        let dir = layout::incoming_dir(self.root());
        let mut removed = Vec::new();
        for ent in std::fs::read_dir(&dir).map_err(RepoError::io(&dir, "listing"))? {
            let ent = ent.map_err(RepoError::io(&dir, "listing"))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(layout::TMP_PREFIX) else {
                continue;
            };
            let Some((job, file)) = rest.rsplit_once('-') else {
                continue;
            };
            if layout::parse_point_file_name(file).is_none()
                || bulwark_format::validate_name("job", job).is_err()
            {
                continue;
            }
            let Ok(_lock) = JobLock::acquire(self.root(), job) else {
                continue; // being written now, or its lock cannot be taken: left alone
            };
            let path = ent.path();
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %name, "removed the partial file of an interrupted backup");
                    removed.push(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RepoError::io(&path, "removing")(e)),
            }
        }
        if !removed.is_empty() {
            fsync_dir(&dir)?;
        }
        Ok(removed)
    }

    /// Refuses a new restore point (`what`: "points" for a backup, "copies" for a copy) when
    /// the job already has the day's maximum of points created in the last 24 hours.
    pub(crate) fn check_flood(
        &self,
        job: &str,
        held: impl IntoIterator<Item = PointId>,
        what: &str,
    ) -> Result<()> {
        let (now, _) = now_unix();
        let day_ago = (now - 86_400).max(0) as u64 * 1_000_000_000;
        let recent = held
            .into_iter()
            .filter(|p| p.unix_nanos() >= day_ago)
            .count();
        if recent >= self.config().max_points_per_day as usize {
            return Err(RepoError::Usage(format!(
                "job {job:?} already has {recent} restore points from the last 24 hours, the repository's limit \
                 (max_points_per_day in repository.toml); refusing more {what} so that a flood cannot push out older points"
            )));
        }
        Ok(())
    }
}

impl PointBuilder {
    /// The restore point's id.
    pub fn point(&self) -> PointId {
        self.meta.point
    }
    /// The restore point's kind.
    pub fn kind(&self) -> PointKind {
        self.meta.kind
    }
    /// The metadata the point will carry (a copy sets its extension records here).
    pub(crate) fn meta_mut(&mut self) -> &mut PointMeta {
        &mut self.meta
    }
    /// The parent's map, for an incremental.
    pub(crate) fn parent(&self) -> Option<&ParentMap> {
        self.parent.as_ref()
    }
    /// Bytes written to the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.bytes_written())
    }

    fn w(&mut self) -> &mut PointWriter {
        self.writer.as_mut().expect("writer present until finish")
    }

    /// Stores a new block (see [`PointWriter::put_stored`]).
    pub fn put_stored(&mut self, b: StoredBlock<'_>) -> Result<()> {
        let w = self.writer.as_mut().expect("writer present until finish");
        w.put_stored(b).map_err(|source| RepoError::Format {
            path: self.tmp.clone(),
            source,
        })?;
        // Start writeback of what is written so far, so the final fsync does not wait for
        // the whole file; it also keeps a backup from flooding the page cache.
        let written = w.bytes_written();
        if written - self.writeback_from >= WRITEBACK_CHUNK {
            let len = written - self.writeback_from;
            let _ = bulwark_sys::fadvise(
                w.file(),
                self.writeback_from,
                len,
                bulwark_sys::Advice::DontNeed,
            );
            self.writeback_from = written;
        }
        Ok(())
    }

    /// Records a block of this file whose bytes the caller fills in at the returned entry's
    /// offset before [`PointBuilder::finish`] (see [`PointWriter::reserve_stored`]).
    pub fn reserve_stored(
        &mut self,
        like: &bulwark_format::MapEntry,
    ) -> Result<bulwark_format::MapEntry> {
        let tmp = self.tmp.clone();
        self.w().reserve_like(like).map_err(RepoError::format(&tmp))
    }

    /// Sets an extension record of the new point's metadata (e.g. how its blocks are
    /// encrypted, docs/encryption.md).
    pub fn set_extension(&mut self, tag: u16, data: Vec<u8>) -> Result<()> {
        self.meta
            .set_extension(tag, data)
            .map_err(|e| RepoError::Usage(e.to_string()))
    }

    /// The temporary file being written, and its path.
    pub fn file(&self) -> (&File, &Path) {
        let w = self.writer.as_ref().expect("writer present until finish");
        (w.file(), &self.tmp)
    }

    /// Records that `block` is unchanged since the parent: references the parent's copy.
    pub fn put_unchanged(&mut self, block: BlockNo) -> Result<()> {
        let tmp = self.tmp.clone();
        let parent = self.parent.as_ref().ok_or_else(|| {
            RepoError::Usage(format!(
                "block {block} marked unchanged, but this restore point has no parent"
            ))
        })?;
        let pe = *parent.entry(block).ok_or_else(|| {
            RepoError::Usage(format!(
                "block {block} marked unchanged, but it is zero in the parent"
            ))
        })?;
        let fr = parent.file_of(&pe);
        let w = self.w();
        let file_ref = w.add_file(fr);
        w.put_ref(bulwark_format::MapEntry { file_ref, ..pe })
            .map_err(RepoError::format(&tmp))
    }

    /// Completes the file (map, metadata, trailer, fsync), makes it durable under its final
    /// name in `incoming/`, and seals it into the store.
    pub fn finish(mut self) -> Result<SealedPoint> {
        let writer = self.writer.take().expect("finish once");
        let (file, trailer, meta) = writer
            .finish(self.meta.clone())
            .map_err(RepoError::format(&self.tmp))?;
        drop(file);
        let done = layout::incoming_path(&self.repo, meta.point);
        std::fs::rename(&self.tmp, &done)
            .map_err(RepoError::io(&done, "renaming finished file to"))?;
        fsync_dir(&layout::incoming_dir(&self.repo))?;
        let root = trailer.root_digest;
        let (path, immutable, mut expiry) = seal(
            &self.repo,
            self.immutd_socket.as_deref(),
            &done,
            &meta,
            root,
        )?;
        if let Some(socket) = self.immutd_socket.as_deref() {
            // The chain rule with the repository's own period: every file of the chain is
            // protected until this seal plus the period (a GFS full possibly longer).
            let until = meta.created_unix_secs + i64::from(self.immutable_days) * 86_400;
            let chain: Vec<PointId> = crate::points::point_files(&self.repo, &meta.job)?
                .into_iter()
                .filter(|(c, p, _)| *c == meta.chain && *p != meta.point)
                .map(|(_, p, _)| p)
                .collect();
            let own = until.max(self.gfs_until.unwrap_or(0));
            expiry = Some(crate::seal_immutd::extend_chain(
                socket, &chain, until, meta.point, own,
            )?);
        }
        Ok(SealedPoint {
            path,
            meta,
            root: trailer.root_digest,
            immutable,
            expiry,
        })
    }
}

impl Drop for PointBuilder {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Moves a finished file from `incoming/` into the store: through the immutability service
/// when one guards the repository, else by a plain rename (and the file stays mutable).
pub(crate) fn seal(
    repo: &Path,
    immutd_socket: Option<&Path>,
    done: &Path,
    meta: &PointMeta,
    root: Digest,
) -> Result<(PathBuf, bool, Option<i64>)> {
    if let Some(socket) = immutd_socket {
        return crate::seal_immutd::seal(socket, done, meta, root);
    }
    let target = layout::sealed_path(repo, &meta.job, meta.chain, meta.point);
    let chain_dir = target.parent().expect("sealed path has a parent");
    let job_dir = chain_dir.parent().expect("chain dir has a parent");
    for d in [job_dir, chain_dir] {
        match std::fs::create_dir(d) {
            Ok(()) => fsync_dir(d.parent().expect("has parent"))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(RepoError::io(d, "creating")(e)),
        }
    }
    std::fs::rename(done, &target).map_err(RepoError::io(&target, "moving restore point to"))?;
    fsync_dir(chain_dir)?;
    fsync_dir(&layout::incoming_dir(repo))?;
    Ok((target, false, None))
}
