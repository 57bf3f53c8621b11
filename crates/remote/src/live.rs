//! Backups of live sources to a repository service (docs/sources.md): the same reading as a
//! local backup, with the parent's changed-block tracking record fetched from the server
//! (`GetParentCbt` → `ParentCbt`) and the new point's record sent with it (`Cbt`),
//! docs/protocol.md.

use std::path::Path;
use std::time::Instant;

use bulwark_engine::{
    run_backup_pipeline, BackupOptions, CbtReport, KnownHashes, LiveSource, ParentInfo, Recording,
    WriteKey,
};
use bulwark_protocol::Msg;

use crate::backup::{Opened, RemoteSink};
use crate::{RemoteAddr, RemoteBackupSummary, RemoteError, Result};

/// Backs up the live source `src` as a new restore point of `job` at `addr`, encrypted on
/// this client with `key` when one is given, as [`crate::backup_remote_with`] does (a chain
/// that cannot continue under `key` gets a new active full, the reason reported).
pub fn backup_remote_live(
    config_dir: &Path,
    addr: &RemoteAddr,
    job: &str,
    mut src: LiveSource,
    opts: &BackupOptions,
    key: Option<&WriteKey>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(RemoteBackupSummary, CbtReport)> {
    let started = Instant::now();
    bulwark_format::validate_name("job", job).map_err(|e| RemoteError::Usage(e.to_string()))?;
    crate::backup::retry_as_full(opts, |opts| {
        live_once(
            config_dir, addr, job, &mut src, opts, key, started, progress,
        )
    })
}

/// One attempt; `Ok(Err(reason))` (before the source is begun) when the encrypted backup
/// needs a new chain.
#[allow(clippy::too_many_arguments)]
fn live_once(
    config_dir: &Path,
    addr: &RemoteAddr,
    job: &str,
    src: &mut LiveSource,
    opts: &BackupOptions,
    key: Option<&WriteKey>,
    started: Instant,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<std::result::Result<(RemoteBackupSummary, CbtReport), String>> {
    let Opened {
        mut conn,
        ready,
        known,
        sealing,
    } = match crate::backup::open(config_dir, addr, job, src.size, opts, key)? {
        Ok(o) => o,
        Err(reason) => return Ok(Err(reason)),
    };
    let parent = if ready.parent.is_none() {
        None
    } else {
        conn.send(&Msg::GetParentCbt)?;
        let record = match conn.recv()? {
            Msg::ParentCbt { record } => record,
            m => return Err(m.unexpected("ParentCbt").into()),
        };
        Some(ParentInfo {
            point: ready.parent,
            disk_size: src.size,
            record: (!record.is_empty()).then_some(record),
            blocks: known.iter().map(|(b, _)| *b).collect(),
            hashes: known.iter().map(|(_, h)| *h).collect(),
            change_key: sealing.as_ref().map(|s| s.change_key),
        })
    };
    src.begin(ready.point, parent.as_ref(), ready.block_size)?;
    if let Some(record) = src.record() {
        conn.send(&Msg::Cbt { record })?;
    }
    let known = KnownHashes(known);
    let mut sink = RemoteSink::new(&mut conn);
    let (res, stored, kept) = {
        let input = src.input()?;
        let mut rec = Recording::new(&mut sink);
        let res = run_backup_pipeline(
            &input,
            ready.block_size,
            opts,
            &known,
            sealing,
            &mut rec,
            progress,
        );
        (res, rec.stored, rec.kept)
    };
    let (counters, sent) = sink.finish(res)?;
    src.check_missed(&stored, &kept, parent.as_ref());
    let mut summary = crate::backup::seal(conn, ready, sent, counters, started)?;
    let report = src.conclude(&mut summary.counters);
    // Cleaning up in QEMU counts, as it does in a local live backup.
    summary.elapsed = started.elapsed();
    Ok(Ok((summary, report)))
}
