//! `bulwark mount` and `bulwark umount`: file-level restore (docs/instant-access.md).
//!
//! `mount` shows a restore point's disk as the read-only file `DIR/disk.raw` through FUSE,
//! finds its partitions (GPT, MBR) and, as root, attaches each ext4, XFS or vfat partition to
//! a read-only loop device (`losetup -r -o OFFSET --sizelimit SIZE`) and mounts it read-only
//! without journal replay or log recovery under `DIR/partN` (`DIR/fs` for a disk that is
//! one filesystem without a partition table). It runs until Ctrl-C, SIGTERM,
//! SIGHUP or `bulwark umount DIR`, then undoes everything in reverse order.
//!
//! What it set up is recorded in a state file (see [`state_dir`]) as it goes, and a guard
//! process (`bulwark umount --guard DIR`, in its own process group) waits on a pipe from the
//! mount: if the mount dies without cleaning up (SIGKILL), the pipe closes and the guard
//! undoes what the state file lists. `bulwark umount DIR` does the same when both are gone.
//! Nothing here writes to the repository.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use bulwark_engine::partitions::{self, FsType, Partition};
use serde::{Deserialize, Serialize};

use super::export::{open_point, termination_signals, DiskImage};
use crate::output::{human, Output, EXIT_OK};

/// The disk file's name inside the mount.
pub const DISK_FILE: &str = "disk.raw";
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Arguments of `bulwark mount`.
#[derive(clap::Args)]
#[command(mut_args(super::job_help("The job to mount from")))]
pub struct Args {
    #[command(flatten)]
    pub at: super::PointArg,
    /// Cache of decoded blocks, e.g. 64M.
    #[arg(long, default_value = "64M", value_parser = super::parse_size)]
    cache: u32,
    /// Show the disk file only; mount no partition.
    #[arg(long)]
    no_partitions: bool,
    #[command(flatten)]
    keys: super::KeyArgs,
    /// An empty folder to mount on.
    dir: PathBuf,
}

/// Arguments of `bulwark umount`.
#[derive(clap::Args)]
pub struct UmountArgs {
    /// The folder `bulwark mount` mounted on.
    dir: PathBuf,
    /// Internal: wait for the mount's pipe to close, then undo what it left.
    #[arg(long, hide = true)]
    guard: bool,
}

/// What a mount set up, as it goes (the guard and `umount` undo it from this).
#[derive(Serialize, Deserialize, Default, Clone)]
pub struct State {
    pub pid: u32,
    /// The mount process's start time (field 22 of /proc/PID/stat): `umount` signals `pid`
    /// only while this matches, so never another process that was given the pid later.
    /// State files written before it was recorded have none: their pid is never signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    pub dir: PathBuf,
    pub disk: PathBuf,
    /// FUSE is mounted on `dir`.
    pub fuse: bool,
    pub loops: Vec<String>,
    pub mounts: Vec<PathBuf>,
}

/// One partition as reported.
#[derive(Serialize)]
pub struct PartReport {
    pub number: u32,
    pub table: &'static str,
    pub offset: u64,
    pub size: u64,
    pub filesystem: Option<&'static str>,
    pub mounted_at: Option<PathBuf>,
    pub loop_device: Option<String>,
    pub note: Option<String>,
}

/// What `bulwark mount` set up.
#[derive(Serialize)]
pub struct MountReport {
    pub job: String,
    pub point: String,
    pub dir: PathBuf,
    pub disk_file: PathBuf,
    pub disk_size: u64,
    pub partitions: Vec<PartReport>,
    /// Steps skipped because they need root, and why.
    pub needs_root: Option<String>,
}

/// Where mount state files live: `/run/bulwark/mounts` for root, else
/// `$XDG_RUNTIME_DIR/bulwark-mounts`, else `/tmp/bulwark-mounts-UID`.
pub fn state_dir() -> PathBuf {
    let uid = bulwark_sys::effective_uid();
    if uid == 0 {
        return PathBuf::from("/run/bulwark/mounts");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("bulwark-mounts"),
        _ => std::env::temp_dir().join(format!("bulwark-mounts-{uid}")),
    }
}

fn state_path(dir: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let h = bulwark_format::Digest::of(dir.as_os_str().as_bytes()).to_hex();
    state_dir().join(format!("{}.json", &h[..32]))
}

