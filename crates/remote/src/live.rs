//! Backups of live sources to a repository service (docs/sources.md): the same reading as a
//! local backup, with the parent's changed-block tracking record fetched from the server
//! (`GetParentCbt` → `ParentCbt`) and the new point's record sent with it (`Cbt`),
//! docs/protocol.md.

use std::path::Path;
use std::time::Instant;

use bulwark_engine::{
    run_input_pipeline, BackupOptions, BlockSink, CbtReport, KnownHashes, LiveSource, ParentInfo,
};
use bulwark_format::{BlockNo, StoredBlock};
use bulwark_protocol::Msg;

use crate::backup::RemoteSink;
use crate::{Conn, RemoteAddr, RemoteBackupSummary, RemoteError, Result};

/// Remembers which blocks were stored and which kept (verify-by-reading).
struct Recording<'a, 'b> {
    inner: &'a mut RemoteSink<'b>,
    stored: Vec<u64>,
    kept: Vec<u64>,
}

impl BlockSink for Recording<'_, '_> {
    fn put_stored(&mut self, b: StoredBlock<'_>) -> bulwark_engine::Result<()> {
        self.stored.push(b.block.0);
        self.inner.put_stored(b)
    }
    fn put_unchanged(&mut self, block: BlockNo) -> bulwark_engine::Result<()> {
        self.kept.push(block.0);
        self.inner.put_unchanged(block)
    }
}

/// Backs up the live source `src` as a new restore point of `job` at `addr`.
pub fn backup_remote_live(
    config_dir: &Path,
    addr: &RemoteAddr,
    job: &str,
    mut src: LiveSource,
    opts: &BackupOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(RemoteBackupSummary, CbtReport)> {
    let started = Instant::now();
    bulwark_format::validate_name("job", job).map_err(|e| RemoteError::Usage(e.to_string()))?;
    let mut conn = Conn::session(config_dir, addr)?;
    let (ready, known) = crate::backup::begin(&mut conn, job, src.size, opts)?;
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
        let mut rec = Recording {
            inner: &mut sink,
            stored: Vec::new(),
            kept: Vec::new(),
        };
        let res = run_input_pipeline(
            &input,
            ready.block_size,
            opts.compression_level,
            opts.threads,
            &known,
            None,
            &mut rec,
            progress,
        );
        (res, rec.stored, rec.kept)
    };
    let (counters, sent) = sink.finish(res)?;
    src.check_missed(&stored, &kept, parent.as_ref());
    let mut summary = crate::backup::seal(conn, ready, sent, counters, started)?;
    let mut report = src.report();
    if report.anchor_block.is_some() {
        summary.counters.blocks_read += 1;
        summary.counters.bytes_read += report.anchor_bytes;
    }
    if let Err(e) = src.commit() {
        report.cleanup_error = Some(e.to_string());
    }
    // Cleaning up in QEMU counts, as it does in a local live backup.
    summary.elapsed = started.elapsed();
    Ok((summary, report))
}
