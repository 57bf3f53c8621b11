//! Remote restore: the server streams stored bytes in block order; workers on every core
//! decompress, check the plain hash recorded at backup and write. A regular file is written
//! under a temporary name and renamed when complete; a block device is written in place,
//! unmapped blocks as zeros.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bulwark_engine::{RestoreOptions, RestoreSummary, RestoreTarget};
use bulwark_format::{plain_len_of, BlockDecoder, MapEntry, PointId};
use bulwark_protocol::{Msg, BLOCK_HEADER_LEN};
use crossbeam_channel::bounded;

use crate::{Conn, RemoteAddr, RemoteError, Result};

/// Restores restore point `point` of `job` (the newest with `None`) from the repository at
/// `addr` to `target`. An encrypted point needs its `key` (the symmetric key file or the
/// private restore key): the server sends ciphertext and the sessions' wrapped keys, this
/// client decrypts. Keys are checked before the target is created.
#[allow(clippy::too_many_arguments)]
pub fn restore_remote_with(
    config_dir: &Path,
    addr: &RemoteAddr,
    job: &str,
    point: Option<PointId>,
    target: &Path,
    opts: &RestoreOptions,
    key: Option<&bulwark_crypto::KeyFile>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let mut conn = Conn::session(config_dir, addr)?;
    conn.send(&Msg::BeginRestore {
        job: job.to_string(),
        point,
    })?;
    let mut record = None;
    let (summary, blocks) = loop {
        match conn.recv()? {
            Msg::EncryptionRecord { record: r } if record.is_none() => record = Some(r),
            Msg::RestoreReady { point, blocks } => break (point, blocks),
            m => return Err(m.unexpected("RestoreReady").into()),
        }
    };
    let decryptor = match (&record, key) {
        (None, None) => None,
        (Some(r), Some(k)) => Some(bulwark_engine::Decryptor::for_record(summary.point, r, k)?),
        (Some(r), None) => {
            let fp = bulwark_format::EncryptionRecord::decode(r)
                .map(|r| format!("{} key {}", r.mode.as_str(), r.fingerprint()))
                .unwrap_or_default();
            return Err(RemoteError::Usage(format!(
                "restore point {} is encrypted ({fp}): give --key KEYFILE (symmetric) or --restore-key PRIVATE (write-only backups); nothing was written",
                summary.point
            )));
        }
        (None, Some(_)) => {
            return Err(RemoteError::Usage(format!(
                "restore point {} is not encrypted: restore it without --key/--restore-key",
                summary.point
            )))
        }
    };
    bulwark_format::check_block_size(summary.block_size)
        .map_err(|e| RemoteError::Usage(format!("server announced a bad block size: {e}")))?;
    let nblocks = bulwark_format::block_count(summary.disk_size, summary.block_size);
    if blocks > nblocks {
        return Err(RemoteError::Usage(format!(
            "server announced {blocks} blocks for a disk of {nblocks}"
        )));
    }
    let out = RestoreTarget::create(target, summary.disk_size, opts.force)?;
    let res = receive(
        &mut conn,
        &out,
        &summary,
        blocks,
        opts.threads,
        decryptor.as_ref(),
        progress,
    )
    .and_then(|n| {
        out.finish()?;
        Ok(n)
    });
    match res {
        Ok((blocks_written, bytes_written)) => {
            conn.close();
            Ok(RestoreSummary {
                point: summary.point,
                disk_size: summary.disk_size,
                blocks_written,
                bytes_written,
                elapsed: started.elapsed(),
            })
        }
        Err(e) => Err(e),
    }
}

fn receive(
    conn: &mut Conn,
    target_file: &RestoreTarget,
    s: &bulwark_protocol::PointSummary,
    blocks: u64,
    threads: usize,
    decryptor: Option<&bulwark_engine::Decryptor>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(u64, u64)> {
    let threads = threads.max(1);
    let zero_fill = target_file.is_device;
    let bs = u64::from(s.block_size);
    let pool = threads * 2 + 2;
    let (free_tx, free_rx) = bounded::<Vec<u8>>(pool);
    for _ in 0..pool {
        free_tx.send(Vec::new()).expect("pool fits");
    }
    // Each work item is a whole `Block` payload; the stored bytes follow its header.
    let (work_tx, work_rx) = bounded::<(MapEntry, bulwark_protocol::Payload)>(pool);
    let failed = AtomicBool::new(false);
    let mut mapped: Vec<u64> = Vec::new();
    std::thread::scope(|scope| -> Result<(u64, u64)> {
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (work_rx, free_tx, failed) = (work_rx.clone(), free_tx.clone(), &failed);
            handles.push(scope.spawn(move || -> Result<(u64, u64)> {
                let (mut plain, mut payload) = (Vec::new(), Vec::new());
                let (mut n, mut bytes) = (0u64, 0u64);
                let mut dec = BlockDecoder::new().map_err(|e| RemoteError::Usage(e.to_string()))?;
                for (e, buf) in work_rx {
                    let stored = &buf.bytes()[BLOCK_HEADER_LEN..];
                    let decoded = match decryptor {
                        Some(d) => d
                            .decode(&mut dec, s.point, &e, stored, &mut payload, &mut plain)
                            .map_err(|err| RemoteError::Damaged(err.to_string())),
                        None => dec
                            .decode_checking_plain(&e, stored, &mut plain)
                            .map_err(|err| RemoteError::Damaged(err.to_string())),
                    };
                    let r = decoded.and_then(|p| Ok(target_file.write_at(p, e.block.0 * bs)?));
                    if let Err(err) = r {
                        failed.store(true, Ordering::Relaxed);
                        return Err(err);
                    }
                    n += 1;
                    bytes += u64::from(e.plain_len);
                    progress(u64::from(e.plain_len));
                    let _ = free_tx.send(buf.buf);
                }
                Ok((n, bytes))
            }));
        }
        drop(work_rx);
        drop(free_tx);
        let recv_res = (|| -> Result<()> {
            let mut next = 0u64;
            let mut got = 0u64;
            loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                conn.recv_frame()?;
                let block = match conn.last()? {
                    Msg::Block(b) => {
                        let nb = bulwark_format::block_count(s.disk_size, s.block_size);
                        if b.block.0 < next || b.block.0 >= nb || got >= blocks {
                            return Err(RemoteError::Usage(format!(
                                "server sent block {} out of order",
                                b.block.0
                            )));
                        }
                        if b.plain_len != plain_len_of(b.block, s.disk_size, s.block_size) {
                            return Err(RemoteError::Damaged(format!(
                                "block {}: wrong plain length",
                                b.block.0
                            )));
                        }
                        Some(b.own_entry(0))
                    }
                    Msg::RestoreEnd { blocks: n } => {
                        if n != blocks || got != blocks {
                            return Err(RemoteError::Usage(format!(
                                "restore stream ended after {got} of {blocks} blocks"
                            )));
                        }
                        return Ok(());
                    }
                    m => return Err(m.unexpected("Block or RestoreEnd").into()),
                };
                if let Some(e) = block {
                    let Ok(spare) = free_rx.recv() else {
                        return Ok(());
                    };
                    let payload = conn.swap_payload(spare);
                    if zero_fill {
                        mapped.push(e.block.0);
                    }
                    next = e.block.0 + 1;
                    got += 1;
                    if work_tx.send((e, payload)).is_err() {
                        return Ok(());
                    }
                }
            }
        })();
        drop(work_tx);
        let total = bulwark_engine::join_workers(handles)?;
        recv_res?;
        target_file.zero_unmapped(&mapped, s.disk_size, s.block_size)?;
        Ok(total)
    })
}
