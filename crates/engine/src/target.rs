//! Where a restore writes: a new regular file (under a temporary name until complete, zero
//! blocks left as holes) or a block device (in place, zero blocks written).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
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
        let is_device = std::fs::metadata(target)
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false);
        if is_device {
            let file = OpenOptions::new()
                .write(true)
                .open(target)
                .map_err(terr(target, "opening device"))?;
            let size = rustix::fs::seek(&file, rustix::fs::SeekFrom::End(0))
                .map_err(|e| terr(target, "reading size")(e.into()))?;
            if size < disk_size {
                return Err(EngineError::Usage(format!(
                    "device {} holds {size} bytes but the restore point's disk is {disk_size} bytes",
                    target.display()
                )));
            }
            return Ok(RestoreTarget {
                file,
                is_device,
                path: target.to_path_buf(),
                partial: None,
                written: AtomicU64::new(0),
            });
        }
        if target.exists() && !force {
            return Err(EngineError::Usage(format!(
                "{} exists; choose another target or pass --force to replace it",
                target.display()
            )));
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp =
            parent_dir(target).join(format!(".{name}.bulwark-partial-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(terr(&tmp, "creating"))?;
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

    /// Writes one restored block at `offset`; callable from every worker at once.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(data, offset)
            .map_err(terr(&self.path, "writing"))?;
        let len = data.len() as u64;
        let total = self.written.fetch_add(len, Ordering::Relaxed) + len;
        if total / WRITEBACK_CHUNK != (total - len) / WRITEBACK_CHUNK {
            let _ = rustix::fs::fadvise(&self.file, 0, 0, rustix::fs::Advice::DontNeed);
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
            let _ = std::fs::remove_file(tmp);
        }
    }
}
