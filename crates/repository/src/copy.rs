//! Receiving copies of restore points from another repository (`bulwark copy`,
//! `docs/copy-jobs.md`).
//!
//! A copied point is stored **verbatim** when this repository holds every file its file table
//! references (same point ids, same root digests): the file is rebuilt byte for byte (same
//! header, data region offsets, map, metadata and trailer), so its root digest is the
//! source's. Only the blocks stored in the point's own file travel, and of those only the ones
//! whose stored bytes (by BLAKE3) this job does not already hold here: the others are cloned
//! (or copied) from the local file that holds them. Stored bytes are never decoded, so an
//! encrypted chain copies without its key.
//!
//! When a referenced file is missing (this repository's retention removed the older chain),
//! the point is **re-chained**: written as a new restore point of this repository (new id,
//! this repository's clock): a synthetic full starting a new chain, or an incremental of the
//! re-chained copy of its source parent. It carries an origin record (extension `0x0003`:
//! source point, chain and root digest); blocks this job holds are cloned, the rest are sent.
//!
//! Either way the point is sealed like any backup: by the immutability service, with this
//! repository's period and chain rule counted from *now* by this repository's clock, and a
//! GFS full's lifetime from this repository's own policy. Nothing in a copy can shorten a lock.
//!
//! A verbatim copy is resumable: its partial file (`incoming/.copy-<job>-<point>.bwrp`) keeps
//! what arrived, and the next attempt re-reads it and asks only for the blocks still missing.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bulwark_format::{
    align_up, BlockNo, Digest, Extension, FormatError, Header, MapEntry, PointId, PointKind,
    PointMeta, PointReader, Trailer, ENTRY_LEN, HEADER_LEN, TRAILER_LEN,
};
use bulwark_immut_msg::layout;

use crate::points::point_files;
use crate::policy::id_time;
use crate::{
    fsync_dir, now_unix, JobLock, NewPoint, ParentMap, PointBuilder, RepoError, Repository, Result,
    SealedPoint,
};

/// Extension tag of a re-chained copy's origin (not critical: readers may ignore it).
pub const EXT_COPY_ORIGIN: u16 = 0x0003;
/// Bytes of the origin record: source point, source chain, source root digest.
const ORIGIN_LEN: usize = 16 + 16 + 32;
/// Prefix of a verbatim copy's partial file in `incoming/`.
pub const COPY_PREFIX: &str = ".copy-";
/// Largest metadata a copy carries (the format allows 16 MiB; a file table of 20 000 points is
/// under 1 MiB).
pub const MAX_COPY_META: usize = 1 << 20;
/// How far in the future (seconds, by this repository's clock) a copied point's creation time
/// may lie: clocks of two hosts differ a little, never by more.
const MAX_FUTURE_SKEW: i64 = 300;
/// Received bytes between two `fdatasync`s of a partial copy, so a power cut loses little.
const SYNC_EVERY: u64 = 64 << 20;

/// What a source sends first of a restore point: everything but its blocks.
#[derive(Clone, Debug)]
pub struct CopyHead {
    /// The header's first 80 bytes.
    pub header: Vec<u8>,
    /// The trailer, 128 bytes.
    pub trailer: Vec<u8>,
    /// The metadata bytes, exactly as in the file.
    pub meta: Vec<u8>,
    /// The block map.
    pub map: Vec<MapEntry>,
}

impl CopyHead {
    /// Reads the head of a sealed restore-point file.
    pub fn of_reader(r: &PointReader) -> Result<CopyHead> {
        let mut meta = vec![0u8; r.trailer.meta_len as usize];
        r.file()
            .read_exact_at(&mut meta, r.trailer.meta_offset)
            .map_err(RepoError::io(
                Path::new(&r.meta.point.to_hex()),
                "reading the metadata of restore point",
            ))?;
        Ok(CopyHead {
            header: r.header.encode()[..80].to_vec(),
            trailer: r.trailer.encode().to_vec(),
            meta,
            map: r.map.clone(),
        })
    }

