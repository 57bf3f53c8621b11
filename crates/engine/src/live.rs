//! Live and virtual-machine sources: NBD exports, image files read through QEMU, and
//! running disks taken at a consistent point in time through QMP — with changed-block
//! tracking (docs/sources.md).
//!
//! A [`LiveSource`] is opened, then [`LiveSource::begin`] takes the point in time (for
//! `--cbt` and `--qmp`: one QMP transaction that adds the next bitmap, freezes a copy of the
//! previous one and, for a running disk, starts image fleecing), decides whether changed-block
//! tracking may be used ([`crate::cbt::decide`]) and maps what to read. After the restore
//! point is sealed, [`LiveSource::commit`] drops the fleecing node and the bitmaps no longer
//! needed; dropping it uncommitted undoes the transaction instead (the new bitmap goes, the
//! parent's stays), so a failed or interrupted backup never loses the parent's tracking.

mod private_dir;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bulwark_format::PointId;
use bulwark_nbd::proto::{
    META_BASE_ALLOCATION, META_QEMU_DIRTY_BITMAP_PREFIX, STATE_DIRTY, STATE_ZERO,
};
use bulwark_nbd::{Client, ClientOptions, NbdUri};
// `--format` names one of IMAGE_FORMATS (or raw); any other name is refused before QEMU starts.
use bulwark_qemu::img::IMAGE_FORMATS;
use bulwark_qemu::{Daemon, GuestAgent, Qmp};
use bulwark_repository::ParentMap;
use serde_json::json;

use crate::cbt::{self, BitmapNow, CbtRecord, Decision, Mode, Offer, ParentCbt};
use crate::input::{Input, Run};
use crate::source::Source;
use crate::{EngineError, Result};

/// How to read a live source.
#[derive(Clone, Debug, Default)]
pub struct LiveOptions {
    /// `--format`: `raw` reads the file's bytes as they are; another name skips probing.
    pub format: Option<String>,
    /// `--cbt`: Bulwark manages the dirty bitmaps.
    pub cbt: bool,
    /// `--dirty-bitmap NAME`: the export's owner manages this bitmap.
    pub dirty_bitmap: Option<String>,
    /// `--qmp SOCKET`: the QEMU process (VM or qemu-storage-daemon) running the disk.
    pub qmp: Option<PathBuf>,
    /// `--node NODE`: the disk's block node in that process.
    pub node: Option<String>,
    /// `--nbd-socket PATH`: that process's own NBD server, when it already runs one.
    pub nbd_socket: Option<PathBuf>,
    /// `--guest-agent SOCKET`: freeze the guest's filesystems around the transaction.
    pub guest_agent: Option<PathBuf>,
    /// `--cbt-verify-every N`: every Nth CBT incremental reads and hashes everything.
    pub verify_every: u32,
}

impl LiveOptions {
    /// True when the source must be read through QEMU or NBD, or tracked.
    pub fn wants_live(&self) -> bool {
        self.cbt || self.dirty_bitmap.is_some() || self.qmp.is_some()
    }
}

/// How changed-block tracking went, for reports.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CbtReport {
    /// `managed` (`--cbt`), `dirty-bitmap` (`--dirty-bitmap`), or none.
    pub mode: Option<&'static str>,
    /// True when only the bitmap's dirty blocks were read.
    pub used: bool,
    /// Why everything was read and hashed instead (one line).
    pub fallback_reason: Option<String>,
    /// The bitmap whose dirty extents were read.
    pub bitmap: Option<String>,
    /// The bitmap that records changes from this point on.
    pub new_bitmap: Option<String>,
    /// Bytes the bitmap marked dirty.
    pub dirty_bytes: u64,
    /// Those bytes rounded out to whole blocks.
    pub dirty_block_bytes: u64,
    /// Verify-by-reading: blocks that changed although the bitmap said they did not.
    pub verify: Option<VerifyReport>,
    /// The point is sealed, but removing the old bitmaps or the fleecing failed (why).
    pub cleanup_error: Option<String>,
    /// `--dirty-bitmap`: the block read to check the owner's bitmap against the parent.
    pub anchor_block: Option<u64>,
    /// Its bytes (counted in `bytes_read`).
    pub anchor_bytes: u64,
}

/// What verify-by-reading found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub missed_blocks: u64,
    /// The first missed block numbers (at most 100).
    pub missed: Vec<u64>,
}

enum Kind {
    /// A raw file or block device, read directly.
    Raw(Source),
    /// An NBD export (a URI, or an image file served by qemu-nbd).
    Nbd {
        client: Client,
        _daemon: Option<Daemon>,
    },
    /// A block node managed through QMP (a running disk, or `--cbt` on an image file in a
    /// qemu-storage-daemon of Bulwark's own).
    Managed(Box<Managed>),
}

struct Managed {
    qmp: Qmp,
    node: String,
    /// Bulwark's own qemu-storage-daemon on an image file; `None` for a running disk.
    daemon: Option<Daemon>,
    /// Private folder for the NBD socket and the fleecing overlay (running disks).
    dir: Option<private_dir::PrivateDir>,
    nbd_socket: Option<PathBuf>,
    started_nbd_server: bool,
    job: String,
    /// Set once the transaction ran.
    new_bitmap: Option<String>,
    frozen: Option<String>,
    fleece: bool,
    export: bool,
    client: Option<Client>,
}

/// What begin decided: the blocks to read, the record, the report.
struct Begun {
    runs: Option<Vec<Run>>,
    ranges: Vec<(u64, u64)>,
    record: Option<CbtRecord>,
    report: CbtReport,
    /// Verify-by-reading: the bitmap's dirty blocks, to compare after the pipeline.
    verify_dirty: Option<Vec<u64>>,
}

/// What an incremental's parent offers changed-block tracking.
#[derive(Clone, Debug)]
pub struct ParentInfo {
    pub point: PointId,
    pub disk_size: u64,
    /// Its CBT record (extension `EXT_CBT_SOURCE`), if it has one.
    pub record: Option<Vec<u8>>,
    /// Its non-zero blocks, sorted.
    pub blocks: Vec<u64>,
    /// Their plain hashes, in the same order (keyed with `change_key` on an encrypted chain).
    pub hashes: Vec<bulwark_format::Digest>,
    /// The chain's change-detection key, when it is encrypted (docs/encryption.md): the
    /// parent's hashes are keyed with it, and so are the new point's.
    pub change_key: Option<bulwark_format::ChangeKey>,
}

