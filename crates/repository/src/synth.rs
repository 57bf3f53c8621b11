//! Synthetic fulls: a new chain built on the repository from the newest restore point of a
//! job, by cloning each block (`FICLONERANGE`) from the sealed file that holds it. Only the
//! header, map, metadata and trailer are new bytes; on a filesystem without reflink the
//! blocks are copied instead, and the outcome says so.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_format::{align_up, Digest, FormatError, MapEntry, PointId, PointKind, ALIGN};
use bulwark_immut_msg::layout;

use crate::{NewPoint, RepoError, Repository, Result, SealedPoint};

/// Longest range cloned with one call, so that no single ioctl holds the files for long.
const MAX_CLONE_RUN: u64 = 1 << 30;

/// How the blocks of a synthetic full got into its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthMethod {
    /// Every block was cloned: the new file shares the old files' extents.
    Clone,
    /// At least some blocks were copied (read, checked and written), because the filesystem
    /// refused to clone them.
    Copy,
}

impl SynthMethod {
    /// Short name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            SynthMethod::Clone => "clone",
            SynthMethod::Copy => "copy",
        }
    }
}

/// What [`Repository::synthesize`] did.
#[derive(Debug, Clone)]
pub struct SyntheticOutcome {
    /// The new synthetic full, sealed like any restore point.
    pub sealed: SealedPoint,
    /// The restore point it reproduces (the newest of the job when it started).
    pub source_point: PointId,
    /// The chain that restore point belongs to.
    pub source_chain: PointId,
    pub method: SynthMethod,
    /// Why blocks were copied rather than cloned, when they were.
    pub fallback_reason: Option<String>,
    /// Blocks in the new full.
    pub blocks: u64,
    /// Bytes shared by cloning (block data with its 4 KiB padding).
    pub bytes_cloned: u64,
    /// Bytes copied by reading and writing.
    pub bytes_copied: u64,
    /// `FICLONERANGE` calls made (runs of contiguous blocks are cloned with one call).
    pub clone_calls: u64,
    pub elapsed: Duration,
}

/// Whether a folder's filesystem can clone blocks between files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReflinkSupport {
    /// `FICLONERANGE` works: synthetic fulls clone.
    Supported,
    /// It does not: synthetic fulls copy. The text says why (the filesystem's refusal).
    Unsupported(String),
}

impl ReflinkSupport {
    /// True when blocks can be cloned.
    pub fn is_supported(&self) -> bool {
        matches!(self, ReflinkSupport::Supported)
    }
}

/// The advice printed when a repository's filesystem cannot clone blocks.
pub const REFLINK_ADVICE: &str = "synthetic fulls will copy every block instead of sharing it; \
     to clone blocks, put the repository on XFS created with `mkfs.xfs -m reflink=1 DEVICE` \
     (the default since xfsprogs 5.1; an existing XFS made without it must be recreated)";

/// Name of a filesystem from its `statfs` magic, for messages.
pub fn filesystem_name(dir: &Path) -> String {
    match bulwark_sys::filesystem_type(dir) {
        Ok(t) => match t {
            0x5846_5342 => "xfs".into(),
            0xEF53 => "ext4".into(),
            0x9123_683E => "btrfs".into(),
            0x0102_1994 => "tmpfs".into(),
            0x2FC1_2FC1 => "zfs".into(),
            0x6969 => "nfs".into(),
            0x794C_7630 => "overlayfs".into(),
            t => format!("filesystem type {t:#x}"),
        },
        Err(e) => format!("unknown filesystem ({e})"),
    }
}

/// Probes `dir` by cloning a small temporary file into another; nothing is left behind.
pub fn probe_reflink(dir: &Path) -> Result<ReflinkSupport> {
    probe_in(dir, dir)
}

/// Probes with files in `dir`, naming `shown` in the message.
fn probe_in(dir: &Path, shown: &Path) -> Result<ReflinkSupport> {
    let src = temp_file(dir)?;
    src.write_all_at(&[0xA5; ALIGN as usize], 0)
        .map_err(RepoError::io(dir, "writing a reflink probe file in"))?;
    let dst = temp_file(dir)?;
    Ok(match bulwark_sys::ficlone_range(&src, 0, &dst, 0, 0) {
        Ok(()) => ReflinkSupport::Supported,
        Err(e) if bulwark_sys::is_unsupported(&e) => ReflinkSupport::Unsupported(format!(
            "{} at {} refuses to clone blocks ({e})",
            filesystem_name(dir),
            shown.display()
        )),
        Err(e) => return Err(RepoError::io(dir, "probing block cloning in")(e)),
    })
}

