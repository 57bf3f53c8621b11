//! Where a restore writes: a new regular file (under a temporary name until complete, zero
//! blocks and all-zero 4 KiB pages left as holes) or a block device (in place, every zero
//! written).
//!
//! A block device is refused when it is mounted (`/proc/self/mountinfo`) or in use: it is
//! opened `O_EXCL`, which the kernel refuses for a device that is mounted, an active swap
//! area, a member of LVM / RAID / device-mapper, or claimed by another program, and the
//! claim is held for the whole restore. A device that holds a filesystem, volume or
//! partition-table signature ([`signature`]) is overwritten only with `force`.
//!
//! A file is written as `.NAME.bulwark-partial-PID`, locked (`flock`) while the restore
//! runs, and removed on failure, on SIGINT / SIGTERM / SIGHUP, and — if the process was
//! killed outright — by the next restore to the same target, which removes partial files of
//! processes that are gone and that nobody holds locked.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bulwark_format::{block_count, plain_len_of, BlockNo};
use bulwark_repository::fsync_dir;

use crate::{EngineError, Result};

pub(crate) fn terr(
    path: &Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |source| EngineError::TargetIo {
        path,
        action,
        source,
    }
}

fn parent_dir(target: &Path) -> &Path {
    target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// What the first bytes of a device say it holds, if anything Bulwark should not overwrite
/// without `--force`: filesystems, swap, volume and encryption headers, partition tables.
/// `head` is the device's first [`SIGNATURE_BYTES`] bytes (fewer for a smaller device).
pub fn signature(head: &[u8]) -> Option<&'static str> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    const CHECKS: &[(usize, &[u8], &str)] = &[
        (0, b"XFSB", "an XFS filesystem"),
        (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
        (512, b"LABELONE", "an LVM2 physical volume"),
        (536, b"LVM2 001", "an LVM2 physical volume"),
        (1080, &[0x53, 0xef], "an ext2/3/4 filesystem"),
        (0x10040, b"_BHRfS_M", "a btrfs filesystem"),
        (4086, b"SWAPSPACE2", "a swap area"),
        (4086, b"SWAP-SPACE", "a swap area"),
        (65526, b"SWAPSPACE2", "a swap area (64 KiB pages)"),
        (3, b"NTFS    ", "an NTFS filesystem"),
        (0x8001, b"CD001", "an ISO 9660 filesystem"),
        (512, b"EFI PART", "a GPT partition table"),
        (510, &[0x55, 0xaa], "an MBR partition table or boot sector"),
    ];
    CHECKS
        .iter()
        .find(|(off, magic, _)| at(*off, magic))
        .map(|(_, _, what)| *what)
}

/// Bytes [`signature`] looks at.
pub const SIGNATURE_BYTES: usize = 0x10040 + 8;

/// Where `dev` (a block device) is mounted, from `/proc/self/mountinfo`.
fn mounted_at(dev: &Path, rdev: u64) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let id = format!("{}:{}", bulwark_sys::major(rdev), bulwark_sys::minor(rdev));
    let canon = std::fs::canonicalize(dev).ok();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        let source = f.get(sep + 2)?;
        let same_source = canon
            .as_deref()
            .is_some_and(|c| std::fs::canonicalize(source).ok().as_deref() == Some(c));
        (f.get(2) == Some(&id.as_str()) || same_source)
            .then(|| f.get(4).unwrap_or(&"?").replace("\\040", " "))
    })
}

/// Opens a block device for a restore: not mounted, claimed exclusively, and either blank
/// or `force`.
fn open_device(target: &Path, rdev: u64, disk_size: u64, force: bool) -> Result<File> {
    if let Some(mnt) = mounted_at(target, rdev) {
        return Err(EngineError::Usage(format!(
            "{} is mounted at {mnt}; a restore would destroy the live filesystem: unmount it first (umount {mnt}), or restore to another device or a file",
            target.display()
        )));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(bulwark_sys::open::EXCL)
        .open(target)
        .map_err(|e| {
            if e.raw_os_error() == Some(bulwark_sys::errno::EBUSY) {
                EngineError::Usage(format!(
                    "{} is in use (mounted, an active swap area, part of LVM, RAID or device-mapper, or opened exclusively by another program); nothing was written: free it first (see `lsblk {}`, `swapon --show`, `pvs`), or restore elsewhere",
                    target.display(),
                    target.display()
                ))
            } else {
                terr(target, "opening device")(e)
            }
        })?;
    let size = (&file)
        .seek(SeekFrom::End(0))
        .map_err(terr(target, "reading size"))?;
    if size < disk_size {
        return Err(EngineError::Usage(format!(
            "device {} holds {size} bytes but the restore point's disk is {disk_size} bytes",
            target.display()
        )));
    }
    if !force {
        let mut head = vec![0u8; SIGNATURE_BYTES.min(size as usize)];
        let mut got = 0;
        while got < head.len() {
            match file.read_at(&mut head[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(terr(target, "reading its first blocks")(e)),
            }
        }
        if let Some(what) = signature(&head[..got]) {
            return Err(EngineError::Usage(format!(
                "{} holds {what}; a restore overwrites all of it: check that this is the right device (lsblk -f {}), then pass --force",
                target.display(),
                target.display()
            )));
        }
    }
    Ok(file)
}

/// Removes partial files of earlier restores to `name` in `dir` whose process is gone and
/// that no running restore holds locked.
fn remove_stale_partials(dir: &Path, name: &str) {
    let prefix = format!(".{name}.bulwark-partial-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let fname = e.file_name();
        let Some(pid) = fname.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let path = e.path();
        let Ok(f) = OpenOptions::new()
            .read(true)
            .custom_flags(bulwark_sys::open::NOFOLLOW)
            .open(&path)
        else {
            continue;
        };
        if !f.metadata().is_ok_and(|m| m.is_file())
            || !matches!(bulwark_sys::try_lock_exclusive(&f), Ok(true))
        {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), "removed the partial file of an earlier restore that did not finish")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot remove the partial file of an earlier restore: {e}")
            }
        }
    }
}