impl ParentInfo {
    /// The parent `p` of `job` in `repo`, with its record read from its metadata; its hashes
    /// keyed with `change_key` when the chain is encrypted.
    pub fn of(
        repo: &bulwark_repository::Repository,
        job: &str,
        p: &ParentMap,
        change_key: Option<bulwark_format::ChangeKey>,
    ) -> Result<ParentInfo> {
        let record = repo
            .scan_job(job)?
            .points
            .into_iter()
            .find(|i| i.meta.point == p.point)
            .and_then(|i| i.meta.extension(cbt::TAG).map(<[u8]>::to_vec));
        Ok(ParentInfo {
            point: p.point,
            disk_size: p.disk_size,
            record,
            blocks: p.entries.iter().map(|e| e.block.0).collect(),
            hashes: p.entries.iter().map(|e| e.plain_hash).collect(),
            change_key,
        })
    }

    /// The hash of block `block`'s plain bytes `data` as this chain's points hold it
    /// (comparable with [`ParentInfo::hashes`]).
    pub fn hash_of(&self, block: u64, data: &[u8]) -> bulwark_format::Digest {
        bulwark_format::block_hash(self.change_key.as_ref(), block, data)
    }
}

/// An opened source.
pub struct LiveSource {
    /// The source as the user named it.
    pub name: PathBuf,
    pub size: u64,
    /// Its identity as CBT records it.
    pub identity: String,
    kind: Kind,
    opts: LiveOptions,
    begun: Option<Begun>,
    committed: bool,
}

fn qemu_err(name: &Path) -> impl Fn(bulwark_qemu::QemuError) -> EngineError + '_ {
    move |e| EngineError::Usage(format!("{}: {e}", name.display()))
}

