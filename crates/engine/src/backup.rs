//! The backup pipeline.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_crypto::SessionSealer;
use bulwark_format::{plain_len_of, BlockNo, Codec, Digest, PointKind, StoredBlock};
use bulwark_repository::plan::{block_size_choosable, compression_level_ok};
use bulwark_repository::{
    NewPoint, NextPoint, ParentMap, PlanRequest, PointBuilder, Repository, SealedPoint,
};
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::input::Input;
use crate::source::Source;
use crate::{EngineError, Result, DEFAULT_COMPRESSION};

/// Where the pipeline puts its results, in block order: a local restore point being written,
/// or a connection to a repository service.
pub trait BlockSink {
    /// A block whose data must be stored (borrowed from the pipeline's buffer).
    fn put_stored(&mut self, b: StoredBlock<'_>) -> Result<()>;
    /// A block identical to the parent's copy.
    fn put_unchanged(&mut self, block: BlockNo) -> Result<()>;
    /// The session sealer of a sink that encrypts ([`crate::EncryptingSink`]): the pipeline's
    /// workers then seal blocks in parallel, and the sink admits them in block order.
    fn parallel_sealer(&self) -> Option<Arc<SessionSealer>> {
        None
    }
}

impl BlockSink for PointBuilder {
    fn put_stored(&mut self, b: StoredBlock<'_>) -> Result<()> {
        Ok(PointBuilder::put_stored(self, b)?)
    }
    fn put_unchanged(&mut self, block: BlockNo) -> Result<()> {
        Ok(PointBuilder::put_unchanged(self, block)?)
    }
}

/// Plain hashes of the parent's non-zero blocks, sorted by block number.
#[derive(Clone, Debug, Default)]
pub struct KnownHashes(pub Vec<(u64, Digest)>);

impl KnownHashes {
    /// The parent's hash of `block`, if it was not zero.
    pub fn get(&self, block: u64) -> Option<Digest> {
        self.0
            .binary_search_by_key(&block, |(b, _)| *b)
            .ok()
            .map(|i| self.0[i].1)
    }
}

impl From<&ParentMap> for KnownHashes {
    fn from(p: &ParentMap) -> Self {
        KnownHashes(
            p.entries
                .iter()
                .map(|e| (e.block.0, e.plain_hash))
                .collect(),
        )
    }
}

/// How to back up.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Block size of a new chain; `None`: the chain's, or the default for a new one.
    pub block_size: Option<u32>,
    /// zstd level (-7 to 19); 0 stores blocks uncompressed.
    pub compression_level: i32,
    /// Start a new chain with an active full even when a parent exists.
    pub force_full: bool,
    pub threads: usize,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            block_size: None,
            compression_level: DEFAULT_COMPRESSION,
            force_full: false,
            threads: crate::default_threads(),
        }
    }
}

/// What the pipeline did (fields as the client's JSON reports them).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    /// Blocks read from the source (not counting holes skipped unread).
    pub blocks_read: u64,
    pub blocks_zero: u64,
    pub blocks_unchanged: u64,
    pub blocks_new: u64,
    pub bytes_read: u64,
    pub bytes_new_plain: u64,
    pub bytes_stored: u64,
    /// Blocks changed-block tracking said are unchanged: referenced, never read (also
    /// counted in `blocks_unchanged`).
    pub blocks_referenced: u64,
}

/// What a backup made.
#[derive(Clone, Debug)]
pub struct BackupSummary {
    pub sealed: SealedPoint,
    pub counters: Counters,
    pub elapsed: Duration,
    /// Why this run is a full although the job had restore points.
    pub full_reason: Option<String>,
}

enum Outcome {
    Zero,
    Unchanged,
    /// Unchanged by changed-block tracking: not read, the parent's copy is referenced.
    Referenced,
    /// `stored` holds the zstd frame or the sealed bytes; a plain raw block's bytes stay in
    /// the read buffer.
    Stored {
        plain_hash: Digest,
        stored: Vec<u8>,
        codec: Codec,
        stored_hash: Digest,
    },
}

struct Done {
    seq: u64,
    block: u64,
    plain_len: u32,
    outcome: Outcome,
    buf: Vec<u8>,
}

const ZERO_PAGE: [u8; 4096] = [0; 4096];

fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096).all(|c| c == &ZERO_PAGE[..c.len()])
}