    /// Decodes the parts and checks the sizes they claim against each other, before anything
    /// is allocated for the file. The root digest is checked once they are in the file.
    pub fn decode(&self) -> Result<(Header, Trailer, PointMeta)> {
        let bad = |m: String| RepoError::Format {
            path: PathBuf::from("copied restore point"),
            source: FormatError::Layout(m),
        };
        let header = Header::decode(&self.header).map_err(|source| RepoError::Format {
            path: PathBuf::from("copied restore point header"),
            source,
        })?;
        let trailer = Trailer::decode(&self.trailer).map_err(|source| RepoError::Format {
            path: PathBuf::from("copied restore point trailer"),
            source,
        })?;
        if self.meta.len() > MAX_COPY_META || trailer.meta_len != self.meta.len() as u64 {
            return Err(bad(format!(
                "metadata of {} bytes (trailer says {}, at most {MAX_COPY_META})",
                self.meta.len(),
                trailer.meta_len
            )));
        }
        if trailer.map_count != self.map.len() as u64 {
            return Err(bad(format!(
                "{} map entries sent, the trailer says {}",
                self.map.len(),
                trailer.map_count
            )));
        }
        let meta = PointMeta::decode(&self.meta).map_err(|source| RepoError::Format {
            path: PathBuf::from("copied restore point metadata"),
            source,
        })?;
        if meta.point != header.point_id {
            return Err(bad("metadata and header name different points".into()));
        }
        // The data region holds the point's own blocks packed one after the other from 4096,
        // each padded to 4 KiB, as every writer lays them out: no gap, no overlap, and so no
        // file larger than what it holds (a claimed offset far out would make a huge sparse
        // file for the immutability service to read).
        let mut own: Vec<(u64, u64)> = self
            .map
            .iter()
            .filter(|e| e.file_ref == 0)
            .map(|e| (e.offset, align_up(u64::from(e.stored_len))))
            .collect();
        own.sort_unstable();
        let mut data_end = HEADER_LEN;
        for (off, len) in own {
            if off != data_end {
                return Err(bad(format!(
                    "a block stored at offset {off}, where the data region continues at {data_end}"
                )));
            }
            data_end += len;
        }
        let map_len = trailer.map_count.saturating_mul(ENTRY_LEN as u64);
        if trailer.map_offset != data_end
            || trailer.map_offset.checked_add(map_len) != Some(trailer.meta_offset)
        {
            return Err(bad(format!(
                "block map at {} with {} entries does not follow a data region ending at {data_end}",
                trailer.map_offset, trailer.map_count
            )));
        }
        // Bounded: the map must fit the disk's block count, and the data region is as long as
        // the blocks it holds.
        let nblocks = bulwark_format::block_count(header.disk_size, header.block_size);
        if trailer.map_count > nblocks {
            return Err(bad(format!(
                "{} map entries for a disk of {nblocks} blocks",
                trailer.map_count
            )));
        }
        Ok((header, trailer, meta))
    }

    /// The file's size.
    fn file_size(t: &Trailer) -> u64 {
        t.meta_offset + t.meta_len + TRAILER_LEN as u64
    }
}

/// A restore point of a job as held here, with the source point it is a copy of.
#[derive(Clone, Debug)]
pub struct HeldPoint {
    pub point: PointId,
    pub chain: PointId,
    pub root: Digest,
    pub created: i64,
    /// Set on re-chained copies: (source point, source chain, source root digest).
    pub origin: Option<(PointId, PointId, Digest)>,
}

impl HeldPoint {
    /// The source point this one stands for: its origin, else itself (a verbatim copy).
    pub fn source_point(&self) -> PointId {
        self.origin.map_or(self.point, |o| o.0)
    }
    /// The root digest the source point has.
    pub fn source_root(&self) -> Digest {
        self.origin.map_or(self.root, |o| o.2)
    }
}

/// The origin record of a re-chained copy.
pub fn encode_origin(point: PointId, chain: PointId, root: Digest) -> Vec<u8> {
    let mut v = Vec::with_capacity(ORIGIN_LEN);
    v.extend_from_slice(&point.0);
    v.extend_from_slice(&chain.0);
    v.extend_from_slice(&root.0);
    v
}

/// Reads an origin record; `None` when absent or malformed (it is informative only).
pub fn decode_origin(meta: &PointMeta) -> Option<(PointId, PointId, Digest)> {
    let d = meta.extension(EXT_COPY_ORIGIN)?;
    if d.len() != ORIGIN_LEN {
        return None;
    }
    Some((
        PointId(d[..16].try_into().ok()?),
        PointId(d[16..32].try_into().ok()?),
        Digest(d[32..].try_into().ok()?),
    ))
}