/// A format found by probing is only a claim of the file's first bytes, which on a VM's raw
/// disk the guest writes: a guest could make its disk "a qcow2 whose backing file is
/// /etc/shadow" and have root back up (and hand back on restore) a host file instead of the
/// disk. So an image whose format was probed may not name other files (a backing file, an
/// external data file, vmdk extents): that takes `--format` from the administrator.
fn refuse_probed_references(
    source: &Path,
    info: &bulwark_qemu::ImageInfo,
    format: &str,
) -> Result<()> {
    let others = info.other_files();
    if others.is_empty() {
        return Ok(());
    }
    Err(EngineError::Usage(format!(
        "{}: its first bytes say it is a {format} image that reads {}; the format was detected from the content, which a virtual machine writes on a raw disk, so Bulwark does not follow those names on its own: give --format {format} if this is a {format} image you made, or --format raw if it is a raw disk",
        source.display(),
        others
            .iter()
            .map(|o| format!("{o:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// A node that a format node reads as its file (a qcow2's file node) holds the container,
/// not the disk: fleecing it backs up the qcow2 file's own bytes, which restore as a qcow2
/// file and not as the disk the VM sees. So `--node` must name the disk's top node; one a
/// format node sits on is refused, naming that node. A protocol node nothing sits on (a raw
/// disk the VM uses directly), or only a `raw` node without `offset`/`size`, is the disk and
/// goes on.
fn refuse_container_node(q: &mut Qmp, qmp: &Path, node: &str, name: &Path) -> Result<()> {
    use bulwark_qemu::qmp::Container;
    let graph = q.block_graph().map_err(qemu_err(name))?;
    let Some(found) = graph.container_of(node) else {
        return Ok(());
    };
    let driver = graph
        .nodes
        .iter()
        .find(|n| n.name == node)
        .map_or("?", |n| n.driver.as_str());
    let why = match found {
        Container::Format(f) if f.driver == "raw" => format!(
            "is the file the raw node {:?} reads its disk from, of which it shows a slice (offset/size): backing it up would store the whole file, not the disk the VM sees; give --node {}",
            f.name, f.name
        ),
        Container::Format(f) => format!(
            "is the file the {} node {:?} reads its disk from: backing it up would store the {} container's own bytes, not the disk the VM sees; give --node {}",
            f.driver, f.name, f.driver, f.name
        ),
        Container::Unsure(f) => format!(
            "may be the file the {} node {:?} reads its disk from: this QEMU process refuses x-debug-query-block-graph (unstable commands turned off), and {:?}'s file name {:?} cannot be followed to a file to compare, so Bulwark cannot tell; give --node {} if that is the disk, or let the process answer x-debug-query-block-graph (-compat unstable-input=accept, the default) so that a disk nothing sits on can be told apart",
            f.driver, f.name, f.name, f.filename, f.name
        ),
    };
    Err(EngineError::Usage(format!(
        "{}: block node {node:?} ({driver}) {why} (nothing was backed up)",
        qmp.display()
    )))
}

/// The fleecing overlay receives the old data of every cluster the VM writes while the
/// backup runs, up to the whole disk; when its filesystem fills, QEMU fails the VM's writes
/// (copy-before-write breaks the guest write, not the snapshot). So the backup starts only
/// where the overlay can always grow to the disk's size (plus qcow2 metadata): otherwise it
/// is refused with where to put it (`TMPDIR`).
fn check_fleece_room(base: &Path, disk: u64) -> Result<()> {
    let need = disk.saturating_add(disk / 64).saturating_add(64 << 20);
    let st = bulwark_sys::statvfs(base).map_err(|e| {
        EngineError::Usage(format!("reading the free space of {}: {e}", base.display()))
    })?;
    let free = st.blocks_available.saturating_mul(st.frsize);
    if free < need {
        return Err(EngineError::Usage(format!(
            "the fleecing overlay of a running disk goes in {} (TMPDIR), which has {} MiB free; it can grow to the disk's size while the VM writes during the backup, and a full overlay would fail the VM's own writes: point TMPDIR at a folder with at least {} MiB free (root-only, it holds the disk's data)",
            base.display(),
            free >> 20,
            need.div_ceil(1 << 20)
        )));
    }
    Ok(())
}

fn nbd_err(name: &Path) -> impl Fn(bulwark_nbd::NbdError) -> EngineError + '_ {
    move |e| EngineError::SourceIo {
        path: name.to_path_buf(),
        action: "reading over NBD",
        source: std::io::Error::other(e.to_string()),
    }
}

const NBD_TIMEOUT: Duration = Duration::from_secs(60);
const QMP_TIMEOUT: Duration = Duration::from_secs(60);

fn bitmap_context(name: &str) -> String {
    format!("{META_QEMU_DIRTY_BITMAP_PREFIX}{name}")
}

impl LiveSource {
    /// A raw file or block device opened by the caller.
    pub fn raw(src: Source) -> LiveSource {
        LiveSource {
            name: src.path.clone(),
            size: src.size,
            identity: format!("file:{}", src.path.display()),
            kind: Kind::Raw(src),
            opts: LiveOptions::default(),
            begun: None,
            committed: false,
        }
    }

    /// Opens `source` (a path or an NBD URI) as `opts` say, for job `job`.
    pub fn open(source: &Path, opts: &LiveOptions, job: &str) -> Result<LiveSource> {
        let name = source.to_path_buf();
        let text = source.to_string_lossy().into_owned();
        let usage = |m: String| EngineError::Usage(m);
        if opts.cbt && opts.dirty_bitmap.is_some() {
            return Err(usage(
                "--cbt (Bulwark manages the bitmaps) and --dirty-bitmap (their owner does) exclude each other".into(),
            ));
        }
        if let Some(qmp) = &opts.qmp {
            let node = opts.node.clone().ok_or_else(|| {
                usage("--qmp needs --node NODE: the disk's block node (query-named-block-nodes lists them)".into())
            })?;
            if opts.dirty_bitmap.is_some() {
                return Err(usage(
                    "--qmp manages its own bitmaps: use --cbt with it, not --dirty-bitmap".into(),
                ));
            }
            let mut q = Qmp::connect(qmp, QMP_TIMEOUT).map_err(qemu_err(&name))?;
            let info = q
                .node(&node)
                .map_err(qemu_err(&name))?
                .ok_or_else(|| usage(format!("{}: no block node named {node:?}", qmp.display())))?;
            refuse_container_node(&mut q, qmp, &node, &name)?;
            let sock = qmp.canonicalize().unwrap_or_else(|_| qmp.clone());
            return Ok(LiveSource {
                name: PathBuf::from(format!("{}#{node}", qmp.display())),
                size: info.size,
                identity: format!("qmp:{}#{node}", sock.display()),
                kind: Kind::Managed(Box::new(Managed::new(q, node, None, job))),
                opts: opts.clone(),
                begun: None,
                committed: false,
            });
        }
        if bulwark_nbd::is_nbd_uri(&text) {
            if opts.cbt {
                return Err(usage(
                    "--cbt needs a disk Bulwark can add bitmaps to (an image file, or --qmp); for an NBD export whose owner keeps a bitmap use --dirty-bitmap NAME".into(),
                ));
            }
            if opts.format.as_deref().is_some_and(|f| f != "raw") {
                return Err(usage(
                    "an NBD export is a raw disk: --format does not apply".into(),
                ));
            }
            let uri = NbdUri::parse(&text).map_err(|e| usage(e.to_string()))?;
            let mut contexts = vec![META_BASE_ALLOCATION.to_string()];
            if let Some(b) = &opts.dirty_bitmap {
                contexts.push(bitmap_context(b));
            }
            let client = Client::connect(
                &uri,
                &ClientOptions {
                    meta_contexts: contexts,
                    timeout: NBD_TIMEOUT,
                },
            )
            .map_err(nbd_err(&name))?;
            return Ok(LiveSource {
                name,
                size: client.size,
                identity: format!("nbd:{uri}"),
                kind: Kind::Nbd {
                    client,
                    _daemon: None,
                },
                opts: opts.clone(),
                begun: None,
                committed: false,
            });
        }
        // A file: its format from its content, never from its name.
        let probed = match opts.format.as_deref() {
            Some("raw") => None,
            Some(f) if !IMAGE_FORMATS.contains(&f) => {
                return Err(usage(format!(
                    "--format {f:?} is not an image format Bulwark reads: give one of raw, {}, or leave it out to probe the file",
                    IMAGE_FORMATS.join(", ")
                )))
            }
            Some(f) => Some(f.to_string()),
            None => bulwark_qemu::probe_format(source)
                .map_err(qemu_err(&name))?
                .map(String::from),
        };
        let canon = source
            .canonicalize()
            .unwrap_or_else(|_| source.to_path_buf());
        let identity = format!("file:{}", canon.display());
        let Some(format) = probed else {
            if opts.cbt || opts.dirty_bitmap.is_some() {
                return Err(usage(format!(
                    "{}: a raw image has no dirty bitmaps; --cbt needs a qcow2 image (qemu-img convert -O qcow2), --dirty-bitmap an NBD export",
                    source.display()
                )));
            }
            let mut s = LiveSource::raw(Source::open(source)?);
            s.identity = identity;
            return Ok(s);
        };
        if format == "luks" {
            return Err(usage(format!(
                "{} is a LUKS container: open it (cryptsetup open) and back up the opened device",
                source.display()
            )));
        }
        let info = bulwark_qemu::img::info(&canon, &format).map_err(qemu_err(&name))?;
        if opts.format.is_none() {
            refuse_probed_references(source, &info, &format)?;
        }
        // The files the disk is read from are part of its identity: an overlay rebased onto
        // another backing file (`qemu-img rebase -u`) is another disk for `--cbt`.
        let identity = match info.other_files().as_slice() {
            [] => identity,
            others => format!("{identity} reading {}", others.join(", ")),
        };
        if opts.dirty_bitmap.is_some() {
            return Err(usage(
                "--dirty-bitmap is for NBD exports; for an image file use --cbt (Bulwark manages the bitmaps)".into(),
            ));
        }
        if opts.cbt {
            if format != "qcow2" {
                return Err(usage(format!(
                    "{} is a {format} image: persistent dirty bitmaps need qcow2 (qemu-img convert -O qcow2)",
                    source.display()
                )));
            }
            let node = "bulwark-disk".to_string();
            let d = Daemon::storage_daemon(&canon, &format, &node, true).map_err(|e| {
                usage(format!(
                    "{}: {e} (is a running VM using it? back up a running disk with --qmp SOCKET --node NODE)",
                    source.display()
                ))
            })?;
            let q = Qmp::connect(d.qmp_socket().expect("qsd has QMP"), QMP_TIMEOUT)
                .map_err(qemu_err(&name))?;
            let mut m = Managed::new(q, node.clone(), Some(d), job);
            let info = m
                .qmp
                .node(&node)
                .map_err(qemu_err(&name))?
                .ok_or_else(|| usage("qemu-storage-daemon lost its node".into()))?;
            m.nbd_socket = m.daemon.as_ref().map(|d| d.nbd_socket().to_path_buf());
            return Ok(LiveSource {
                name,
                size: info.size,
                identity,
                kind: Kind::Managed(Box::new(m)),
                opts: opts.clone(),
                begun: None,
                committed: false,
            });
        }
        let d = Daemon::qemu_nbd(&canon, &format, None).map_err(qemu_err(&name))?;
        let client = Client::connect(
            &d.uri(bulwark_qemu::process::EXPORT),
            &ClientOptions {
                meta_contexts: vec![META_BASE_ALLOCATION.to_string()],
                timeout: NBD_TIMEOUT,
            },
        )
        .map_err(nbd_err(&name))?;
        Ok(LiveSource {
            name,
            size: client.size,
            identity,
            kind: Kind::Nbd {
                client,
                _daemon: Some(d),
            },
            opts: opts.clone(),
            begun: None,
            committed: false,
        })
    }

    /// Takes the point in time for restore point `point` and decides what to read.
    pub fn begin(
        &mut self,
        point: PointId,
        parent: Option<&ParentInfo>,
        block_size: u32,
    ) -> Result<&CbtReport> {
        let size = self.size;
        let parent_cbt = parent.map(|p| ParentCbt {
            point: p.point,
            disk_size: p.disk_size,
            record: p.record.as_deref(),
        });
        let parent_blocks: Vec<u64> = parent.map(|p| p.blocks.clone()).unwrap_or_default();
        let begun = match &mut self.kind {
            Kind::Raw(_) => Begun {
                runs: None,
                ranges: Vec::new(),
                record: None,
                report: CbtReport::default(),
                verify_dirty: None,
            },
            Kind::Nbd { client, .. } => {
                let ranges = data_ranges(client, &self.name)?;
                match &self.opts.dirty_bitmap {
                    None => Begun {
                        runs: None,
                        ranges,
                        record: None,
                        report: CbtReport::default(),
                        verify_dirty: None,
                    },
                    Some(name) => {
                        let ctx = client.context_id(&bitmap_context(name));
                        let bitmaps: Vec<BitmapNow> = ctx
                            .map(|_| BitmapNow {
                                name: name.clone(),
                                granularity: 0,
                                recording: true,
                                inconsistent: false,
                            })
                            .into_iter()
                            .collect();
                        let offer = Offer {
                            mode: Mode::Owner,
                            identity: &self.identity,
                            disk_size: size,
                            bitmaps: &bitmaps,
                            owner_bitmap: Some(name),
                            verify_every: self.opts.verify_every,
                        };
                        let decision = cbt::decide(parent_cbt, &offer);
                        let dirty = match ctx {
                            Some(id) => Some(dirty_ranges(client, id, &self.name)?),
                            None => None,
                        };
                        let record = CbtRecord {
                            mode: Mode::Owner,
                            disk_size: size,
                            checkpoint: point,
                            granularity: 0,
                            since_full_read: 0,
                            source: self.identity.clone(),
                            bitmap: if ctx.is_some() {
                                name.clone()
                            } else {
                                String::new()
                            },
                        };
                        let mut b = finish_decision(
                            decision,
                            Mode::Owner,
                            record,
                            ranges,
                            dirty,
                            size,
                            block_size,
                            &parent_blocks,
                            None,
                        );
                        if b.report.used {
                            anchor_check(
                                client, &mut b, parent, point, size, block_size, &self.name,
                            )?;
                        }
                        b
                    }
                }
            }
            Kind::Managed(m) => {
                let name = self.name.clone();
                m.begin(
                    &name,
                    &self.identity,
                    size,
                    point,
                    parent_cbt,
                    &parent_blocks,
                    block_size,
                    &self.opts,
                )?
            }
        };
        self.begun = Some(begun);
        Ok(&self.begun.as_ref().expect("just set").report)
    }

    /// The pipeline's input (after [`LiveSource::begin`]).
    pub fn input(&self) -> Result<Input<'_>> {
        let b = self.begun.as_ref();
        let input = match &self.kind {
            Kind::Raw(src) => return Ok(Input::file(src)),
            Kind::Nbd { client, .. } => Input::nbd(
                client,
                self.name.clone(),
                b.map(|b| b.ranges.clone()).unwrap_or_default(),
            ),
            Kind::Managed(m) => {
                let client = m
                    .client
                    .as_ref()
                    .ok_or_else(|| EngineError::Usage("the live source was not begun".into()))?;
                Input::nbd(
                    client,
                    self.name.clone(),
                    b.map(|b| b.ranges.clone()).unwrap_or_default(),
                )
            }
        };
        Ok(match b.and_then(|b| b.runs.clone()) {
            Some(runs) => input.with_runs(runs),
            None => input,
        })
    }

    /// The CBT record for the new point, if this backup tracks changes.
    pub fn record(&self) -> Option<Vec<u8>> {
        self.begun
            .as_ref()
            .and_then(|b| b.record.as_ref())
            .map(CbtRecord::encode)
    }

    /// The report so far.
    pub fn report(&self) -> CbtReport {
        self.begun
            .as_ref()
            .map(|b| b.report.clone())
            .unwrap_or_default()
    }

    /// Verify-by-reading: compares the blocks that changed (stored anew, or gone to zero,
    /// against `parent`) with the bitmap's dirty blocks.
    pub fn check_missed(&mut self, stored: &[u64], kept: &[u64], parent: Option<&ParentInfo>) {
        let Some(b) = self.begun.as_mut() else { return };
        let Some(dirty) = &b.verify_dirty else { return };
        let mut changed: Vec<u64> = stored.to_vec();
        if let Some(p) = parent {
            let present: std::collections::HashSet<u64> =
                stored.iter().chain(kept).copied().collect();
            changed.extend(p.blocks.iter().copied().filter(|x| !present.contains(x)));
        }
        changed.sort_unstable();
        changed.dedup();
        let missed: Vec<u64> = changed
            .into_iter()
            .filter(|x| dirty.binary_search(x).is_err())
            .collect();
        b.report.verify = Some(VerifyReport {
            missed_blocks: missed.len() as u64,
            missed: missed.iter().take(100).copied().collect(),
        });
    }

    /// After the point is sealed: commits ([`LiveSource::commit`]; a failure is the report's
    /// `cleanup_error`, the point stays) and returns the report, the anchor block (read
    /// outside the pipeline) counted in `counters`.
    pub fn conclude(&mut self, counters: &mut crate::Counters) -> CbtReport {
        let mut report = self.report();
        if report.anchor_block.is_some() {
            counters.blocks_read += 1;
            counters.bytes_read += report.anchor_bytes;
        }
        if let Err(e) = self.commit() {
            report.cleanup_error = Some(e.to_string());
        }
        report
    }

    /// After the point is sealed: keeps the new bitmap, drops the old ones and the fleecing.
    pub fn commit(&mut self) -> Result<()> {
        self.committed = true;
        if let Kind::Managed(m) = &mut self.kind {
            let name = self.name.clone();
            m.teardown(true).map_err(qemu_err(&name))?;
        }
        Ok(())
    }

    /// The size now (a source must not change size during a backup).
    pub fn size_now(&self) -> Result<u64> {
        match &self.kind {
            Kind::Raw(s) => s.size_now(),
            _ => Ok(self.size),
        }
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Kind::Managed(m) = &mut self.kind {
            if let Err(e) = m.teardown(false) {
                tracing::warn!("undoing the backup's QMP transaction: {e}");
            }
        }
    }
}

/// The overlay file of a fleecing node's filename: a path, or QEMU's `json:{…}` form when
/// the node's backing was given at `blockdev-add`.
fn overlay_file(name: &str) -> Option<PathBuf> {
    match name.strip_prefix("json:") {
        None => Some(PathBuf::from(name)),
        Some(j) => {
            let v: serde_json::Value = serde_json::from_str(j).ok()?;
            v.pointer("/file/filename")
                .and_then(|f| f.as_str())
                .map(PathBuf::from)
        }
    }
}

/// The data ranges of an export (`base:allocation`: extents that read as zeroes are never
/// read). Without the context, everything is data.
fn data_ranges(client: &Client, name: &Path) -> Result<Vec<(u64, u64)>> {
    let Some(id) = client.context_id(META_BASE_ALLOCATION) else {
        return Ok(vec![(0, client.size)]);
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in client.map(id, 0, client.size).map_err(nbd_err(name))? {
        if e.flags & STATE_ZERO != 0 {
            continue;
        }
        match out.last_mut() {
            Some(l) if l.1 == e.start => l.1 = e.end,
            _ => out.push((e.start, e.end)),
        }
    }
    Ok(out)
}

/// The dirty ranges of bitmap context `id`.
fn dirty_ranges(client: &Client, id: u32, name: &Path) -> Result<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in client.map(id, 0, client.size).map_err(nbd_err(name))? {
        if e.flags & STATE_DIRTY == 0 {
            continue;
        }
        match out.last_mut() {
            Some(l) if l.1 == e.start => l.1 = e.end,
            _ => out.push((e.start, e.end)),
        }
    }
    Ok(out)
}

/// An owner's bitmap cannot carry Bulwark's checkpoint, so before trusting it one block the
/// bitmap calls unchanged (picked at random among those the parent has) is read and compared
/// with the parent's copy: a bitmap of another disk, or one recreated since, is caught there
/// and everything is read instead.
fn anchor_check(
    client: &Client,
    b: &mut Begun,
    parent: Option<&ParentInfo>,
    point: PointId,
    size: u64,
    block_size: u32,
    name: &Path,
) -> Result<()> {
    let (Some(p), Some(runs)) = (parent, b.runs.as_ref()) else {
        return Ok(());
    };
    let clean: u64 = runs
        .iter()
        .filter(|r| !r.read)
        .map(|r| r.end - r.first)
        .sum();
    if clean == 0 {
        return Ok(());
    }
    let seed = u64::from_le_bytes(point.0[8..16].try_into().expect("8 bytes"));
    let mut pick = seed % clean;
    let mut block = 0;
    for r in runs.iter().filter(|r| !r.read) {
        let n = r.end - r.first;
        if pick < n {
            block = r.first + pick;
            break;
        }
        pick -= n;
    }
    let len = bulwark_format::plain_len_of(bulwark_format::BlockNo(block), size, block_size);
    let data = client
        .read_at(block * u64::from(block_size), len as usize)
        .map_err(nbd_err(name))?;
    b.report.anchor_block = Some(block);
    b.report.anchor_bytes = u64::from(len);
    let want = p.blocks.binary_search(&block).ok().map(|i| p.hashes[i]);
    if want != Some(p.hash_of(block, &data)) {
        b.runs = None;
        b.report.used = false;
        b.report.fallback_reason = Some(format!(
            "bitmap {:?} says block {block} did not change, but it differs from the parent's copy: the bitmap is not this disk's since the parent (another disk, or recreated)",
            b.report.bitmap.take().unwrap_or_default()
        ));
        if let Some(r) = b.record.as_mut() {
            r.since_full_read = 0;
        }
    }
    Ok(())
}

/// Turns a decision into what to read, the record and the report.
#[allow(clippy::too_many_arguments)]
fn finish_decision(
    decision: Decision,
    mode: Mode,
    mut record: CbtRecord,
    ranges: Vec<(u64, u64)>,
    dirty: Option<Vec<(u64, u64)>>,
    size: u64,
    block_size: u32,
    parent_blocks: &[u64],
    new_bitmap: Option<String>,
) -> Begun {
    let mut report = CbtReport {
        mode: Some(mode.as_str()),
        new_bitmap,
        ..CbtReport::default()
    };
    let full = |reason: String, mut report: CbtReport, record: CbtRecord, ranges| {
        report.fallback_reason = Some(reason);
        Begun {
            runs: None,
            ranges,
            record: Some(record),
            report,
            verify_dirty: None,
        }
    };
    match (decision, dirty) {
        (Decision::FullRead { reason }, _) => full(reason, report, record, ranges),
        (Decision::Use { bitmap, .. } | Decision::Verify { bitmap }, None) => full(
            format!("the export does not offer bitmap {bitmap:?} (qemu:dirty-bitmap:{bitmap})"),
            report,
            record,
            ranges,
        ),
        (Decision::Verify { bitmap }, Some(d)) => {
            report.bitmap = Some(bitmap);
            report.dirty_bytes = cbt::range_bytes(&d);
            let blocks = cbt::dirty_blocks(size, block_size, &d);
            report.dirty_block_bytes = blocks.len() as u64 * u64::from(block_size);
            report.fallback_reason = Some(
                "periodic verify-by-reading (--cbt-verify-every): the whole disk is read and hashed, and every block the bitmap missed is reported".into(),
            );
            Begun {
                runs: None,
                ranges,
                record: Some(record),
                report,
                verify_dirty: Some(blocks),
            }
        }
        (
            Decision::Use {
                bitmap,
                since_full_read,
            },
            Some(d),
        ) => match cbt::plan_runs(size, block_size, &ranges, &d, parent_blocks) {
            Err(why) => full(
                format!("bitmap {bitmap:?} contradicts the disk ({why})"),
                report,
                record,
                ranges,
            ),
            Ok(runs) => {
                record.since_full_read = since_full_read;
                report.used = true;
                report.bitmap = Some(bitmap);
                report.dirty_bytes = cbt::range_bytes(&d);
                report.dirty_block_bytes =
                    cbt::dirty_blocks(size, block_size, &d).len() as u64 * u64::from(block_size);
                Begun {
                    runs: Some(runs),
                    ranges,
                    record: Some(record),
                    report,
                    verify_dirty: None,
                }
            }
        },
    }
}

impl Managed {
    fn new(qmp: Qmp, node: String, daemon: Option<Daemon>, job: &str) -> Managed {
        Managed {
            qmp,
            node,
            daemon,
            dir: None,
            nbd_socket: None,
            started_nbd_server: false,
            job: job.to_string(),
            new_bitmap: None,
            frozen: None,
            fleece: false,
            export: false,
            client: None,
        }
    }

    fn live(&self) -> bool {
        self.daemon.is_none()
    }

    fn fleece_node(&self) -> String {
        format!("bulwark-fleece-{}", self.job)
    }
    fn fleece_job(&self) -> String {
        format!("bulwark-fleece-{}", self.job)
    }
    fn export_id(&self) -> String {
        format!("bulwark-{}", self.job)
    }
    fn frozen_name(&self) -> String {
        format!("{}frozen", cbt::managed_prefix(&self.job))
    }

    fn exec(
        &mut self,
        cmd: &str,
        args: serde_json::Value,
    ) -> bulwark_qemu::Result<serde_json::Value> {
        self.qmp.execute(cmd, args)
    }

    /// Removes what an interrupted run of this job left in a running QEMU.
    fn clear_leftovers(&mut self) -> bulwark_qemu::Result<bool> {
        let mut found = false;
        let id = self.export_id();
        if self
            .exec("block-export-del", json!({"id": id, "mode": "hard"}))
            .is_ok()
        {
            found = true;
            self.wait_export_gone(&id);
        }
        let job = self.fleece_job();
        if self
            .exec("block-job-cancel", json!({"device": job, "force": true}))
            .is_ok()
        {
            found = true;
            self.wait_job_gone(&job);
        }
        let node = self.fleece_node();
        if self.qmp.node_names()?.contains(&node) {
            found = true;
            // The overlay the interrupted run made, in its private folder under /tmp.
            let file = self
                .exec("query-named-block-nodes", json!({"flat": true}))?
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|n| n.get("node-name").and_then(|v| v.as_str()) == Some(&node))
                        .and_then(|n| n.pointer("/image/filename"))
                        .and_then(|v| v.as_str())
                        .and_then(overlay_file)
                });
            self.exec("blockdev-del", json!({"node-name": node}))?;
            // A folder named for its run is removed by `private_dir::remove_stale` once
            // nobody holds its lock; one of the older form is not locked by its run, but
            // this job's fleecing node in QEMU says its run was interrupted.
            if let Some(dir) = file.as_deref().and_then(Path::parent) {
                let ours = dir.starts_with(std::env::temp_dir())
                    && dir
                        .file_name()
                        .is_some_and(|n| private_dir::is_unowned_name(&n.to_string_lossy()));
                if ours {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        let frozen = self.frozen_name();
        let n = self.node.clone();
        if self
            .exec(
                "block-dirty-bitmap-remove",
                json!({"node": n, "name": frozen}),
            )
            .is_ok()
        {
            found = true;
        }
        Ok(found)
    }

    fn wait_job_gone(&mut self, job: &str) {
        for _ in 0..2000 {
            let Ok(v) = self.exec("query-block-jobs", json!({})) else {
                return;
            };
            let present = v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|j| j.get("device").and_then(|d| d.as_str()) == Some(job))
            });
            if !present {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_export_gone(&mut self, id: &str) {
        for _ in 0..2000 {
            let Ok(v) = self.exec("query-block-exports", json!({})) else {
                return;
            };
            let present = v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| e.get("id").and_then(|d| d.as_str()) == Some(id))
            });
            if !present {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn begin(
        &mut self,
        name: &Path,
        identity: &str,
        size: u64,
        point: PointId,
        parent: Option<ParentCbt<'_>>,
        parent_blocks: &[u64],
        block_size: u32,
        opts: &LiveOptions,
    ) -> Result<Begun> {
        let q = qemu_err(name);
        let leftovers = if self.live() {
            self.clear_leftovers().map_err(&q)?
        } else {
            false
        };
        let node = self.node.clone();
        let info = self.qmp.node(&node).map_err(&q)?.ok_or_else(|| {
            EngineError::Usage(format!(
                "{}: the block node {node:?} is gone",
                name.display()
            ))
        })?;
        if info.size != size {
            return Err(EngineError::SourceChanged {
                path: name.to_path_buf(),
                before: size,
                after: info.size,
            });
        }
        let bitmaps: Vec<BitmapNow> = info
            .bitmaps
            .iter()
            .map(|b| BitmapNow {
                name: b.name.clone(),
                granularity: b.granularity,
                recording: b.recording,
                inconsistent: b.inconsistent,
            })
            .collect();
        let tracking = opts.cbt;
        let decision = if tracking {
            cbt::decide(
                parent,
                &Offer {
                    mode: Mode::Managed,
                    identity,
                    disk_size: size,
                    bitmaps: &bitmaps,
                    owner_bitmap: None,
                    verify_every: opts.verify_every,
                },
            )
        } else {
            Decision::FullRead {
                reason: String::new(),
            }
        };
        let old = match &decision {
            Decision::Use { bitmap, .. } | Decision::Verify { bitmap } => Some(bitmap.clone()),
            Decision::FullRead { .. } => None,
        };
        let new = cbt::managed_bitmap_name(&self.job, point);
        let frozen = self.frozen_name();
        let mut actions = Vec::new();
        if tracking {
            actions.push(json!({"type": "block-dirty-bitmap-add",
                "data": {"node": node, "name": new, "persistent": true,
                         "granularity": cbt::MANAGED_GRANULARITY}}));
        }
        if let Some(old) = &old {
            let g = bitmaps
                .iter()
                .find(|b| &b.name == old)
                .map_or(65536, |b| b.granularity);
            actions.push(json!({"type": "block-dirty-bitmap-add",
                "data": {"node": node, "name": frozen, "persistent": false, "disabled": true, "granularity": g}}));
            actions.push(json!({"type": "block-dirty-bitmap-merge",
                "data": {"node": node, "target": frozen, "bitmaps": [old]}}));
        }
        if self.live() {
            let base = std::env::temp_dir();
            // Before the room check: an interrupted run's overlay may be what fills TMPDIR.
            private_dir::remove_stale(&base);
            check_fleece_room(&base, size)?;
            let dir = private_dir::PrivateDir::create(&base, &self.job).map_err(|e| {
                EngineError::Usage(format!(
                    "creating a private folder in {}: {e}",
                    base.display()
                ))
            })?;
            let overlay = dir.path().join("fleece.qcow2");
            let st = std::process::Command::new(bulwark_qemu::tool("qemu-img").map_err(&q)?)
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&overlay)
                .arg(size.to_string())
                .status()
                .map_err(|e| EngineError::Usage(format!("running qemu-img create: {e}")))?;
            if !st.success() {
                return Err(EngineError::Usage(format!(
                    "qemu-img create of the fleecing overlay {} failed",
                    overlay.display()
                )));
            }
            let fnode = self.fleece_node();
            self.exec(
                "blockdev-add",
                json!({"driver": "qcow2", "node-name": fnode, "discard": "unmap",
                       "file": {"driver": "file", "filename": overlay}, "backing": node}),
            )
            .map_err(&q)?;
            self.fleece = true;
            actions.push(json!({"type": "blockdev-backup",
                "data": {"device": node, "target": fnode, "sync": "none", "job-id": self.fleece_job()}}));
            self.dir = Some(dir);
        }
        // The point in time: filesystems frozen (when a guest agent is given) around one
        // transaction.
        let mut agent = match &opts.guest_agent {
            Some(s) => Some(GuestAgent::connect(s, Duration::from_secs(30)).map_err(&q)?),
            None => None,
        };
        if let Some(a) = agent.as_mut() {
            a.freeze().map_err(&q)?;
        }
        let tx = if actions.is_empty() {
            Ok(serde_json::Value::Null)
        } else {
            self.exec("transaction", json!({"actions": actions}))
        };
        let thawed = agent.as_mut().map(|a| a.thaw());
        tx.map_err(&q)?;
        if tracking {
            self.new_bitmap = Some(new.clone());
        }
        if old.is_some() {
            self.frozen = Some(frozen.clone());
        }
        if let Some(Err(e)) = thawed {
            return Err(EngineError::Usage(format!(
                "the guest's filesystems may still be frozen: {e}; run guest-fsfreeze-thaw now"
            )));
        }
        // Export the point in time read-only over NBD, with the frozen bitmap.
        if self.live() {
            let sock = match &opts.nbd_socket {
                Some(s) => s.clone(),
                None => {
                    let sock = self.dir.as_ref().expect("dir").path().join("nbd.sock");
                    let start = |m: &mut Managed| {
                        m.exec(
                            "nbd-server-start",
                            json!({"addr": {"type": "unix", "data": {"path": sock}}}),
                        )
                    };
                    match start(self) {
                        Ok(_) => {}
                        Err(_) if leftovers => {
                            // An interrupted run of this job left its NBD server running.
                            let _ = self.exec("nbd-server-stop", json!({}));
                            start(self).map_err(&q)?;
                        }
                        Err(e) => {
                            return Err(EngineError::Usage(format!(
                                "{}: {e}; when the QEMU process already runs an NBD server, give its Unix socket with --nbd-socket",
                                name.display()
                            )))
                        }
                    }
                    self.started_nbd_server = true;
                    sock
                }
            };
            self.nbd_socket = Some(sock);
        }
        let export_node = if self.live() {
            self.fleece_node()
        } else {
            node.clone()
        };
        let mut export = json!({"type": "nbd", "id": self.export_id(), "node-name": export_node,
                                "name": self.export_id(), "writable": false});
        if old.is_some() {
            export["bitmaps"] = json!([frozen]);
        }
        self.exec("block-export-add", export).map_err(&q)?;
        self.export = true;
        let mut contexts = vec![META_BASE_ALLOCATION.to_string()];
        if old.is_some() {
            contexts.push(bitmap_context(&frozen));
        }
        let sock = self.nbd_socket.clone().expect("socket known");
        let client = Client::connect(
            &NbdUri::unix(sock, &self.export_id()),
            &ClientOptions {
                meta_contexts: contexts,
                timeout: NBD_TIMEOUT,
            },
        )
        .map_err(nbd_err(name))?;
        let ranges = data_ranges(&client, name)?;
        let dirty = match old
            .as_ref()
            .and(client.context_id(&bitmap_context(&frozen)))
        {
            Some(id) => Some(dirty_ranges(&client, id, name)?),
            None => None,
        };
        self.client = Some(client);
        if !tracking {
            return Ok(Begun {
                runs: None,
                ranges,
                record: None,
                report: CbtReport::default(),
                verify_dirty: None,
            });
        }
        let granularity = self
            .qmp
            .node(&node)
            .ok()
            .flatten()
            .and_then(|n| n.bitmaps.into_iter().find(|b| b.name == new))
            .map_or(0, |b| b.granularity);
        let record = CbtRecord {
            mode: Mode::Managed,
            disk_size: size,
            checkpoint: point,
            granularity,
            since_full_read: 0,
            source: identity.to_string(),
            bitmap: new.clone(),
        };
        let mut b = finish_decision(
            decision,
            Mode::Managed,
            record,
            ranges,
            dirty,
            size,
            block_size,
            parent_blocks,
            Some(new),
        );
        if let (Some(o), false) = (&old, b.report.used) {
            b.report.bitmap.get_or_insert(o.clone());
        }
        Ok(b)
    }

    /// Ends the backup in QEMU: `keep_new` after a sealed point (the old bitmaps go), else
    /// undone (the new bitmap goes, the parent's stays).
    fn teardown(&mut self, keep_new: bool) -> bulwark_qemu::Result<()> {
        if let Some(c) = self.client.take() {
            c.disconnect();
        }
        let mut first_err = None;
        let mut note = |r: bulwark_qemu::Result<serde_json::Value>| {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        };
        if self.export {
            let id = self.export_id();
            note(self.exec("block-export-del", json!({"id": id})));
            self.wait_export_gone(&id);
            self.export = false;
        }
        if self.fleece {
            let job = self.fleece_job();
            let _ = self.exec("block-job-cancel", json!({"device": job, "force": true}));
            self.wait_job_gone(&job);
            let n = self.fleece_node();
            note(self.exec("blockdev-del", json!({"node-name": n})));
            self.fleece = false;
        }
        if self.started_nbd_server {
            note(self.exec("nbd-server-stop", json!({})));
            self.started_nbd_server = false;
        }
        let node = self.node.clone();
        if let Some(f) = self.frozen.take() {
            note(self.exec(
                "block-dirty-bitmap-remove",
                json!({"node": node, "name": f}),
            ));
        }
        if let Some(new) = self.new_bitmap.take() {
            if keep_new {
                // Every other bitmap of this job is older than the point just sealed.
                let prefix = cbt::managed_prefix(&self.job);
                let names: Vec<String> = self
                    .qmp
                    .node(&node)?
                    .map(|n| n.bitmaps.into_iter().map(|b| b.name).collect())
                    .unwrap_or_default();
                for b in names
                    .into_iter()
                    .filter(|b| b.starts_with(&prefix) && *b != new && !b.ends_with(".frozen"))
                {
                    note(self.exec(
                        "block-dirty-bitmap-remove",
                        json!({"node": node, "name": b}),
                    ));
                }
            } else {
                note(self.exec(
                    "block-dirty-bitmap-remove",
                    json!({"node": node, "name": new}),
                ));
            }
        }
        self.dir = None;
        if let Some(d) = self.daemon.take() {
            // Quit writes the persistent bitmaps into the image.
            let _ = self.qmp.execute("quit", json!({}));
            d.wait_exit()?;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A sink that remembers which blocks were stored and which kept (verify-by-reading), then
/// passes them on to `inner`.
pub struct Recording<'a> {
    inner: &'a mut dyn crate::BlockSink,
    /// Blocks stored anew, in order.
    pub stored: Vec<u64>,
    /// Blocks kept from the parent, in order.
    pub kept: Vec<u64>,
}

impl<'a> Recording<'a> {
    /// Records what goes to `inner`.
    pub fn new(inner: &'a mut dyn crate::BlockSink) -> Self {
        Recording {
            inner,
            stored: Vec::new(),
            kept: Vec::new(),
        }
    }
}

impl crate::BlockSink for Recording<'_> {
    fn put_stored(&mut self, b: bulwark_format::StoredBlock<'_>) -> Result<()> {
        self.stored.push(b.block.0);
        self.inner.put_stored(b)
    }
    fn put_unchanged(&mut self, block: bulwark_format::BlockNo) -> Result<()> {
        self.kept.push(block.0);
        self.inner.put_unchanged(block)
    }
    fn parallel_sealer(&self) -> Option<std::sync::Arc<bulwark_crypto::SessionSealer>> {
        self.inner.parallel_sealer()
    }
}

/// Backs up a live source as a new restore point of `job` in a local repository (see
/// [`crate::backup_local`]); with `--cbt`/`--dirty-bitmap` the point carries its CBT record,
/// and an incremental reads only the dirty blocks when the rules allow. Encrypted with `key`
/// when one is given, as [`crate::backup_local_encrypted`] is (a chain that cannot continue
/// under it gets a new active full); without one, an encrypted job is refused.
pub fn backup_live(
    repo: &bulwark_repository::Repository,
    job: &str,
    mut src: LiveSource,
    opts: &crate::BackupOptions,
    key: Option<&crate::WriteKey>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(crate::BackupSummary, CbtReport)> {
    let started = std::time::Instant::now();
    crate::backup::check_request(job, opts, src.size, &src.name)?;
    let plan = crate::crypt::plan_local(repo, job, opts, src.size, key)?;
    let info = match &plan.next.parent {
        Some(p) => Some(ParentInfo::of(repo, job, p, plan.change_key())?),
        None => None,
    };
    let mut point = plan.begin(repo, job, src.size, opts.compression_level)?;
    src.begin(point.builder.point(), info.as_ref(), point.block_size)?;
    if let Some(rec) = src.record() {
        point.builder.set_extension(cbt::TAG, rec)?;
    }
    let (counters, stored, kept) = {
        let input = src.input()?;
        let mut sink = Recording::new(&mut point.builder);
        let c = crate::run_backup_pipeline(
            &input,
            point.block_size,
            opts,
            &point.known,
            point.sealing.take(),
            &mut sink,
            progress,
        )?;
        (c, sink.stored, sink.kept)
    };
    crate::backup::check_same_size(&src.name, src.size, src.size_now()?)?;
    src.check_missed(&stored, &kept, info.as_ref());
    let mut summary = point.finish(counters, started)?;
    let report = src.conclude(&mut summary.counters);
    // Cleaning up in QEMU counts.
    summary.elapsed = started.elapsed();
    Ok((summary, report))
}