/// An unnamed file in `dir` (`O_TMPFILE`): it vanishes when closed, even after a crash.
fn temp_file(dir: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // std adds O_CLOEXEC; read and write make O_RDWR.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(bulwark_sys::open::TMPFILE)
        .mode(0o600)
        .open(dir)
        .map_err(RepoError::io(dir, "creating a temporary file in"))
}

impl crate::ChainReader {
    /// The encryption record of this point with the sessions of every file its blocks come
    /// from, so each block's salt names its wrapped data key (docs/encryption.md): what a
    /// synthetic full of it records, and what a restore over the network is sent. Needs no
    /// key; `None` for an unencrypted point.
    pub fn merged_encryption_record(&self) -> Result<Option<Vec<u8>>> {
        merged_encryption_record(self)
    }
}

fn merged_encryption_record(src: &crate::ChainReader) -> Result<Option<Vec<u8>>> {
    use bulwark_format::{EncryptionRecord, EXT_ENCRYPTION, SESSION_SALT_LEN};
    let bad = |e: FormatError| RepoError::Usage(format!("cannot build a synthetic full: {e}"));
    let Some(own) = src.point().meta.extension(EXT_ENCRYPTION) else {
        return Ok(None);
    };
    let mut record = EncryptionRecord::decode(own).map_err(bad)?;
    // Each file's record, decoded once, in the order its blocks first appear.
    let mut files: Vec<(PointId, EncryptionRecord)> =
        vec![(src.point().meta.point, record.clone())];
    // The salts the point's blocks carry: only those sessions are listed, so a chain
    // continued by synthetic fulls does not keep every session it ever had (the record holds
    // at most MAX_SESSIONS). A file written by one session holds only its salt; a block of a
    // file listing several (an earlier synthetic full) is asked for its first 16 bytes.
    let mut used: HashSet<[u8; SESSION_SALT_LEN]> = HashSet::new();
    for e in src.entries() {
        let f = src.file_of(e);
        let i = match files.iter().position(|(p, _)| *p == f.meta.point) {
            Some(i) => i,
            None => {
                let other = f.meta.extension(EXT_ENCRYPTION).ok_or_else(|| {
                    RepoError::Usage(format!(
                        "cannot build a synthetic full: restore point {} of the chain is not encrypted",
                        f.meta.point
                    ))
                })?;
                files.push((f.meta.point, EncryptionRecord::decode(other).map_err(bad)?));
                files.len() - 1
            }
        };
        if !e.is_encrypted() {
            continue;
        }
        let sessions = &files[i].1.sessions;
        if let [only] = &sessions[..] {
            used.insert(only.salt);
        } else {
            let mut salt = [0u8; SESSION_SALT_LEN];
            f.file()
                .read_exact_at(&mut salt, e.offset)
                .map_err(RepoError::io(
                    src.path_of(e),
                    "reading a block's session salt in",
                ))?;
            used.insert(salt);
        }
    }
    // The point's own session first (it wrote its own blocks), then every other session a
    // block uses, each once; the keys must agree.
    let own_salt = record.sessions[0].salt;
    record
        .sessions
        .retain(|s| s.salt == own_salt || used.contains(&s.salt));
    for (_, other) in &files[1..] {
        let mut needed = other.clone();
        needed.sessions.retain(|s| used.contains(&s.salt));
        // Merged also when it adds no session: the keys must agree (a chain never mixes keys).
        record.merge(&needed).map_err(bad)?;
    }
    Ok(Some(record.encode()))
}

/// Blocks of the new file that sit contiguously in one source file: one clone call.
struct Run {
    /// `file_ref` of the source in the reader's chain.
    src_ref: u32,
    src_off: u64,
    dst_off: u64,
    len: u64,
    /// Index range into the (source entry, new entry) list.
    first: usize,
    end: usize,
    /// False when a block's padded region is not inside its source's data region.
    cloneable: bool,
}

impl Repository {
    /// Probes whether this repository's filesystem can clone blocks.
    pub fn reflink_support(&self) -> Result<ReflinkSupport> {
        // incoming/ is the folder the service user can always create files in.
        probe_in(&layout::incoming_dir(self.root()), self.root())
    }