/// How a copied point is stored here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// This repository already holds the point (or a re-chained copy of it): nothing to do.
    Held,
    /// Byte for byte, same root digest.
    Verbatim,
    /// A new chain here: a synthetic full with an origin record.
    NewChain,
    /// An incremental of the re-chained copy of the source parent, with an origin record.
    RechainedIncremental,
}

impl CopyMode {
    /// Short name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMode::Held => "held",
            CopyMode::Verbatim => "verbatim",
            CopyMode::NewChain => "new-chain",
            CopyMode::RechainedIncremental => "rechained-incremental",
        }
    }
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            CopyMode::Held => 0,
            CopyMode::Verbatim => 1,
            CopyMode::NewChain => 2,
            CopyMode::RechainedIncremental => 3,
        }
    }
    /// From the wire code.
    pub fn from_code(c: u8) -> Option<CopyMode> {
        Some(match c {
            0 => CopyMode::Held,
            1 => CopyMode::Verbatim,
            2 => CopyMode::NewChain,
            3 => CopyMode::RechainedIncremental,
            _ => return None,
        })
    }
}

/// What the receiving side needs, decided when the copy of a point begins.
#[derive(Clone, Debug)]
pub struct CopyPlan {
    pub mode: CopyMode,
    /// Blocks whose stored bytes must be sent, ascending.
    pub needed: Vec<BlockNo>,
    /// Bytes of blocks a previous, interrupted attempt already delivered.
    pub resumed_bytes: u64,
    /// Bytes of blocks taken from files this repository already holds.
    pub local_bytes: u64,
}

/// A copied point as sealed here.
#[derive(Clone, Debug)]
pub struct CopiedPoint {
    pub mode: CopyMode,
    /// `None` when the point was already held.
    pub sealed: Option<SealedPoint>,
    /// The point held here (the copy's id; the source's for a verbatim copy).
    pub point: PointId,
    pub root: Digest,
    pub bytes_received: u64,
    /// The retention class this repository's policy gives the point (what its GFS lifetime
    /// here was decided from). For a verbatim copy it may differ from the class recorded in
    /// the file, which is the source's decision and travels with the file's bytes; `None`
    /// when the point was already held.
    pub retention: Option<bulwark_format::RetentionClass>,
}

enum Writing {
    Held {
        point: PointId,
        root: Digest,
    },
    Verbatim {
        file: File,
        part: PathBuf,
        head_meta: Box<PointMeta>,
        root: Digest,
        entries: HashMap<u64, MapEntry>,
        unsynced: u64,
        _lock: JobLock,
    },
    Rechain {
        builder: Box<PointBuilder>,
        /// Block → reserved entry in the new file.
        reserved: HashMap<u64, MapEntry>,
    },
}

/// A copy being received. Dropping it unfinished keeps a verbatim copy's partial file (the
/// next attempt resumes it) and removes a re-chained one's.
pub struct CopyReceiver {
    plan: CopyPlan,
    next: usize,
    received: u64,
    w: Writing,
}

/// A stored block this job already holds: where.
#[derive(Clone)]
struct LocalBlock {
    path: PathBuf,
    offset: u64,
    map_end: u64,
}

impl Repository {
    /// The restore points of `job` held here, with their copy origins (oldest first).
    pub fn held_points(&self, job: &str) -> Result<Vec<HeldPoint>> {
        bulwark_format::validate_name("job", job).map_err(|e| RepoError::Usage(e.to_string()))?;
        Ok(self
            .scan_job(job)?
            .points
            .into_iter()
            .map(|p| HeldPoint {
                point: p.meta.point,
                chain: p.meta.chain,
                root: p.root,
                created: p.meta.created_unix_secs,
                origin: decode_origin(&p.meta),
            })
            .collect())
    }

    /// Reads the head of restore point `point` of `job` for copying it elsewhere.
    pub fn copy_head(&self, job: &str, point: PointId) -> Result<CopyHead> {
        let (chain, id, path) = self.locate(job, Some(point))?;
        let r = self.open_stored(&path, job, chain, id)?;
        CopyHead::of_reader(&r)
    }