/// An opened restore target. Dropped without [`RestoreTarget::finish`], it removes its
/// temporary file, so a failed restore never leaves a half-written file under the target's name.
pub struct RestoreTarget {
    pub file: File,
    pub is_device: bool,
    path: PathBuf,
    partial: Option<PathBuf>,
    written: AtomicU64,
}

/// Writeback of restored data starts every this many bytes, so the final fsync does not wait
/// for the whole disk and the page cache is not flooded with dirty pages.
const WRITEBACK_CHUNK: u64 = 256 << 20;

impl RestoreTarget {
    /// Opens `target` for a disk of `disk_size` bytes. An existing regular file is replaced
    /// only with `force`; a device must be large enough.
    pub fn create(target: &Path, disk_size: u64, force: bool) -> Result<RestoreTarget> {
        let meta = std::fs::metadata(target).ok();
        let is_device = meta
            .as_ref()
            .is_some_and(|m| m.file_type().is_block_device());
        if let (true, Some(m)) = (is_device, &meta) {
            let file = open_device(target, m.rdev(), disk_size, force)?;
            return Ok(RestoreTarget {
                file,
                is_device,
                path: target.to_path_buf(),
                partial: None,
                written: AtomicU64::new(0),
            });
        }
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(EngineError::Usage(format!(
                "{} is a folder: give the path of the disk image to write, e.g. {}",
                target.display(),
                target.join("disk.img").display()
            )));
        }
        if target.exists() && !force {
            return Err(EngineError::Usage(format!(
                "{} exists; choose another target or pass --force to replace it",
                target.display()
            )));
        }
        let folder = parent_dir(target);
        if !folder.is_dir() {
            return Err(EngineError::Usage(format!(
                "folder {} does not exist: create it first (mkdir -p {}) or restore elsewhere; nothing was written",
                folder.display(),
                folder.display()
            )));
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        remove_stale_partials(parent_dir(target), &name);
        let tmp =
            parent_dir(target).join(format!(".{name}.bulwark-partial-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    EngineError::Usage(format!(
                        "cannot create {} in folder {} ({e}): restore to a folder you can write to; nothing was written",
                        target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                        folder.display()
                    ))
                }
                _ => terr(&tmp, "creating")(e),
            })?;
        // Held until the file is closed: tells a later restore that this one still runs.
        let _ = bulwark_sys::try_lock_exclusive(&file);
        bulwark_sys::unlink_on_signal(Some(&tmp));
        let target = RestoreTarget {
            file,
            is_device,
            path: target.to_path_buf(),
            partial: Some(tmp),
            written: AtomicU64::new(0),
        };
        target
            .file
            .set_len(disk_size)
            .map_err(terr(&target.path, "sizing"))?;
        Ok(target)
    }

    /// Writes one restored block at `offset`; callable from every worker at once. Into a new
    /// file, the block's all-zero 4 KiB pages are not written: the file reads as zeros there
    /// already, so a thin disk's restore stays thin and writes only its data. A device gets
    /// every byte.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        let mut len = 0u64;
        if self.is_device {
            self.file
                .write_all_at(data, offset)
                .map_err(terr(&self.path, "writing"))?;
            len = data.len() as u64;
        } else {
            for (at, run) in nonzero_runs(data, offset) {
                self.file
                    .write_all_at(run, at)
                    .map_err(terr(&self.path, "writing"))?;
                len += run.len() as u64;
            }
        }
        if len == 0 {
            return Ok(());
        }
        let total = self.written.fetch_add(len, Ordering::Relaxed) + len;
        if total / WRITEBACK_CHUNK != (total - len) / WRITEBACK_CHUNK {
            let _ = bulwark_sys::fadvise(&self.file, 0, 0, bulwark_sys::Advice::DontNeed);
        }
        Ok(())
    }

    /// On a device, writes zeros over every block not in `mapped` (sorted block numbers);
    /// a new file already reads as zeros there.
    pub fn zero_unmapped(&self, mapped: &[u64], disk_size: u64, block_size: u32) -> Result<()> {
        if !self.is_device {
            return Ok(());
        }
        let zeros = vec![0u8; block_size as usize];
        let mut it = mapped.iter().peekable();
        for block in 0..block_count(disk_size, block_size) {
            if it.peek().is_some_and(|&&b| b == block) {
                it.next();
                continue;
            }
            let len = plain_len_of(BlockNo(block), disk_size, block_size) as usize;
            self.file
                .write_all_at(&zeros[..len], block * u64::from(block_size))
                .map_err(terr(&self.path, "writing zeros"))?;
        }
        Ok(())
    }

    /// Makes the restored disk durable and, for a file, puts it under its name.
    pub fn finish(mut self) -> Result<()> {
        self.file.sync_all().map_err(terr(&self.path, "fsyncing"))?;
        if let Some(tmp) = self.partial.take() {
            bulwark_sys::unlink_on_signal(None);
            if let Err(e) = std::fs::rename(&tmp, &self.path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(terr(&self.path, "renaming into place")(e));
            }
            fsync_dir(parent_dir(&self.path))?;
        }
        Ok(())
    }
}

