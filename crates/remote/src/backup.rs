//! Remote backup: the engine's pipeline feeds a sink that streams frames to the server. Blocks
//! are never acknowledged one by one: the pipeline runs at full speed and TCP carries the
//! back-pressure.

use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_engine::{
    plan_sealing, run_backup_pipeline, BackupOptions, BlockSink, Counters, EngineError, Input,
    KnownHashes, Sealing, Source, WriteKey,
};
use bulwark_format::{BlockNo, StoredBlock};
use bulwark_protocol::{BackupReady, BackupRequest, Msg, SealedInfo};

use crate::{Conn, RemoteAddr, RemoteError, Result};

/// Longest run of unchanged blocks sent as one frame (keeps the server's idle timer fed).
const MAX_RUN: u64 = 4096;

/// What a remote backup made.
#[derive(Debug)]
pub struct RemoteBackupSummary {
    pub sealed: SealedInfo,
    pub counters: Counters,
    pub elapsed: Duration,
    pub full_reason: Option<String>,
    pub client: String,
}

pub(crate) struct RemoteSink<'a> {
    pub(crate) conn: &'a mut Conn,
    pub(crate) run: Option<(u64, u64)>,
    pub(crate) sent: u64,
    pub(crate) err: Option<RemoteError>,
}

impl<'a> RemoteSink<'a> {
    /// A sink sending the blocks of the backup open on `conn`.
    pub(crate) fn new(conn: &'a mut Conn) -> Self {
        RemoteSink {
            conn,
            run: None,
            sent: 0,
            err: None,
        }
    }

    /// Ends the blocks after the pipeline's result `res`: its counters and the number of
    /// blocks sent, or the sink's own error when sending failed (the pipeline saw only
    /// that the sink did).
    pub(crate) fn finish(
        mut self,
        res: bulwark_engine::Result<Counters>,
    ) -> Result<(Counters, u64)> {
        let counters = match res {
            Ok(c) => c,
            Err(e) => return Err(self.err.take().unwrap_or(RemoteError::Engine(e))),
        };
        self.flush_run()?;
        Ok((counters, self.sent))
    }

    pub(crate) fn flush_run(&mut self) -> Result<()> {
        if let Some((first, count)) = self.run.take() {
            self.conn.send(&Msg::Unchanged { first, count })?;
            self.sent += count;
        }
        Ok(())
    }
    fn fail(&mut self, e: RemoteError) -> EngineError {
        let msg = e.to_string();
        self.err = Some(e);
        EngineError::Usage(msg)
    }
}