fn save_state(s: &State) -> anyhow::Result<()> {
    let p = state_path(&s.dir);
    let d = state_dir();
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    bulwark_repository::write_atomic(&p, &serde_json::to_vec_pretty(s)?)
        .with_context(|| format!("writing the mount state {}", p.display()))?;
    Ok(())
}

fn load_state(dir: &Path) -> Option<State> {
    let b = std::fs::read(state_path(dir)).ok()?;
    if b.len() > 1 << 20 {
        return None;
    }
    serde_json::from_slice(&b).ok()
}

/// Undoes `\040`-style escapes of /proc/self/mountinfo.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Mount points at or under `dir`, deepest first, with their filesystem types.
pub fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut v: Vec<(PathBuf, String)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let mp = unescape(f.get(4)?);
            let fstype = f.get(sep + 1)?.to_string();
            mp.starts_with(dir).then_some((mp, fstype))
        })
        .collect();
    v.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

fn run_tool(prog: &str, args: &[&OsStr]) -> Result<String, String> {
    let o = Command::new(prog)
        .args(args)
        .env("PATH", PATH_ENV)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(format!(
            "{prog} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// The file a loop device reads, if it is attached.
fn loop_backing(dev: &str) -> Option<PathBuf> {
    let name = Path::new(dev).file_name()?.to_str()?;
    let p = format!("/sys/block/{name}/loop/backing_file");
    let s = std::fs::read_to_string(p).ok()?;
    Some(PathBuf::from(
        s.trim_end_matches('\n').trim_end_matches(" (deleted)"),
    ))
}

/// Undoes a mount from its state: partition mounts, loop devices (only those still backed
/// by this mount's disk file), the FUSE mount, the state file. Returns what failed.
pub fn cleanup(s: &State) -> Vec<String> {
    let mut failed = Vec::new();
    // Which loop devices are ours, decided before anything is detached: once the FUSE mount
    // is detached the kernel names their backing file relative to nothing ("/disk.raw").
    let ours: Vec<&String> = s
        .loops
        .iter()
        .filter(|l| loop_backing(l).as_deref() == Some(s.disk.as_path()))
        .collect();
    let fuse_mounted = |dir: &Path| {
        mounts_under(dir)
            .iter()
            .any(|(p, t)| p == dir && t.starts_with("fuse"))
    };
    // Partition mounts first. When the FUSE daemon is dead their paths cannot be looked up
    // (ENOTCONN): then the whole tree is detached at once (MNT_DETACH of the FUSE mount,
    // which takes its submounts along).
    let mut detach = false;
    for m in s.mounts.iter().rev() {
        if mounts_under(m).iter().any(|(p, _)| p == m)
            && run_tool("umount", &[m.as_os_str()]).is_err()
        {
            detach = true;
        }
    }
    if fuse_mounted(&s.dir) {
        let r = if detach {
            Err(String::new())
        } else {
            run_tool("fusermount3", &[OsStr::new("-u"), s.dir.as_os_str()])
        };
        if r.is_err() {
            if let Err(e) = run_tool("umount", &[OsStr::new("-l"), s.dir.as_os_str()]) {
                failed.push(e);
            }
        }
    }
    // A loop device still in use is cleared by the kernel once its last user lets go.
    for l in ours.into_iter().rev() {
        if let Err(e) = run_tool("losetup", &[OsStr::new("-d"), OsStr::new(l)]) {
            failed.push(e);
        }
    }
    if failed.is_empty() {
        let _ = std::fs::remove_file(state_path(&s.dir));
    }
    failed
}

/// The folder a partition is mounted on: `partN`, or `fs` for a disk that is one
/// filesystem without a partition table.
pub fn part_dir(number: u32) -> String {
    if number == 0 {
        "fs".into()
    } else {
        format!("part{number}")
    }
}

/// The FUSE filesystem: `/disk.raw` and an empty folder per partition to mount on.
struct DiskFs {
    image: Arc<dyn DiskImage>,
    parts: Vec<u32>,
    uid: u32,
    gid: u32,
    made: SystemTime,
}

const TTL: Duration = Duration::from_secs(60);
const INO_ROOT: u64 = 1;
const INO_DISK: u64 = 2;
const INO_PART0: u64 = 16;

impl DiskFs {
    fn attr(&self, ino: u64) -> Option<fuser::FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            // The owner's only (root's, for root's mount): the disk file is the whole disk,
            // decrypted for encrypted points, and the partitions below hold the guest's files
            // with the guest's owners, which mean other people on this host.
            INO_ROOT => (fuser::FileType::Directory, 0o500, 0, 2),
            INO_DISK => (fuser::FileType::RegularFile, 0o400, self.image.size(), 1),
            i if i >= INO_PART0 && ((i - INO_PART0) as usize) < self.parts.len() => {
                (fuser::FileType::Directory, 0o500, 0, 2)
            }
            _ => return None,
        };
        Some(fuser::FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.made,
            mtime: self.made,
            ctime: self.made,
            crtime: self.made,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entries(&self) -> Vec<(u64, fuser::FileType, String)> {
        let mut v = vec![
            (INO_ROOT, fuser::FileType::Directory, ".".to_string()),
            (INO_ROOT, fuser::FileType::Directory, "..".to_string()),
            (
                INO_DISK,
                fuser::FileType::RegularFile,
                DISK_FILE.to_string(),
            ),
        ];
        for (i, n) in self.parts.iter().enumerate() {
            v.push((
                INO_PART0 + i as u64,
                fuser::FileType::Directory,
                part_dir(*n),
            ));
        }
        v
    }
}

impl fuser::Filesystem for DiskFs {
    fn lookup(
        &mut self,
        _r: &fuser::Request<'_>,
        parent: u64,
        name: &OsStr,
        reply: fuser::ReplyEntry,
    ) {
        let found = (parent == INO_ROOT)
            .then(|| {
                self.entries()
                    .into_iter()
                    .skip(2)
                    .find(|(_, _, n)| OsStr::new(n) == name)
            })
            .flatten();
        match found.and_then(|(ino, _, _)| self.attr(ino)) {
            Some(a) => reply.entry(&TTL, &a, 0),
            None => reply.error(libc_enoent()),
        }
    }

    fn getattr(
        &mut self,
        _r: &fuser::Request<'_>,
        ino: u64,
        _fh: Option<u64>,
        reply: fuser::ReplyAttr,
    ) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(libc_enoent()),
        }
    }

    fn open(&mut self, _r: &fuser::Request<'_>, ino: u64, flags: i32, reply: fuser::ReplyOpen) {
        // O_ACCMODE: only reads.
        if ino != INO_DISK {
            return reply.error(21); // EISDIR
        }
        if flags & 3 != 0 {
            return reply.error(30); // EROFS
        }
        reply.opened(0, 0);
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        _r: &fuser::Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: fuser::ReplyData,
    ) {
        if ino != INO_DISK || offset < 0 {
            return reply.error(22); // EINVAL
        }
        let off = offset as u64;
        let total = self.image.size();
        if off >= total {
            return reply.data(&[]);
        }
        let n = u64::from(size).min(total - off).min(32 << 20) as usize;
        let mut buf = vec![0u8; n];
        match self.image.read_at(off, &mut buf) {
            Ok(()) => reply.data(&buf),
            Err(e) => {
                tracing::warn!("mount: read failed: {e}");
                reply.error(5) // EIO
            }
        }
    }

    fn readdir(
        &mut self,
        _r: &fuser::Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: fuser::ReplyDirectory,
    ) {
        if ino != INO_ROOT {
            if self.attr(ino).is_some() {
                // A partition folder: empty (until a filesystem is mounted over it).
                return reply.ok();
            }
            return reply.error(libc_enoent());
        }
        for (i, (ino, kind, name)) in self
            .entries()
            .into_iter()
            .enumerate()
            .skip(offset.max(0) as usize)
        {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn libc_enoent() -> i32 {
    2
}

/// A running mount: undone by [`Mounted::undo`] or on drop, in reverse order, whatever
/// ended it.
struct Mounted {
    state: State,
    session: Option<fuser::BackgroundSession>,
    guard: Option<Child>,
    undone: bool,
}

impl Mounted {
    fn record(&mut self) {
        if let Err(e) = save_state(&self.state) {
            tracing::warn!("{e:#}");
        }
    }

    /// Undoes everything (once), in reverse order: partition mounts, loop devices, FUSE.
    /// `Err` says what could not be undone, what the guard then did, and what to do.
    fn undo(&mut self) -> Result<(), String> {
        if std::mem::replace(&mut self.undone, true) {
            return Ok(());
        }
        let mut failed = Vec::new();
        for m in self.state.mounts.iter().rev() {
            if let Err(e) = run_tool("umount", &[m.as_os_str()]) {
                failed.push(e);
            }
        }
        for l in self.state.loops.iter().rev() {
            if let Err(e) = run_tool("losetup", &[OsStr::new("-d"), OsStr::new(l)]) {
                failed.push(e);
            }
        }
        // Unmounts FUSE (the session thread ends with the process).
        drop(self.session.take());
        let dir = &self.state.dir;
        let fuse_left = || {
            mounts_under(dir)
                .iter()
                .any(|(p, t)| p == dir && t.starts_with("fuse"))
        };
        if self.state.fuse && fuse_left() {
            failed.push(format!(
                "the FUSE mount on {} is still there",
                dir.display()
            ));
        }
        if failed.is_empty() {
            let _ = std::fs::remove_file(state_path(dir));
        }
        // The guard sees its pipe close, finds no state file (or one it cleans) and exits.
        if let Some(mut g) = self.guard.take() {
            drop(g.stdin.take());
            let _ = g.wait();
        }
        if failed.is_empty() {
            return Ok(());
        }
        let what = format!(
            "could not undo everything on {}: {}",
            dir.display(),
            failed.join("; ")
        );
        if load_state(dir).is_none() && mounts_under(dir).is_empty() {
            // The guard cleaned up from the state file: a lazy detach of the whole tree.
            Err(format!(
                "{what}; the guard then detached it lazily (umount -l): it is gone from {}, but \
                 a filesystem still in use stays mounted out of sight, with its loop device, \
                 until the last program using it closes its files (`losetup -l` shows the device)",
                dir.display()
            ))
        } else {
            Err(format!(
                "{what}; close what still uses it and run `bulwark umount {}`",
                dir.display()
            ))
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.undo() {
            eprintln!("bulwark mount: {e}");
        }
    }
}

/// The folder to mount on, canonical, once it is an empty folder nothing is mounted on.
/// A folder in use is said to be in use first: a live mount makes it non-empty and a dead
/// FUSE mount (its daemon killed) answers ENOTCONN, which would otherwise read as "not empty"
/// or "not a folder".
fn check_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let in_use = |d: &Path| {
        anyhow::anyhow!(
            "{} is already in use by a mount; run `bulwark umount {}` first",
            d.display(),
            d.display()
        )
    };
    let used = |d: &Path| !mounts_under(d).is_empty() || load_state(d).is_some();
    let dir = match std::fs::canonicalize(dir) {
        Ok(d) => d,
        Err(e) => {
            let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            if used(&abs) {
                return Err(in_use(&abs));
            }
            return Err(e)
                .with_context(|| format!("{} must be an existing empty folder", dir.display()));
        }
    };
    if used(&dir) {
        return Err(in_use(&dir));
    }
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Err(e) if e.raw_os_error() == Some(ENOTCONN) => return Err(in_use(&dir)),
        _ => bail!(
            "{} is not a folder; give an empty folder to mount on",
            dir.display()
        ),
    }
    let mut entries = std::fs::read_dir(&dir).map_err(|e| match e.raw_os_error() {
        Some(ENOTCONN) => in_use(&dir),
        _ => anyhow::Error::new(e).context(format!("reading {}", dir.display())),
    })?;
    if entries.next().is_some() {
        bail!(
            "{} is not empty; give an empty folder to mount on",
            dir.display()
        );
    }
    Ok(dir)
}

/// "Transport endpoint is not connected": what a FUSE mount whose daemon died answers.
const ENOTCONN: i32 = 107;

fn mount_partition(
    m: &mut Mounted,
    p: &Partition,
    fs: FsType,
    disk: &Path,
    dir: &Path,
) -> Result<(String, PathBuf), String> {
    let dev = run_tool(
        "losetup",
        &[
            OsStr::new("-r"),
            OsStr::new("-f"),
            OsStr::new("--show"),
            OsStr::new("-o"),
            OsStr::new(&p.offset.to_string()),
            OsStr::new("--sizelimit"),
            OsStr::new(&p.size.to_string()),
            disk.as_os_str(),
        ],
    )?;
    m.state.loops.push(dev.clone());
    m.record();
    let at = dir.join(part_dir(p.number));
    run_tool(
        "mount",
        &[
            OsStr::new("-t"),
            OsStr::new(fs.mount_type()),
            OsStr::new("-o"),
            OsStr::new(fs.mount_options()),
            OsStr::new(&dev),
            at.as_os_str(),
        ],
    )?;
    m.state.mounts.push(at.clone());
    m.record();
    Ok((dev, at))
}

/// Runs `bulwark mount`.
pub fn run(a: Args, config_dir: &Path, out: &Output) -> anyhow::Result<i32> {
    let repo = &a.at.open(config_dir);
    let mut signals = termination_signals()?;
    let dir = check_dir(&a.dir)?;
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) and install fuse3, then try again");
    }
    let opened = open_point(repo, &a.at, &a.keys, a.cache)?;
    let image = opened.image.clone();
    let read = |off: u64, buf: &mut [u8]| {
        image
            .read_at(off, buf)
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let mut parts = if a.no_partitions {
        Vec::new()
    } else {
        partitions::find(&read, image.size())
    };
    // A disk without a partition table may hold one filesystem from its first byte.
    if parts.is_empty() && !a.no_partitions {
        if let Some(fs) = partitions::detect_fs(&read, 0, image.size()) {
            parts.push(Partition {
                number: 0,
                offset: 0,
                size: image.size(),
                fs: Some(fs),
                table: "none",
            });
        }
    }
    let root = bulwark_sys::effective_uid() == 0;
    let (uid, gid) = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/proc/self").context("reading /proc/self")?;
        (m.uid(), m.gid())
    };
    let disk = dir.join(DISK_FILE);
    let mut m = Mounted {
        state: State {
            pid: std::process::id(),
            start_time: process_start_time(std::process::id()),
            dir: dir.clone(),
            disk: disk.clone(),
            ..Default::default()
        },
        session: None,
        guard: None,
        undone: false,
    };
    m.record();
    let exe = std::env::current_exe().context("finding the bulwark binary for the guard")?;
    m.guard = Some(
        Command::new(exe)
            .arg("umount")
            .arg("--guard")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the mount's guard process")?,
    );
    let fs = DiskFs {
        image: image.clone(),
        parts: parts.iter().map(|p| p.number).collect(),
        uid,
        gid,
        made: SystemTime::now(),
    };
    let mut opts = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName(format!("bulwark:{}", a.at.job())),
        fuser::MountOption::Subtype("bulwark".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoExec,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
    ];
    if root {
        opts.push(fuser::MountOption::AllowOther);
    }
    m.session = Some(fuser::spawn_mount2(fs, &dir, &opts).with_context(|| {
        format!(
            "mounting the disk file on {} with FUSE (needs fusermount3 from the fuse3 package, and \
             /dev/fuse readable and writable by this user: mode 0666, as udev sets it)",
            dir.display()
        )
    })?);
    m.state.fuse = true;
    m.record();
    let mut reports = Vec::new();
    for p in &parts {
        let mut r = PartReport {
            number: p.number,
            table: p.table,
            offset: p.offset,
            size: p.size,
            filesystem: p.fs.map(|f| f.mount_type()),
            mounted_at: None,
            loop_device: None,
            note: None,
        };
        match (p.fs, root) {
            (None, _) => r.note = Some("no ext4, XFS or vfat filesystem found; not mounted".into()),
            (Some(_), false) => {
                r.note = Some(format!(
                    "not mounted (needs root); read it from the disk file at offset {}",
                    p.offset
                ))
            }
            (Some(fs), true) => match mount_partition(&mut m, p, fs, &disk, &dir) {
                Ok((dev, at)) => {
                    r.loop_device = Some(dev);
                    r.mounted_at = Some(at);
                }
                Err(e) => r.note = Some(format!("not mounted: {e}")),
            },
        }
        reports.push(r);
    }
    let needs_root = (!root && parts.iter().any(|p| p.fs.is_some())).then(|| {
        "mounting partitions needs root: loop devices (losetup) and mount(2) are root-only. \
         The disk file is readable now; run `bulwark mount` as root to mount each ext4, XFS \
         or vfat partition read-only under DIR/partN"
            .to_string()
    });
    let report = MountReport {
        job: a.at.job().to_string(),
        point: opened.point.to_hex(),
        dir: dir.clone(),
        disk_file: disk.clone(),
        disk_size: image.size(),
        partitions: reports,
        needs_root,
    };
    if out.json {
        out.json(&report);
    } else {
        outln!(
            "mounted point {} of job {} on {}: {} ({})",
            report.point,
            report.job,
            dir.display(),
            disk.display(),
            human(report.disk_size)
        );
        for p in &report.partitions {
            outln!(
                "  partition {} ({}, {}, {}): {}",
                p.number,
                p.table,
                human(p.size),
                p.filesystem.unwrap_or("unknown filesystem"),
                match (&p.mounted_at, &p.note) {
                    (Some(at), _) => format!("read-only at {}", at.display()),
                    (None, Some(n)) => n.clone(),
                    (None, None) => String::new(),
                }
            );
        }
        if let Some(n) = &report.needs_root {
            outln!("  {n}");
        }
        outln!("  stop with Ctrl-C or `bulwark umount {}`", dir.display());
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let sig = signals.forever().next();
    tracing::info!(?sig, "unmounting");
    m.undo().map_err(anyhow::Error::msg)?;
    Ok(EXIT_OK)
}

/// The start time of process `pid`, in clock ticks since boot (field 22 of /proc/PID/stat).
/// With the pid it names one process for good; a pid alone is reused once its process ends.
fn process_start_time(pid: u32) -> Option<u64> {
    start_time_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a /proc/PID/stat line. Field 2, the command name, is in parentheses and may
/// itself hold spaces and ')': the fields are counted from the last ')'.
fn start_time_of(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// True while the mount that wrote `s` still runs: its pid has the start time it recorded.
/// A state without a start time (an older bulwark) names no process that may be signalled.
fn mount_alive(s: &State) -> bool {
    s.start_time
        .is_some_and(|t| process_start_time(s.pid) == Some(t))
}

/// Runs `bulwark umount` (and the guard).
pub fn run_umount(a: UmountArgs, out: &Output) -> anyhow::Result<i32> {
    let dir = std::fs::canonicalize(&a.dir).unwrap_or_else(|_| a.dir.clone());
    if a.guard {
        // Blocks until the mount closes its end (it exited, or was killed).
        let mut sink = Vec::new();
        let _ = std::io::stdin().take(1 << 16).read_to_end(&mut sink);
        if let Some(s) = load_state(&dir) {
            std::thread::sleep(Duration::from_millis(200));
            let failed = cleanup(&s);
            for f in failed {
                eprintln!("bulwark mount guard: {f}");
            }
        }
        return Ok(EXIT_OK);
    }
    let Some(s) = load_state(&dir) else {
        // No state: a FUSE mount of ours may still be there (state removed by hand).
        if mounts_under(&dir)
            .iter()
            .any(|(p, t)| p == &dir && t == "fuse.bulwark")
        {
            run_tool("fusermount3", &[OsStr::new("-u"), dir.as_os_str()])
                .map_err(anyhow::Error::msg)?;
            outln!("unmounted {}", dir.display());
            return Ok(EXIT_OK);
        }
        bail!(
            "nothing of bulwark is mounted on {} (no state in {})",
            dir.display(),
            state_dir().display()
        );
    };
    if s.pid != std::process::id() && mount_alive(&s) {
        // Ask the mount to clean up itself, as Ctrl-C would.
        let _ = run_tool(
            "kill",
            &[OsStr::new("-TERM"), OsStr::new(&s.pid.to_string())],
        );
        for _ in 0..200 {
            if load_state(&dir).is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let left = load_state(&dir).map(|s| cleanup(&s)).unwrap_or_default();
    if !left.is_empty() {
        bail!(
            "could not undo everything on {}: {}",
            dir.display(),
            left.join("; ")
        );
    }
    if out.json {
        out.json(&serde_json::json!({ "unmounted": dir }));
    } else {
        outln!("unmounted {}", dir.display());
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_field_22_whatever_the_command_name_holds() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(start_time_of(&format!("42 (bulwark) {tail}")), Some(987654));
        assert_eq!(start_time_of(&format!("42 (a) b (c) {tail}")), Some(987654));
        assert_eq!(start_time_of("42 (bulwark) S 1 2"), None);
        assert_eq!(start_time_of("garbage"), None);
        let me = process_start_time(std::process::id());
        assert!(me.is_some_and(|t| t > 0), "{me:?}");
    }
}