    /// Builds a synthetic full of `job` from its newest restore point: a new chain whose
    /// blocks are cloned from the sealed files that hold them (copied when the filesystem
    /// cannot clone), sealed like any restore point.
    pub fn synthesize(&self, job: &str) -> Result<SyntheticOutcome> {
        let started = Instant::now();
        let src = self.open_point(job, None)?;
        let sm = src.point().meta.clone();
        let mut b = self.begin_point(NewPoint {
            job: job.to_string(),
            parent: None,
            disk_size: sm.disk_size,
            block_size: sm.block_size,
            compression_level: sm.compression_level,
            client: sm.client.clone(),
            full_kind: PointKind::SyntheticFull,
        })?;
        // The job's lock is held from here: make sure nothing newer landed in between.
        let (_, newest, _) = self.locate(job, None)?;
        if newest != sm.point {
            return Err(RepoError::Usage(format!(
                "restore point {newest} of job {job:?} appeared while the synthetic full was starting; run it again"
            )));
        }

        if let Some(record) = src.merged_encryption_record()? {
            b.set_extension(bulwark_format::EXT_ENCRYPTION, record)?;
        }

        // Lay out the new file: every block reserved in order, grouped into runs that are
        // contiguous in both the source and the new file.
        let mut pairs: Vec<(MapEntry, MapEntry)> = Vec::with_capacity(src.entries().len());
        let mut runs: Vec<Run> = Vec::new();
        for se in src.entries() {
            let ne = b.reserve_stored(se)?;
            let len = align_up(u64::from(se.stored_len));
            let data_end = src.file_of(se).trailer.map_offset;
            let cloneable = se.offset % ALIGN == 0 && se.offset + len <= data_end;
            let i = pairs.len();
            pairs.push((*se, ne));
            if let Some(r) = runs.last_mut() {
                if r.cloneable
                    && cloneable
                    && r.src_ref == se.file_ref
                    && r.src_off + r.len == se.offset
                    && r.dst_off + r.len == ne.offset
                    && r.len + len <= MAX_CLONE_RUN
                {
                    r.len += len;
                    r.end = i + 1;
                    continue;
                }
            }
            runs.push(Run {
                src_ref: se.file_ref,
                src_off: se.offset,
                dst_off: ne.offset,
                len,
                first: i,
                end: i + 1,
                cloneable,
            });
        }

        let mut out = Counters::default();
        {
            let (dst, dst_path) = b.file();
            for r in &runs {
                let from = src.file_of(&pairs[r.first].0);
                let from_path = self.point_path(job, from.meta.chain, from.meta.point);
                if r.cloneable && out.fallback.is_none() {
                    match bulwark_sys::ficlone_range(from.file(), r.src_off, dst, r.dst_off, r.len)
                    {
                        Ok(()) => {
                            out.cloned += r.len;
                            out.calls += 1;
                            continue;
                        }
                        Err(e) if bulwark_sys::is_unsupported(&e) => {
                            out.fallback = Some(format!(
                                "{} refused to clone blocks ({e}); they were copied",
                                filesystem_name(dst_path.parent().unwrap_or(dst_path))
                            ));
                        }
                        Err(e) => return Err(RepoError::io(dst_path, "cloning blocks into")(e)),
                    }
                } else if !r.cloneable && out.fallback.is_none() {
                    out.fallback = Some(format!(
                        "block {} of {} lies outside its file's data region and was copied",
                        pairs[r.first].0.block,
                        from_path.display()
                    ));
                }
                for (se, ne) in &pairs[r.first..r.end] {
                    out.copied += copy_block(from.file(), se, dst, ne, &from_path, dst_path)?;
                }
            }
        }
        let sealed = b.finish()?;
        Ok(SyntheticOutcome {
            sealed,
            source_point: sm.point,
            source_chain: sm.chain,
            method: if out.copied == 0 {
                SynthMethod::Clone
            } else {
                SynthMethod::Copy
            },
            fallback_reason: out.fallback,
            blocks: pairs.len() as u64,
            bytes_cloned: out.cloned,
            bytes_copied: out.copied,
            clone_calls: out.calls,
            elapsed: started.elapsed(),
        })
    }
}

#[derive(Default)]
struct Counters {
    cloned: u64,
    copied: u64,
    calls: u64,
    fallback: Option<String>,
}

/// Copies one block with its padding, checking the stored bytes against their hash on the
/// way (a copy reads them anyway, and a damaged block must not start a new chain).
fn copy_block(
    from: &File,
    se: &MapEntry,
    dst: &File,
    ne: &MapEntry,
    src_path: &Path,
    dst_path: &Path,
) -> Result<u64> {
    let stored = se.stored_len as usize;
    let mut buf = vec![0u8; align_up(u64::from(se.stored_len)) as usize];
    from.read_exact_at(&mut buf[..stored], se.offset)
        .map_err(RepoError::io(src_path, "reading a block to copy from"))?;
    if Digest::of(&buf[..stored]) != se.stored_hash {
        return Err(RepoError::Format {
            path: src_path.to_path_buf(),
            source: FormatError::StoredHash {
                block: se.block,
                offset: se.offset,
            },
        });
    }
    dst.write_all_at(&buf, ne.offset)
        .map_err(RepoError::io(dst_path, "writing a copied block into"))?;
    Ok(buf.len() as u64)
}