impl BlockSink for RemoteSink<'_> {
    fn put_stored(&mut self, b: StoredBlock<'_>) -> bulwark_engine::Result<()> {
        let r = self
            .flush_run()
            .and_then(|_| self.conn.send(&Msg::Block(b)));
        match r {
            Ok(()) => {
                self.sent += 1;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn put_unchanged(&mut self, block: BlockNo) -> bulwark_engine::Result<()> {
        match &mut self.run {
            Some((first, count)) if *first + *count == block.0 && *count < MAX_RUN => {
                *count += 1;
                Ok(())
            }
            _ => {
                let r = self.flush_run();
                self.run = Some((block.0, 1));
                r.map_err(|e| self.fail(e))
            }
        }
    }
}

/// Backs up `source` as a new restore point of `job` in the repository at `addr`. The server
/// chooses the parent (as a local backup does) and sends its block hashes; only changed
/// blocks travel. Encrypted on this client with `key` when one is given
/// (docs/encryption.md): the server receives ciphertext and the encryption record only. A
/// chain that cannot continue under `key` (not encrypted, another public key) gets a new
/// active full, the reason reported.
pub fn backup_remote_with(
    config_dir: &Path,
    addr: &RemoteAddr,
    job: &str,
    source: &Path,
    opts: &BackupOptions,
    key: Option<&WriteKey>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<RemoteBackupSummary> {
    let (summary, ()) = retry_as_full(opts, |opts| {
        backup_once(config_dir, addr, job, source, opts, key, progress)
    })?;
    Ok(summary)
}

/// Runs one attempt of a backup with `opts`, and when it says the chain cannot continue under
/// its key (`Ok(Err(reason))`), once more as an active full: that reason is then the
/// summary's `full_reason`.
pub(crate) fn retry_as_full<X>(
    opts: &BackupOptions,
    mut attempt: impl FnMut(
        &BackupOptions,
    ) -> Result<std::result::Result<(RemoteBackupSummary, X), String>>,
) -> Result<(RemoteBackupSummary, X)> {
    match attempt(opts)? {
        Ok(s) => Ok(s),
        Err(reason) => {
            let full = BackupOptions {
                force_full: true,
                ..opts.clone()
            };
            match attempt(&full)? {
                Ok(mut s) => {
                    s.0.full_reason = Some(reason);
                    Ok(s)
                }
                Err(reason) => Err(RemoteError::Usage(reason)),
            }
        }
    }
}

/// A backup opened on the server, its encryption agreed.
pub(crate) struct Opened {
    pub(crate) conn: Conn,
    pub(crate) ready: BackupReady,
    /// The parent's block hashes, in block order.
    pub(crate) known: Vec<(u64, bulwark_format::Digest)>,
    /// How the blocks are sealed (`None`: unencrypted).
    pub(crate) sealing: Option<Sealing>,
}

/// Opens a backup of `job`, a disk of `disk_size` bytes, at `addr` and, with `key`, agrees on
/// its encryption with the server from the parent's record. `Ok(Err(reason))` when the chain
/// cannot continue under `key` (dropping the connection discards the point the server
/// started).
pub(crate) fn open(
    config_dir: &Path,
    addr: &RemoteAddr,
    job: &str,
    disk_size: u64,
    opts: &BackupOptions,
    key: Option<&WriteKey>,
) -> Result<std::result::Result<Opened, String>> {
    let mut conn = Conn::session(config_dir, addr)?;
    let (ready, known) = begin(&mut conn, job, disk_size, opts)?;
    let sealing = match key {
        None => None,
        Some(k) => {
            conn.send(&Msg::GetParentEncryption)?;
            let parent = match conn.recv()? {
                Msg::EncryptionRecord { record } if ready.parent.is_none() => {
                    if !record.is_empty() {
                        return Err(RemoteError::Usage(
                            "server sent a parent encryption record for a new chain".into(),
                        ));
                    }
                    None
                }
                Msg::EncryptionRecord { record } if record.is_empty() => Some(None),
                Msg::EncryptionRecord { record } => Some(Some(
                    bulwark_format::EncryptionRecord::decode(&record)
                        .map_err(|e| RemoteError::Usage(format!("the parent's {e}")))?,
                )),
                m => return Err(m.unexpected("EncryptionRecord").into()),
            };
            match plan_sealing(k, parent.as_ref().map(|p| p.as_ref()))? {
                Ok(s) => {
                    conn.send(&Msg::Encryption {
                        record: s.record.encode(),
                    })?;
                    Some(s)
                }
                Err(reason) => return Ok(Err(reason)),
            }
        }
    };
    Ok(Ok(Opened {
        conn,
        ready,
        known,
        sealing,
    }))
}

/// Opens a backup of `job`, a disk of `disk_size` bytes, on `conn`: the server's answer and
/// the parent's block hashes, their count, framing and order checked.
pub(crate) fn begin(
    conn: &mut Conn,
    job: &str,
    disk_size: u64,
    opts: &BackupOptions,
) -> Result<(BackupReady, Vec<(u64, bulwark_format::Digest)>)> {
    conn.send(&Msg::BeginBackup(BackupRequest {
        job: job.to_string(),
        disk_size,
        block_size: opts.block_size.unwrap_or(0),
        compression_level: opts.compression_level,
        force_full: opts.force_full,
    }))?;
    let ready = match conn.recv()? {
        Msg::BackupReady(r) => r,
        m => return Err(m.unexpected("BackupReady").into()),
    };
    bulwark_format::check_block_size(ready.block_size)
        .map_err(|e| RemoteError::Usage(format!("server chose a bad block size: {e}")))?;
    let max_known = bulwark_format::block_count(disk_size, ready.block_size);
    if ready.known > max_known {
        return Err(RemoteError::Usage(format!(
            "server announced {} parent hashes for a disk of {max_known} blocks",
            ready.known
        )));
    }
    let mut known = Vec::with_capacity(ready.known as usize);
    while (known.len() as u64) < ready.known {
        match conn.recv()? {
            Msg::Known { entries } if known.len() + entries.len() <= ready.known as usize => {
                known.extend(entries)
            }
            m => return Err(m.unexpected("Known").into()),
        }
    }
    if known.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(RemoteError::Usage(
            "server sent parent hashes out of order".into(),
        ));
    }
    Ok((ready, known))
}

/// Seals the backup `ready` answered on `conn` once its `sent` blocks are all sent: `Finish`,
/// the server's `Sealed`, the session closed; what it made, `started` being its start.
pub(crate) fn seal(
    mut conn: Conn,
    ready: BackupReady,
    sent: u64,
    counters: Counters,
    started: Instant,
) -> Result<RemoteBackupSummary> {
    conn.send(&Msg::Finish { blocks: sent })?;
    let sealed = match conn.recv()? {
        Msg::Sealed(s) => s,
        m => return Err(m.unexpected("Sealed").into()),
    };
    let client = conn.client.clone();
    conn.close();
    Ok(RemoteBackupSummary {
        sealed,
        counters,
        elapsed: started.elapsed(),
        full_reason: (!ready.full_reason.is_empty()).then_some(ready.full_reason),
        client,
    })
}

/// One attempt; `Ok(Err(reason))` when the encrypted backup needs a new chain.
fn backup_once(
    config_dir: &Path,
    addr: &RemoteAddr,
    job: &str,
    source: &Path,
    opts: &BackupOptions,
    key: Option<&WriteKey>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<std::result::Result<(RemoteBackupSummary, ()), String>> {
    let started = Instant::now();
    bulwark_format::validate_name("job", job).map_err(|e| RemoteError::Usage(e.to_string()))?;
    let src = Source::open(source)?;
    let Opened {
        mut conn,
        ready,
        known,
        sealing,
    } = match open(config_dir, addr, job, src.size, opts, key)? {
        Ok(o) => o,
        Err(reason) => return Ok(Err(reason)),
    };
    let known = KnownHashes(known);
    let mut sink = RemoteSink::new(&mut conn);
    let res = run_backup_pipeline(
        &Input::file(&src),
        ready.block_size,
        opts,
        &known,
        sealing,
        &mut sink,
        progress,
    );
    let (counters, sent) = sink.finish(res)?;
    let after = src.size_now()?;
    if after != src.size {
        // Dropping the connection makes the server discard the unfinished restore point.
        return Err(EngineError::SourceChanged {
            path: src.path.clone(),
            before: src.size,
            after,
        }
        .into());
    }
    seal(conn, ready, sent, counters, started).map(|s| Ok((s, ())))
}