    /// Begins receiving a copy of the restore point described by `head` into `job`, which
    /// must be the job the point's metadata names.
    pub fn begin_copy(&self, job: &str, head: &CopyHead) -> Result<CopyReceiver> {
        bulwark_format::validate_name("job", job).map_err(|e| RepoError::Usage(e.to_string()))?;
        self.check_guard()?;
        let (header, trailer, meta) = head.decode()?;
        if meta.job != job {
            return Err(RepoError::Usage(format!(
                "the copied restore point belongs to job {:?}, not {job:?}",
                meta.job
            )));
        }
        let (now, _) = now_unix();
        if meta.created_unix_secs > now + MAX_FUTURE_SKEW
            || id_time(meta.point) != meta.created_unix_secs
        {
            return Err(RepoError::Usage(format!(
                "restore point {} says it was created at {} (unix), {} than this repository's clock allows; \
                 check both hosts' clocks (timedatectl) and copy again",
                meta.point,
                meta.created_unix_secs,
                if id_time(meta.point) != meta.created_unix_secs { "with an id that disagrees, differently" } else { "later" }
            )));
        }
        let held = self.held_points(job)?;
        if let Some(h) = held.iter().find(|h| h.source_point() == meta.point) {
            if h.source_root() != trailer.root_digest {
                return Err(RepoError::Format {
                    path: self.point_path(job, h.chain, h.point),
                    source: FormatError::Meta(format!(
                        "this repository holds restore point {} with root digest {}, the source sends root {}: \
                         one side was changed; run `bulwark copy --verify` and `bulwark verify` on both",
                        meta.point,
                        h.source_root(),
                        trailer.root_digest
                    )),
                });
            }
            return Ok(CopyReceiver {
                plan: CopyPlan {
                    mode: CopyMode::Held,
                    needed: vec![],
                    resumed_bytes: 0,
                    local_bytes: 0,
                },
                next: 0,
                received: 0,
                w: Writing::Held {
                    point: h.point,
                    root: h.root,
                },
            });
        }
        let lock = JobLock::acquire(self.root(), job)?;
        let files = point_files(self.root(), job)?;
        let verbatim = meta.files.iter().all(|fr| {
            files.iter().any(|(c, p, path)| {
                *p == fr.point
                    && *c == meta.chain
                    && File::open(path)
                        .ok()
                        .and_then(|f| Trailer::read_from(&f).ok())
                        .is_some_and(|t| t.root_digest == fr.root)
            })
        });
        let local = self.local_blocks(&files)?;
        if verbatim {
            self.check_flood(job, files.iter().map(|(_, p, _)| *p), "copies")?;
            self.begin_verbatim(job, head, header, trailer, meta, local, lock)
        } else {
            drop(lock);
            self.begin_rechain(job, head, meta, trailer.root_digest, &held, local)
        }
    }

