//! Restoring a restore point to a file or block device.

use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_format::{BlockDecoder, MapEntry, PointId};
use bulwark_repository::{ChainReader, Repository};

use crate::target::RestoreTarget;
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
    restore_local_with(repo, job, point, target, opts, None, progress)
}

/// [`restore_local`] of a point that may be encrypted: `key` (the symmetric key file, or the
/// private restore key of write-only backups) must be given exactly when it is. Keys are
/// checked before the target is created.
pub fn restore_local_with(
    repo: &Repository,
    job: &str,
    point: Option<PointId>,
    target: &Path,
    opts: &RestoreOptions,
    key: Option<&bulwark_crypto::KeyFile>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let chain = repo.open_point(job, point)?;
    let meta = &chain.point().meta;
    let dec = match key {
        Some(k) => Some(crate::Decryptor::for_chain(&chain, k)?.ok_or_else(|| {
            EngineError::Usage(format!(
                "restore point {} is not encrypted: restore it without --key/--restore-key",
                meta.point
            ))
        })?),
        None => match crate::crypt::record_of(meta)? {
            Some(r) => {
                return Err(EngineError::Usage(format!(
                    "restore point {} is encrypted ({} key {}): give --key KEYFILE (symmetric) or --restore-key PRIVATE (write-only backups); nothing was written",
                    meta.point,
                    r.mode.as_str(),
                    r.fingerprint()
                )))
            }
            None => None,
        },
    };
    restore_chain(
        &chain,
        target,
        opts,
        started,
        progress,
        &|bd, e, stored, payload, plain| match &dec {
            None => Ok(chain.read_block_with(bd, e, stored, plain)?),
            Some(d) => {
                let f = chain.file_of(e);
                let local = MapEntry { file_ref: 0, ..*e };
                let s = f
                    .read_stored(&local, stored)
                    .map_err(|e| EngineError::Usage(e.to_string()))?;
                d.decode(bd, f.meta.point, e, s, payload, plain)
            }
        },
    )
}

/// Restores `chain`'s restore point to `target` with `decode` turning each map entry into its
/// plain block; `started` is when the caller began (for the summary).
fn restore_chain(
    chain: &ChainReader,
    target: &Path,
    opts: &RestoreOptions,
    started: Instant,
    progress: &(dyn Fn(u64) + Sync),
    decode: &DecodeFn<'_>,
) -> Result<RestoreSummary> {
    let meta = &chain.point().meta;
    let out = RestoreTarget::create(target, meta.disk_size, opts.force)?;
    let (blocks_written, bytes_written) =
        write_blocks_with(chain, &out, meta.block_size, opts.threads, progress, decode)?;
    let mapped: Vec<u64> = chain.entries().iter().map(|e| e.block.0).collect();
    out.zero_unmapped(&mapped, meta.disk_size, meta.block_size)?;
    out.finish()?;
    Ok(RestoreSummary {
        point: meta.point,
        disk_size: meta.disk_size,
        blocks_written,
        bytes_written,
        elapsed: started.elapsed(),
    })
}

pub(crate) type DecodeFn<'c> = dyn for<'a> Fn(
        &mut BlockDecoder,
        &MapEntry,
        &'a mut Vec<u8>,
        &'a mut Vec<u8>,
        &'a mut Vec<u8>,
    ) -> Result<&'a [u8]>
    + Sync
    + 'c;

/// The restore loop with a block decoder given by the caller: workers on every core, the map
/// read ahead of them (as [`crate::restore_local`] does).
fn write_blocks_with(
    chain: &ChainReader,
    out: &RestoreTarget,
    block_size: u32,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
    decode: &DecodeFn<'_>,
) -> Result<(u64, u64)> {
    let bs = u64::from(block_size);
    let threads = threads.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<MapEntry>(threads * 4);
    std::thread::scope(|s| -> Result<(u64, u64)> {
        let mut handles = Vec::new();
        for _ in 0..threads {
            let rx = rx.clone();
            handles.push(s.spawn(move || -> Result<(u64, u64)> {
                let (mut stored, mut payload, mut plain) = (Vec::new(), Vec::new(), Vec::new());
                let (mut n, mut bytes) = (0u64, 0u64);
                let mut dec = BlockDecoder::new().map_err(|e| EngineError::Usage(e.to_string()))?;
                for e in rx {
                    let plain = decode(&mut dec, &e, &mut stored, &mut payload, &mut plain)?;
                    out.write_at(plain, e.block.0 * bs)?;
                    n += 1;
                    bytes += plain.len() as u64;
                    progress(plain.len() as u64);
                }
                Ok((n, bytes))
            }));
        }
        drop(rx);
        let entries = chain.entries();
        let ahead = chain.prefetch_distance();
        entries.iter().take(ahead).for_each(|e| chain.will_need(e));
        for (i, e) in entries.iter().enumerate() {
            if let Some(next) = entries.get(i + ahead) {
                chain.will_need(next);
            }
            if tx.send(*e).is_err() {
                break;
            }
        }
        drop(tx);
        join_workers(handles)
    })
}

/// Joins restore workers that each return (blocks, bytes): the sums, or the first error.
pub fn join_workers<E>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, std::result::Result<(u64, u64), E>>>,
) -> std::result::Result<(u64, u64), E> {
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
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}
