//! Restoring a restore point to a file or block device.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes written between two starts of writeback.
const WRITEBACK_CHUNK: u64 = 256 << 20;
/// How far ahead of the workers stored data is requested from the device.
const PREFETCH: u64 = 32 << 20;

use bulwark_format::{MapEntry, PointId};
use bulwark_repository::{fsync_dir, ChainReader, Repository};

use crate::{EngineError, Result};

/// How to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub threads: usize,
    /// Replace an existing regular file.
    pub force: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            threads: crate::default_threads() + 1,
            force: false,
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct RestoreSummary {
    pub point: PointId,
    pub disk_size: u64,
    pub blocks_written: u64,
    pub bytes_written: u64,
    pub elapsed: Duration,
}

fn terr(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |source| EngineError::TargetIo {
        path,
        action,
        source,
    }
}

/// Restores restore point `point` of `job` (the newest with `None`) to `target`. A regular
/// file is written under a temporary name and renamed when complete, with zero blocks left
/// as holes; a block device is written in place, zero blocks included.
pub fn restore_local(
    repo: &Repository,
    job: &str,
    point: Option<PointId>,
    target: &Path,
    opts: &RestoreOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let chain = repo.open_point(job, point)?;
    let meta = chain.point().meta.clone();
    let is_device = std::fs::metadata(target)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    let (file, partial): (File, Option<PathBuf>) = if is_device {
        let f = OpenOptions::new()
            .write(true)
            .open(target)
            .map_err(terr(target, "opening device"))?;
        let dev_size = rustix::fs::seek(&f, rustix::fs::SeekFrom::End(0))
            .map_err(|e| terr(target, "reading size")(e.into()))?;
        if dev_size < meta.disk_size {
            return Err(EngineError::Usage(format!(
                "device {} holds {dev_size} bytes but the restore point's disk is {} bytes",
                target.display(),
                meta.disk_size
            )));
        }
        (f, None)
    } else {
        if target.exists() && !opts.force {
            return Err(EngineError::Usage(format!(
                "{} exists; choose another target or pass --force to replace it",
                target.display()
            )));
        }
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.bulwark-partial-{}", std::process::id()));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(terr(&tmp, "creating"))?;
        f.set_len(meta.disk_size).map_err(terr(&tmp, "sizing"))?;
        (f, Some(tmp))
    };
    let res = write_blocks(
        &chain,
        &file,
        target,
        is_device,
        meta.disk_size,
        meta.block_size,
        opts.threads,
        progress,
    );
    let finish = res.and_then(|n| {
        file.sync_all().map_err(terr(target, "fsyncing"))?;
        if let Some(tmp) = &partial {
            std::fs::rename(tmp, target).map_err(terr(target, "renaming into place"))?;
            let dir = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            fsync_dir(dir)?;
        }
        Ok(n)
    });
    match finish {
        Ok((blocks_written, bytes_written)) => Ok(RestoreSummary {
            point: meta.point,
            disk_size: meta.disk_size,
            blocks_written,
            bytes_written,
            elapsed: started.elapsed(),
        }),
        Err(e) => {
            if let Some(tmp) = partial {
                let _ = std::fs::remove_file(tmp);
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_blocks(
    chain: &ChainReader,
    out: &File,
    target: &Path,
    zero_fill: bool,
    disk_size: u64,
    block_size: u32,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(u64, u64)> {
    let bs = u64::from(block_size);
    let threads = threads.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<MapEntry>(threads * 4);
    let written = AtomicU64::new(0);
    let written = &written;
    std::thread::scope(|s| -> Result<(u64, u64)> {
        let mut handles = Vec::new();
        for _ in 0..threads {
            let rx = rx.clone();
            handles.push(s.spawn(move || -> Result<(u64, u64)> {
                let (mut stored, mut plain) = (Vec::new(), Vec::new());
                let (mut n, mut bytes) = (0u64, 0u64);
                for e in rx {
                    chain.read_block(&e, &mut stored, &mut plain)?;
                    out.write_all_at(&plain, e.block.0 * bs)
                        .map_err(terr(target, "writing"))?;
                    n += 1;
                    bytes += plain.len() as u64;
                    progress(plain.len() as u64);
                    // Start writeback every so often so the final fsync does not wait for
                    // the whole disk (and the page cache is not flooded).
                    let total = written.fetch_add(plain.len() as u64, Ordering::Relaxed)
                        + plain.len() as u64;
                    if total / WRITEBACK_CHUNK != (total - plain.len() as u64) / WRITEBACK_CHUNK {
                        let _ = rustix::fs::fadvise(out, 0, 0, rustix::fs::Advice::DontNeed);
                    }
                }
                Ok((n, bytes))
            }));
        }
        drop(rx);
        let entries = chain.entries();
        // Ask the device for the stored bytes some blocks ahead of the workers.
        let ahead = (PREFETCH / bs).max(1) as usize;
        let prefetch = |e: &MapEntry| {
            let f = chain.file_of(e).file();
            let _ = rustix::fs::fadvise(
                f,
                e.offset,
                u64::from(e.stored_len),
                rustix::fs::Advice::WillNeed,
            );
        };
        entries.iter().take(ahead).for_each(prefetch);
        for (i, e) in entries.iter().enumerate() {
            if let Some(next) = entries.get(i + ahead) {
                prefetch(next);
            }
            if tx.send(*e).is_err() {
                break;
            }
        }
        drop(tx);
        let mut total = (0, 0);
        let mut first_err = None;
        for h in handles {
            match h.join().expect("restore worker") {
                Ok((n, b)) => {
                    total.0 += n;
                    total.1 += b;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if zero_fill {
            zero_unmapped(chain.entries(), out, target, disk_size, block_size)?;
        }
        Ok(total)
    })
}

/// On a device, blocks absent from the map must be written as zeros.
fn zero_unmapped(
    entries: &[MapEntry],
    out: &File,
    target: &Path,
    disk_size: u64,
    block_size: u32,
) -> Result<()> {
    let zeros = vec![0u8; block_size as usize];
    let mut it = entries.iter().peekable();
    for block in 0..bulwark_format::block_count(disk_size, block_size) {
        if it.peek().is_some_and(|e| e.block.0 == block) {
            it.next();
            continue;
        }
        let len =
            bulwark_format::plain_len_of(bulwark_format::BlockNo(block), disk_size, block_size)
                as usize;
        out.write_all_at(&zeros[..len], block * u64::from(block_size))
            .map_err(terr(target, "writing zeros"))?;
    }
    Ok(())
}