fn check_level(level: i32) -> Result<()> {
    if !compression_level_ok(level) {
        return Err(EngineError::Usage(format!(
            "compression level {level} is out of range: use 1 to 19 (zstd), -7 to -1 (faster), or 0 for none"
        )));
    }
    Ok(())
}

/// Reads `input` (a file, or an NBD export with changed-block tracking's runs) and feeds
/// every non-zero block to `sink` in block order. Holes are skipped without reading; blocks
/// whose hash equals `known`'s are sent as unchanged, and blocks CBT references unread are
/// counted unchanged, not read. Blocks are hashed with the chain's keyed change-detection
/// hash when `change_key` is given (encrypted chains, docs/encryption.md).
#[allow(clippy::too_many_arguments)]
pub fn run_input_pipeline(
    input: &Input<'_>,
    block_size: u32,
    level: i32,
    threads: usize,
    known: &KnownHashes,
    change_key: Option<&bulwark_format::ChangeKey>,
    sink: &mut dyn BlockSink,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Counters> {
    check_level(level)?;
    let threads = threads.max(1);
    // Each buffer in flight is one block; this pool is the pipeline's whole memory.
    let pool = threads * 2 + 2 + crate::input::NBD_DEPTH;
    let (free_tx, free_rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = bounded(pool);
    for _ in 0..pool {
        free_tx
            .send(Vec::with_capacity(block_size as usize))
            .expect("pool fits");
    }
    let (work_tx, work_rx) = bounded::<crate::input::Work>(pool);
    let (done_tx, done_rx) = bounded::<Result<Done>>(pool);
    // Stored bytes the writer is done with, back to the workers: a fresh megabyte for every
    // block would be new pages from the kernel each time (page faults in the hot loop).
    let (spare_tx, spare_rx) = bounded::<Vec<u8>>(pool);
    let mut counters = Counters::default();
    let sealer = sink.parallel_sealer();
    let sealer = sealer.as_deref();

    std::thread::scope(|s| -> Result<()> {
        // Reader: one sequential pass over the data ranges (or the runs CBT chose).
        let reader = s.spawn(move || input.read_into(block_size, &free_rx, &work_tx));
        // Workers: zero check, hash, compare, compress.
        for _ in 0..threads {
            let work_rx = work_rx.clone();
            let done_tx = done_tx.clone();
            let spare_rx = spare_rx.clone();
            s.spawn(move || {
                let mut comp = if level != 0 {
                    zstd::bulk::Compressor::new(level).ok()
                } else {
                    None
                };
                // The zstd frame of the block at hand; a kept frame leaves with its block and
                // a spare buffer takes its place.
                let mut frame = Vec::new();
                let spare = || spare_rx.try_recv().unwrap_or_default();
                for (seq, block, buf) in work_rx {
                    let Some(buf) = buf else {
                        let plain_len = plain_len_of(BlockNo(block), input.size, block_size);
                        let d = Done {
                            seq,
                            block,
                            plain_len,
                            outcome: Outcome::Referenced,
                            buf: Vec::new(),
                        };
                        if done_tx.send(Ok(d)).is_err() {
                            return;
                        }
                        continue;
                    };
                    let plain_len = buf.len() as u32;
                    let outcome = if is_zero(&buf) {
                        Ok(Outcome::Zero)
                    } else {
                        let plain_hash = bulwark_format::block_hash(change_key, block, &buf);
                        if known.get(block) == Some(plain_hash) {
                            Ok(Outcome::Unchanged)
                        } else {
                            compress(comp.as_mut(), &buf, &mut frame).and_then(|smaller| {
                                let frame = smaller.then_some(&mut frame);
                                match sealer {
                                    Some(sealer) => {
                                        seal(sealer, block, &buf, plain_hash, frame, spare())
                                    }
                                    None => Ok(plain_outcome(plain_hash, frame, spare)),
                                }
                            })
                        }
                    };
                    let msg = outcome.map(|outcome| Done {
                        seq,
                        block,
                        plain_len,
                        outcome,
                        buf,
                    });
                    if done_tx.send(msg).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        drop(work_rx);
        // Writer (this thread): results in block order.
        let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
        let mut next = 0u64;
        let mut result = Ok(());
        for msg in &done_rx {
            let d = match msg {
                Ok(d) => d,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            pending.insert(d.seq, d);
            while let Some(d) = pending.remove(&next) {
                next += 1;
                if !matches!(d.outcome, Outcome::Referenced) {
                    counters.blocks_read += 1;
                    counters.bytes_read += u64::from(d.plain_len);
                }
                let r = match &d.outcome {
                    Outcome::Referenced => {
                        counters.blocks_unchanged += 1;
                        counters.blocks_referenced += 1;
                        sink.put_unchanged(BlockNo(d.block))
                    }
                    Outcome::Zero => {
                        counters.blocks_zero += 1;
                        Ok(())
                    }
                    Outcome::Unchanged => {
                        counters.blocks_unchanged += 1;
                        sink.put_unchanged(BlockNo(d.block))
                    }
                    Outcome::Stored {
                        plain_hash,
                        stored,
                        codec,
                        stored_hash,
                    } => {
                        counters.blocks_new += 1;
                        counters.bytes_new_plain += u64::from(d.plain_len);
                        // Only a plain raw block's bytes stay in the read buffer.
                        let data = match codec {
                            Codec::Raw => &d.buf[..],
                            _ => &stored[..],
                        };
                        counters.bytes_stored += data.len() as u64;
                        sink.put_stored(StoredBlock {
                            block: BlockNo(d.block),
                            plain_len: d.plain_len,
                            plain_hash: *plain_hash,
                            data,
                            codec: *codec,
                            stored_hash: *stored_hash,
                        })
                    }
                };
                progress(u64::from(d.plain_len));
                if !d.buf.is_empty() || d.buf.capacity() > 0 {
                    let _ = free_tx.send(d.buf);
                }
                if let Outcome::Stored { stored, .. } = d.outcome {
                    if stored.capacity() > 0 {
                        let _ = spare_tx.try_send(stored);
                    }
                }
                if let Err(e) = r {
                    result = Err(e);
                    break;
                }
            }
            if result.is_err() {
                break;
            }
        }
        // Unblock the reader and workers before joining them.
        drop(done_rx);
        drop(free_tx);
        let read = reader.join().expect("reader thread");
        result?;
        read
    })?;
    Ok(counters)
}

/// Compresses `buf` into `frame` (no allocation once `frame` has grown to the bound); true
/// when the frame is smaller than the block, else the block is stored raw. No hash here: a
/// plain block's stored hash covers the frame, an encrypted one's the ciphertext, and hashing
/// the frame first would cost an encrypted backup a third BLAKE3 pass.
fn compress(
    comp: Option<&mut zstd::bulk::Compressor<'_>>,
    buf: &[u8],
    frame: &mut Vec<u8>,
) -> Result<bool> {
    let Some(c) = comp else { return Ok(false) };
    frame.clear();
    frame.reserve(zstd::zstd_safe::compress_bound(buf.len()));
    c.compress_to_buffer(buf, frame)
        .map_err(|e| EngineError::Usage(format!("zstd failed: {e}")))?;
    Ok(frame.len() < buf.len())
}

/// An unencrypted block's outcome: the zstd frame (taken, `spare` in its place) and its
/// BLAKE3, or the plain block (left in the read buffer), whose stored hash is its plain hash.
fn plain_outcome(
    plain_hash: Digest,
    frame: Option<&mut Vec<u8>>,
    spare: impl FnOnce() -> Vec<u8>,
) -> Outcome {
    match frame {
        Some(frame) => {
            let stored = std::mem::replace(frame, spare());
            Outcome::Stored {
                plain_hash,
                stored_hash: Digest::from(blake3::hash(&stored)),
                stored,
                codec: Codec::Zstd,
            }
        }
        None => Outcome::Stored {
            plain_hash,
            stored: Vec::new(),
            codec: Codec::Raw,
            stored_hash: plain_hash,
        },
    }
}

/// Encrypts block `block` (plain bytes `buf`, its zstd `frame` if it compressed) into
/// `sealed` in a worker (docs/encryption.md): the payload is the zstd frame or the plain
/// block; the stored hash covers the ciphertext. The sink admits it in block order before it
/// is kept.
fn seal(
    sealer: &SessionSealer,
    block: u64,
    buf: &[u8],
    plain_hash: Digest,
    frame: Option<&mut Vec<u8>>,
    mut sealed: Vec<u8>,
) -> Result<Outcome> {
    let (codec, payload) = match frame {
        Some(f) => (Codec::Zstd, &f[..]),
        None => (Codec::Raw, buf),
    };
    let (codec, stored_hash) = crate::crypt::seal_block(
        sealer,
        block,
        buf.len() as u32,
        codec,
        &plain_hash,
        payload,
        &mut sealed,
    )?;
    Ok(Outcome::Stored {
        plain_hash,
        stored_hash,
        stored: sealed,
        codec,
    })
}

/// Checks a local backup's job name, options and disk size (of the source `name`) before
/// anything is planned or written.
pub(crate) fn check_request(job: &str, opts: &BackupOptions, size: u64, name: &Path) -> Result<()> {
    bulwark_format::validate_name("job", job).map_err(|e| EngineError::Usage(e.to_string()))?;
    check_level(opts.compression_level)?;
    if let Some(bs) = opts.block_size {
        if !block_size_choosable(bs) {
            return Err(EngineError::Usage(format!(
                "block size {bs} is not allowed: use a power of two from 64K to 4M"
            )));
        }
    }
    bulwark_format::check_disk_size(size)
        .map_err(|e| EngineError::Usage(format!("{}: {e}", name.display())))
}

/// The next point of an unencrypted backup of `job` (`disk_size` bytes) in a local
/// repository; refused when the job's chain is encrypted.
pub(crate) fn plan_plain(
    repo: &Repository,
    job: &str,
    opts: &BackupOptions,
    disk_size: u64,
) -> Result<NextPoint> {
    let next = repo.next_point(
        job,
        &PlanRequest {
            disk_size,
            block_size: opts.block_size,
            force_full: opts.force_full,
        },
    )?;
    crate::crypt::refuse_plain_after_encrypted(repo, job)?;
    Ok(next)
}

/// Begins the next point of `job` in a local repository: an incremental on `parent`, or an
/// active full.
pub(crate) fn begin_local(
    repo: &Repository,
    job: &str,
    parent: Option<ParentMap>,
    disk_size: u64,
    block_size: u32,
    compression_level: i32,
) -> Result<PointBuilder> {
    Ok(repo.begin_point(NewPoint {
        job: job.to_string(),
        parent,
        disk_size,
        block_size,
        compression_level,
        client: String::new(),
        full_kind: PointKind::ActiveFull,
    })?)
}

/// Fails when the source (`path`) no longer has the size it had when the backup began.
pub(crate) fn check_same_size(path: &Path, before: u64, after: u64) -> Result<()> {
    if after != before {
        return Err(EngineError::SourceChanged {
            path: path.to_path_buf(),
            before,
            after,
        });
    }
    Ok(())
}

/// Backs up `source` as a new restore point of `job` in a local repository: an incremental
/// on the job's newest restore point, or an active full for a new job, with `--full`, or when
/// the newest point cannot serve as a parent (the reason is returned).
pub fn backup_local(
    repo: &Repository,
    job: &str,
    source: &std::path::Path,
    opts: &BackupOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BackupSummary> {
    bulwark_format::validate_name("job", job).map_err(|e| EngineError::Usage(e.to_string()))?;
    backup_local_source(repo, job, Source::open(source)?, opts, progress)
}

/// [`backup_local`] of a source opened by the caller (root opens a block device, then gives
/// up root before touching the repository).
pub fn backup_local_source(
    repo: &Repository,
    job: &str,
    src: Source,
    opts: &BackupOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BackupSummary> {
    backup_local_with(repo, job, src, opts, None, progress)
}

/// A backup of `src` to a local repository, encrypted with `key` when one is given
/// ([`crate::backup_local_encrypted`]), else unencrypted ([`backup_local_source`]).
pub(crate) fn backup_local_with(
    repo: &Repository,
    job: &str,
    src: Source,
    opts: &BackupOptions,
    key: Option<&crate::WriteKey>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BackupSummary> {
    let started = Instant::now();
    check_request(job, opts, src.size, &src.path)?;
    let mut point = crate::crypt::plan_local(repo, job, opts, src.size, key)?.begin(
        repo,
        job,
        src.size,
        opts.compression_level,
    )?;
    let counters = crate::run_backup_pipeline(
        &Input::file(&src),
        point.block_size,
        opts,
        &point.known,
        point.sealing.take(),
        &mut point.builder,
        progress,
    )?;
    check_same_size(&src.path, src.size, src.size_now()?)?;
    point.finish(counters, started)
}