    /// Every stored block of `job`'s sealed files by its stored hash.
    fn local_blocks(
        &self,
        files: &[(PointId, PointId, PathBuf)],
    ) -> Result<HashMap<Digest, LocalBlock>> {
        let mut out = HashMap::new();
        for (_, _, path) in files {
            let Ok(f) = File::open(path) else { continue };
            let Ok(r) = PointReader::open(f) else {
                continue;
            };
            for e in r.map.iter().filter(|e| e.file_ref == 0) {
                out.entry(e.stored_hash).or_insert_with(|| LocalBlock {
                    path: path.clone(),
                    offset: e.offset,
                    map_end: r.trailer.map_offset,
                });
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn begin_verbatim(
        &self,
        job: &str,
        head: &CopyHead,
        header: Header,
        trailer: Trailer,
        meta: PointMeta,
        local: HashMap<Digest, LocalBlock>,
        lock: JobLock,
    ) -> Result<CopyReceiver> {
        let point = meta.point;
        let incoming = layout::incoming_dir(self.root());
        // A finished file of an interrupted attempt waits to be sealed: seal it.
        let done = layout::incoming_path(self.root(), point);
        if let Ok(f) = File::open(&done) {
            if PointReader::open(f).is_ok_and(|r| r.trailer.root_digest == trailer.root_digest) {
                let entries = HashMap::new();
                let file = File::open(&done).map_err(RepoError::io(&done, "opening"))?;
                return Ok(CopyReceiver {
                    plan: CopyPlan {
                        mode: CopyMode::Verbatim,
                        needed: vec![],
                        resumed_bytes: 0,
                        local_bytes: 0,
                    },
                    next: 0,
                    received: 0,
                    w: Writing::Verbatim {
                        file,
                        part: done,
                        head_meta: Box::new(meta),
                        root: trailer.root_digest,
                        entries,
                        unsynced: 0,
                        _lock: lock,
                    },
                });
            }
        }
        let part = incoming.join(format!(
            "{COPY_PREFIX}{job}-{}",
            layout::point_file_name(point)
        ));
        // Partial copies of other points of this job were abandoned: remove them.
        let prefix = format!("{COPY_PREFIX}{job}-");
        for ent in std::fs::read_dir(&incoming).map_err(RepoError::io(&incoming, "listing"))? {
            let ent = ent.map_err(RepoError::io(&incoming, "listing"))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && ent.path() != part {
                tracing::info!(file = %name, "removing an abandoned partial copy");
                let _ = std::fs::remove_file(ent.path());
            }
        }
        let size = CopyHead::file_size(&trailer);
        let resumed = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&part)
        {
            Ok(f) => {
                let same = Trailer::read_from(&f).is_ok_and(|t| t == trailer)
                    && f.metadata().is_ok_and(|m| m.len() == size);
                if same {
                    Some(f)
                } else {
                    drop(f);
                    std::fs::remove_file(&part).map_err(RepoError::io(&part, "removing"))?;
                    None
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(RepoError::io(&part, "opening")(e)),
        };
        let is_resume = resumed.is_some();
        let file = match resumed {
            Some(f) => f,
            None => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&part)
                    .map_err(RepoError::io(&part, "creating"))?;
                let io = |what| RepoError::io(&part, what);
                let written = (|| {
                    f.set_len(size).map_err(io("sizing"))?;
                    f.write_all_at(&header.encode(), 0)
                        .map_err(io("writing the header of"))?;
                    let mut map = Vec::with_capacity(head.map.len() * ENTRY_LEN);
                    for e in &head.map {
                        e.encode_into(&mut map);
                    }
                    f.write_all_at(&map, trailer.map_offset)
                        .map_err(io("writing the block map of"))?;
                    f.write_all_at(&head.meta, trailer.meta_offset)
                        .map_err(io("writing the metadata of"))?;
                    f.write_all_at(&trailer.encode(), size - TRAILER_LEN as u64)
                        .map_err(io("writing the trailer of"))?;
                    f.sync_all().map_err(io("syncing"))?;
                    fsync_dir(&incoming)
                })();
                // A head that could not be written (a full filesystem) leaves nothing behind.
                if let Err(e) = written {
                    drop(f);
                    let _ = std::fs::remove_file(&part);
                    return Err(e);
                }
                f
            }
        };
        // Everything but block data is now checked, the root digest included. A head that
        // fails leaves nothing behind.
        let checked = file
            .try_clone()
            .map_err(RepoError::io(&part, "opening"))
            .and_then(|f| PointReader::open(f).map_err(RepoError::format(&part)))
            .and_then(|r| {
                if r.meta != meta || r.trailer.root_digest != trailer.root_digest {
                    Err(RepoError::Usage(format!(
                        "{} does not hold what the source sent",
                        part.display()
                    )))
                } else {
                    Ok(r)
                }
            });
        let reader = match checked {
            Ok(r) => r,
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        };
        let mut needed = Vec::new();
        let mut entries = HashMap::new();
        let (mut resumed_bytes, mut local_bytes) = (0u64, 0u64);
        let mut buf = Vec::new();
        for e in reader.map.iter().filter(|e| e.file_ref == 0) {
            if is_resume
                && reader
                    .read_stored(e, &mut buf)
                    .is_ok_and(|b| Digest::of(b) == e.stored_hash)
            {
                resumed_bytes += u64::from(e.stored_len);
                continue;
            }
            if let Some(lb) = local.get(&e.stored_hash) {
                if place_local(lb, e, &file, e.offset, &part).is_ok() {
                    local_bytes += u64::from(e.stored_len);
                    continue;
                }
            }
            needed.push(e.block);
            entries.insert(e.block.0, *e);
        }
        drop(reader);
        Ok(CopyReceiver {
            plan: CopyPlan {
                mode: CopyMode::Verbatim,
                needed,
                resumed_bytes,
                local_bytes,
            },
            next: 0,
            received: 0,
            w: Writing::Verbatim {
                file,
                part,
                head_meta: Box::new(meta),
                root: trailer.root_digest,
                entries,
                unsynced: 0,
                _lock: lock,
            },
        })
    }

    fn begin_rechain(
        &self,
        job: &str,
        head: &CopyHead,
        meta: PointMeta,
        source_root: Digest,
        held: &[HeldPoint],
        local: HashMap<Digest, LocalBlock>,
    ) -> Result<CopyReceiver> {
        if meta.extension(bulwark_format::EXT_ENCRYPTION).is_some() {
            return Err(RepoError::Usage(format!(
                "restore point {} is encrypted and references files this repository no longer holds; \
                 its blocks' session records live in those files, so it cannot be re-chained here without \
                 them. Copied points of an encrypted chain need its earlier files on this repository; \
                 the source's next active full (`bulwark backup --full`) starts a chain that copies whole",
                meta.point
            )));
        }
        // The re-chained copy of the source parent, if this repository has one.
        let parent = if meta.parent.is_none() {
            None
        } else {
            held.iter()
                .rev()
                .find(|h| h.origin.is_some_and(|o| o.0 == meta.parent))
                .map(|h| self.parent_of(job, h))
                .transpose()?
                .filter(|p| p.block_size == meta.block_size && p.disk_size == meta.disk_size)
        };
        let mode = if parent.is_some() {
            CopyMode::RechainedIncremental
        } else {
            CopyMode::NewChain
        };
        let mut b = self.begin_point(NewPoint {
            job: job.to_string(),
            parent,
            disk_size: meta.disk_size,
            block_size: meta.block_size,
            compression_level: meta.compression_level,
            client: meta.client.clone(),
            full_kind: PointKind::SyntheticFull,
        })?;
        let mut ext = meta.extensions.clone();
        ext.retain(|e| e.tag != EXT_COPY_ORIGIN);
        let pos = ext.partition_point(|e| e.tag < EXT_COPY_ORIGIN);
        ext.insert(
            pos,
            Extension {
                tag: EXT_COPY_ORIGIN,
                data: encode_origin(meta.point, meta.chain, source_root),
            },
        );
        if ext.len() > bulwark_format::MAX_EXTENSIONS {
            return Err(RepoError::Usage(format!(
                "restore point {} has too many extension records to add its copy origin",
                meta.point
            )));
        }
        b.meta_mut().extensions = ext;
        let mut needed = Vec::new();
        let mut reserved = HashMap::new();
        let mut local_bytes = 0u64;
        for e in &head.map {
            let same_in_parent = b
                .parent()
                .and_then(|p| p.entry(e.block))
                .is_some_and(|pe| pe.stored_hash == e.stored_hash && pe.flags == e.flags);
            if same_in_parent {
                b.put_unchanged(e.block)?;
                continue;
            }
            let ne = b.reserve_stored(e)?;
            if let Some(lb) = local.get(&e.stored_hash) {
                let (dst, dst_path) = b.file();
                let dst_path = dst_path.to_path_buf();
                if place_local(lb, e, dst, ne.offset, &dst_path).is_ok() {
                    local_bytes += u64::from(e.stored_len);
                    continue;
                }
            }
            needed.push(e.block);
            reserved.insert(e.block.0, ne);
        }
        Ok(CopyReceiver {
            plan: CopyPlan {
                mode,
                needed,
                resumed_bytes: 0,
                local_bytes,
            },
            next: 0,
            received: 0,
            w: Writing::Rechain {
                builder: Box::new(b),
                reserved,
            },
        })
    }

    /// A held point's map, as the parent of an incremental.
    fn parent_of(&self, job: &str, h: &HeldPoint) -> Result<ParentMap> {
        let path = self.point_path(job, h.chain, h.point);
        let r = self.open_stored(&path, job, h.chain, h.point)?;
        Ok(ParentMap::of(h.point, r))
    }
}

/// A verbatim copy that ran out of space: its partial file is what fills the filesystem and
/// cannot be completed there, so it is removed (nothing of the point is kept) instead of
/// being kept for a resume; the error is returned as it was.
fn unless_full(part: &Path, e: RepoError) -> RepoError {
    if e.is_no_space() {
        match std::fs::remove_file(part) {
            Ok(()) => {
                tracing::warn!(file = %part.display(), "no space left: removed the partial copy")
            }
            Err(r) => {
                tracing::warn!(file = %part.display(), error = %r, "no space left: removing the partial copy failed")
            }
        }
    }
    e
}

/// Puts a block this job already holds into `dst` at `dst_off`: cloned when the filesystem
/// can, else read, checked against its stored hash and written.
fn place_local(
    lb: &LocalBlock,
    e: &MapEntry,
    dst: &File,
    dst_off: u64,
    dst_path: &Path,
) -> Result<()> {
    let src = File::open(&lb.path).map_err(RepoError::io(&lb.path, "opening"))?;
    let len = align_up(u64::from(e.stored_len));
    if lb.offset + len <= lb.map_end
        && bulwark_sys::ficlone_range(&src, lb.offset, dst, dst_off, len).is_ok()
    {
        // Cloned bytes are the sealed file's; check them once, as a copy would.
        let mut buf = vec![0u8; e.stored_len as usize];
        dst.read_exact_at(&mut buf, dst_off)
            .map_err(RepoError::io(dst_path, "reading back"))?;
        if Digest::of(&buf) == e.stored_hash {
            return Ok(());
        }
    }
    let mut buf = vec![0u8; e.stored_len as usize];
    src.read_exact_at(&mut buf, lb.offset)
        .map_err(RepoError::io(&lb.path, "reading a block from"))?;
    if Digest::of(&buf) != e.stored_hash {
        return Err(RepoError::Format {
            path: lb.path.clone(),
            source: FormatError::StoredHash {
                block: e.block,
                offset: lb.offset,
            },
        });
    }
    dst.write_all_at(&buf, dst_off)
        .map_err(RepoError::io(dst_path, "writing a block into"))?;
    // A shorter block over a longer clone's tail leaves no stale bytes in the padding.
    let pad = (len - u64::from(e.stored_len)) as usize;
    if pad > 0 {
        dst.write_all_at(&vec![0u8; pad], dst_off + u64::from(e.stored_len))
            .map_err(RepoError::io(dst_path, "writing padding into"))?;
    }
    Ok(())
}

impl CopyReceiver {
    /// What must be sent.
    pub fn plan(&self) -> &CopyPlan {
        &self.plan
    }

    /// The next block the receiver expects, if any.
    pub fn expects(&self) -> Option<BlockNo> {
        self.plan.needed.get(self.next).copied()
    }

    /// Receives the stored bytes of the next needed block, checked against the map's stored
    /// hash and length before they are written.
    pub fn put(&mut self, block: BlockNo, stored: &[u8]) -> Result<()> {
        if self.expects() != Some(block) {
            return Err(RepoError::Usage(format!(
                "block {block} sent, but the copy expects {}",
                self.expects()
                    .map_or("no more blocks".into(), |b| format!("block {b}"))
            )));
        }
        let bad = |why: &str| {
            RepoError::Usage(format!(
                "block {block} of the copied restore point: {why}; the copy was stopped, run it again \
                 (the source may be damaged: `bulwark verify` there)"
            ))
        };
        match &mut self.w {
            Writing::Held { .. } => return Err(bad("nothing is expected")),
            Writing::Verbatim {
                file,
                part,
                entries,
                unsynced,
                ..
            } => {
                let e = entries.get(&block.0).ok_or_else(|| bad("not needed"))?;
                if stored.len() != e.stored_len as usize || Digest::of(stored) != e.stored_hash {
                    return Err(bad("its bytes do not match the stored hash in the map"));
                }
                file.write_all_at(stored, e.offset)
                    .map_err(RepoError::io(part, "writing a block into"))
                    .map_err(|e| unless_full(part, e))?;
                *unsynced += stored.len() as u64;
                if *unsynced >= SYNC_EVERY {
                    file.sync_data()
                        .map_err(RepoError::io(part, "syncing"))
                        .map_err(|e| unless_full(part, e))?;
                    *unsynced = 0;
                }
            }
            Writing::Rechain { builder, reserved } => {
                let e = reserved.get(&block.0).ok_or_else(|| bad("not needed"))?;
                if stored.len() != e.stored_len as usize || Digest::of(stored) != e.stored_hash {
                    return Err(bad("its bytes do not match the stored hash in the map"));
                }
                let (f, path) = builder.file();
                f.write_all_at(stored, e.offset)
                    .map_err(RepoError::io(path, "writing a block into"))?;
            }
        }
        self.next += 1;
        self.received += stored.len() as u64;
        Ok(())
    }

    /// Completes the copy: checks the file, makes it durable and seals it with this
    /// repository's own period, chain rule and GFS lifetime.
    pub fn finish(self, repo: &Repository) -> Result<CopiedPoint> {
        if self.expects().is_some() {
            return Err(RepoError::Usage(format!(
                "the copy ended with {} of {} needed blocks received",
                self.next,
                self.plan.needed.len()
            )));
        }
        let received = self.received;
        match self.w {
            Writing::Held { point, root } => Ok(CopiedPoint {
                mode: CopyMode::Held,
                sealed: None,
                point,
                root,
                bytes_received: 0,
                retention: None,
            }),
            Writing::Rechain { builder, .. } => {
                let sealed = builder.finish()?;
                Ok(CopiedPoint {
                    mode: self.plan.mode,
                    point: sealed.meta.point,
                    root: sealed.root,
                    retention: Some(sealed.meta.retention),
                    sealed: Some(sealed),
                    bytes_received: received,
                })
            }
            Writing::Verbatim {
                file,
                part,
                head_meta,
                root,
                _lock,
                ..
            } => {
                file.sync_all()
                    .map_err(RepoError::io(&part, "syncing"))
                    .map_err(|e| unless_full(&part, e))?;
                // Every block was checked as it was placed (received bytes before they were
                // written, local clones after cloning, resumed ones when re-read); the head is
                // checked once more, and the immutability service checks the padding.
                let r = PointReader::open(file).map_err(RepoError::format(&part))?;
                if r.trailer.root_digest != root {
                    return Err(RepoError::Usage(format!(
                        "{} changed while it was being written",
                        part.display()
                    )));
                }
                drop(r);
                let meta = *head_meta;
                let done = layout::incoming_path(repo.root(), meta.point);
                if part != done {
                    std::fs::rename(&part, &done)
                        .map_err(RepoError::io(&done, "renaming finished copy to"))?;
                    fsync_dir(&layout::incoming_dir(repo.root()))?;
                }
                // Decided before sealing, from this repository's policy and the fulls it
                // holds without this one.
                let (class, gfs_until) =
                    repo.retention_for_new(&meta.job, meta.kind, meta.created_unix_secs)?;
                let socket = repo.config().immutd_socket.clone();
                let (path, immutable, mut expiry) =
                    crate::writer::seal(repo.root(), socket.as_deref(), &done, &meta, root)?;
                if let Some(socket) = socket.as_deref() {
                    // This repository's period from now by its clock: the file's creation
                    // time is the source's and never shortens anything here.
                    let (now, _) = now_unix();
                    let until = now + i64::from(repo.config().immutable_days) * 86_400;
                    let chain: Vec<PointId> = point_files(repo.root(), &meta.job)?
                        .into_iter()
                        .filter(|(c, p, _)| *c == meta.chain && *p != meta.point)
                        .map(|(_, p, _)| p)
                        .collect();
                    let own = until.max(gfs_until.unwrap_or(0));
                    expiry = Some(crate::seal_immutd::extend_chain(
                        socket, &chain, until, meta.point, own,
                    )?);
                }
                Ok(CopiedPoint {
                    mode: CopyMode::Verbatim,
                    point: meta.point,
                    root,
                    sealed: Some(SealedPoint {
                        path,
                        meta,
                        root,
                        immutable,
                        expiry,
                    }),
                    bytes_received: received,
                    retention: Some(class),
                })
            }
        }
    }
}