impl Drop for RestoreTarget {
    fn drop(&mut self) {
        if let Some(tmp) = &self.partial {
            bulwark_sys::unlink_on_signal(None);
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// The page size a new file's holes are left at.
const PAGE: usize = 4096;

/// The runs of `data` (written at `offset`) that are not all-zero 4 KiB pages, each with
/// the offset it goes to; pages are counted from `offset` (a block's start).
fn nonzero_runs(data: &[u8], offset: u64) -> impl Iterator<Item = (u64, &[u8])> {
    let pages = data.len().div_ceil(PAGE);
    let zero = move |i: usize| is_zero(&data[i * PAGE..((i + 1) * PAGE).min(data.len())]);
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < pages && zero(i) {
            i += 1;
        }
        if i == pages {
            return None;
        }
        let start = i;
        while i < pages && !zero(i) {
            i += 1;
        }
        let (a, b) = (start * PAGE, (i * PAGE).min(data.len()));
        Some((offset + a as u64, &data[a..b]))
    })
}

/// Whether every byte of `b` is zero, 16 bytes at a time (in any byte order: zero is zero).
fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(16);
    let words_zero = words
        .by_ref()
        .all(|w| u128::from_le_bytes(w.try_into().expect("16 bytes")) == 0);
    words_zero && words.remainder().iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_files_restore_writes_only_pages_that_are_not_zero() {
        let mut block = vec![0u8; 8 * PAGE + 100];
        block[PAGE + 5] = 1; // page 1
        block[2 * PAGE] = 2; // page 2, joined with page 1
        block[5 * PAGE + PAGE - 1] = 3; // page 5
        block[8 * PAGE + 99] = 4; // the short last page
        let runs: Vec<(u64, usize)> = nonzero_runs(&block, 1 << 20)
            .map(|(at, r)| (at, r.len()))
            .collect();
        let p = PAGE as u64;
        assert_eq!(
            runs,
            [
                ((1 << 20) + p, 2 * PAGE),
                ((1 << 20) + 5 * p, PAGE),
                ((1 << 20) + 8 * p, 100)
            ]
        );
        assert_eq!(nonzero_runs(&vec![0u8; 3 * PAGE], 0).count(), 0);
        assert_eq!(nonzero_runs(&[], 0).count(), 0);
        let full = vec![7u8; 2 * PAGE + 1];
        let all: Vec<_> = nonzero_runs(&full, 0).collect();
        assert_eq!(all, [(0, &full[..])]);
        assert!(is_zero(&[0; 33]) && !is_zero(&[0, 0, 1]));
        let mut late = [0u8; 40];
        late[39] = 1;
        assert!(!is_zero(&late), "a non-zero byte in the remainder counts");
    }

    fn with(off: usize, magic: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; SIGNATURE_BYTES];
        b[off..off + magic.len()].copy_from_slice(magic);
        b
    }

    #[test]
    fn well_known_signatures_are_recognised_and_blank_devices_are_not() {
        assert_eq!(signature(&vec![0u8; SIGNATURE_BYTES]), None);
        assert_eq!(signature(&[]), None);
        assert_eq!(signature(&vec![0xffu8; SIGNATURE_BYTES]), None);
        for (off, magic, what) in [
            (1080, &[0x53u8, 0xef][..], "ext2/3/4"),
            (0, b"XFSB", "XFS"),
            (0x10040, b"_BHRfS_M", "btrfs"),
            (4086, b"SWAPSPACE2", "swap"),
            (512, b"LABELONE", "LVM2"),
            (0, b"LUKS\xba\xbe", "LUKS"),
            (512, b"EFI PART", "GPT"),
            (510, &[0x55, 0xaa], "MBR"),
        ] {
            let got = signature(&with(off, magic)).unwrap_or("nothing");
            assert!(got.contains(what), "{what} at {off}: {got}");
            // A device too small to hold the magic is not matched, and nothing panics.
            assert_eq!(signature(&with(off, magic)[..off]), None);
        }
    }
}
