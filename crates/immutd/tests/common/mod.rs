//! Helpers for the root-only integration tests: a real unprivileged user, real ext4 and XFS
//! filesystems on loop devices, real restore points, and the real service binary. Every
//! resource is released by a Drop guard, also when a test fails.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use bulwark_format::{
    BlockNo, Header, PointId, PointKind, PointMeta, PointWriter, RetentionClass, Stats, StoredBlock,
};
use bulwark_immut_msg::layout::incoming_path;
use bulwark_testkit::immutd::{Immutd, ImmutdSetup};

pub const IMMUTD: &str = env!("CARGO_BIN_EXE_bulwark-immutd");
/// `bulwark-immutctl` (its own package) is built next to bulwark-immutd by
/// `cargo test --workspace`.
pub static IMMUTCTL: std::sync::LazyLock<PathBuf> = std::sync::LazyLock::new(|| {
    let p = Path::new(IMMUTD).with_file_name("bulwark-immutctl");
    assert!(
        p.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds bulwark-immutctl)",
        p.display()
    );
    p
});

/// True when the test can run; prints why it is skipped otherwise.
pub fn can_run(test: &str, tools: &[&str]) -> bool {
    if bulwark_sys::effective_uid() != 0 {
        eprintln!(
            "SKIP {test}: needs root (creates users, loop filesystems and runs the root service)"
        );
        return false;
    }
    for t in tools {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .env("PATH", path_env())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            eprintln!("SKIP {test}: the tool `{t}` is not installed (see .ci/run)");
            return false;
        }
    }
    true
}

pub fn path_env() -> String {
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
}

/// Runs a command as root, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A real unprivileged user, deleted on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    pub fn create() -> TestUser {
        let name = unique("bwt");
        let mut last = String::new();
        for _ in 0..50 {
            let o = Command::new("useradd")
                .args([
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    &name,
                ])
                .env("PATH", path_env())
                .output()
                .unwrap();
            if o.status.success() {
                let id = |flag: &str| {
                    sh(&format!("id {flag} {name}"))
                        .trim()
                        .parse::<u32>()
                        .unwrap()
                };
                return TestUser {
                    uid: id("-u"),
                    gid: id("-g"),
                    name,
                };
            }
            // useradd fails while another test holds the passwd lock.
            last = String::from_utf8_lossy(&o.stderr).into_owned();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("useradd {name} failed: {last}");
    }

    /// A command that runs as this user (std clears supplementary groups when root sets a uid).
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.uid(self.uid)
            .gid(self.gid)
            .env_clear()
            .env("PATH", path_env())
            .current_dir("/");
        c
    }

    /// Runs `sh -c script` as this user.
    pub fn sh(&self, script: &str) -> Output {
        self.cmd("sh").arg("-c").arg(script).output().unwrap()
    }

    /// Runs `bulwark-immutctl --socket S args…` as this user.
    pub fn ctl(&self, socket: &Path, args: &[&str]) -> CtlResult {
        let o = self
            .cmd(IMMUTCTL.to_str().unwrap())
            .arg("--socket")
            .arg(socket)
            .args(args)
            .output()
            .unwrap();
        CtlResult::from(o)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("userdel")
                .arg(&self.name)
                .env("PATH", path_env())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("warning: could not remove test user {}", self.name);
    }
}

/// Output of `bulwark-immutctl`: its exit code and its `key=value` lines.
#[derive(Debug)]
pub struct CtlResult {
    pub code: i32,
    pub out: String,
    pub err: String,
}

impl From<Output> for CtlResult {
    fn from(o: Output) -> Self {
        CtlResult {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl CtlResult {
    pub fn get(&self, key: &str) -> Option<String> {
        self.out
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
    }
    pub fn ok(self) -> CtlResult {
        assert_eq!(self.code, 0, "request failed: {}{}", self.out, self.err);
        self
    }
    pub fn refused(&self) -> Option<String> {
        (self.code == 3).then(|| self.get("refused").unwrap_or_default())
    }
    pub fn int(&self, key: &str) -> i64 {
        self.get(key)
            .unwrap_or_else(|| panic!("no {key} in {}", self.out))
            .parse()
            .unwrap()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    Ext4,
    Xfs,
}

/// A filesystem on a loop device, mounted in a temporary folder; on drop every attribute is
/// cleared, it is unmounted and the image removed.
pub struct LoopFs {
    pub kind: FsKind,
    pub mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    pub fn new(kind: FsKind) -> LoopFs {
        let dir = tempfile::Builder::new()
            .prefix("bwfs")
            .tempdir_in("/tmp")
            .unwrap();
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let (size, mkfs) = match kind {
            FsKind::Ext4 => ("64M", format!("mkfs.ext4 -q -F {}", img.display())),
            FsKind::Xfs => (
                "320M",
                format!("mkfs.xfs -q -m reflink=1 {}", img.display()),
            ),
        };
        sh(&format!("truncate -s {size} {}", img.display()));
        sh(&mkfs);
        sh(&format!(
            "mount -o loop {} {}",
            img.display(),
            mnt.display()
        ));
        std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
        LoopFs {
            kind,
            mnt,
            _dir: dir,
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let m = self.mnt.display();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "chattr -R -i -a {m} 2>/dev/null; umount {m} || umount -l {m}"
            ))
            .env("PATH", path_env())
            .status();
    }
}

/// A guarded repository: a user, a filesystem, the repository folder and the service setup.
pub struct Rig {
    pub user: TestUser,
    pub fs: LoopFs,
    pub repo: PathBuf,
    pub setup: ImmutdSetup,
    _state: tempfile::TempDir,
}

impl Rig {
    pub fn new(kind: FsKind) -> Rig {
        let user = TestUser::create();
        let fs = LoopFs::new(kind);
        let repo = fs.mnt.join("repo");
        std::fs::create_dir(&repo).unwrap();
        std::os::unix::fs::chown(&repo, Some(user.uid), Some(user.gid)).unwrap();
        std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o700)).unwrap();
        let incoming = repo.join("incoming");
        std::fs::create_dir(&incoming).unwrap();
        std::os::unix::fs::chown(&incoming, Some(user.uid), Some(user.gid)).unwrap();
        let state = tempfile::Builder::new()
            .prefix("bwimmutd")
            .tempdir_in("/tmp")
            .unwrap();
        let setup = ImmutdSetup::new(&user.name, repo.clone(), state.path().join("svc"));
        Rig {
            user,
            fs,
            repo,
            setup,
            _state: state,
        }
    }

    pub fn start(&self) -> Immutd {
        self.setup
            .spawn(Path::new(IMMUTD))
            .expect("starting bulwark-immutd")
    }

    pub fn socket(&self) -> PathBuf {
        self.setup.socket()
    }

    /// Runs `bulwark-immutd --config C args…` as root.
    pub fn immutd_cli(&self, args: &[&str]) -> Output {
        Command::new(IMMUTD)
            .arg("--config")
            .arg(self.setup.config_path())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Attributes block removal of the state folder and the mount.
        let s = self.setup.dir.display();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("chattr -R -a -i {s} 2>/dev/null"))
            .env("PATH", path_env())
            .status();
    }
}

static POINT_SEQ: AtomicU32 = AtomicU32::new(1);

/// A fresh point id.
pub fn new_point() -> PointId {
    let n = POINT_SEQ.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    PointId::new(
        t,
        [
            (n >> 8) as u8,
            n as u8,
            (std::process::id() & 0xff) as u8,
            1,
            2,
            3,
            4,
            5,
        ],
    )
}

/// Writes a real restore point at `path` (owned by `owner`): a full when `parent` is NONE.
pub fn write_point(
    path: &Path,
    owner: &TestUser,
    job: &str,
    point: PointId,
    chain: PointId,
    parent: PointId,
    fill: u8,
) {
    let block_size = 4096u32;
    let disk_size = 3 * 4096u64;
    let f = File::create(path).unwrap();
    let mut w = PointWriter::new(
        f,
        Header {
            block_size,
            disk_size,
            point_id: point,
        },
    )
    .unwrap();
    for b in 0..3u64 {
        let data = vec![fill.wrapping_add(b as u8); 4096];
        w.put_stored(StoredBlock::raw(BlockNo(b), &data)).unwrap();
    }
    let meta = PointMeta {
        kind: if parent.is_none() {
            PointKind::ActiveFull
        } else {
            PointKind::Incremental
        },
        retention: RetentionClass::Regular,
        compression_level: 0,
        created_unix_secs: 1_800_000_000,
        created_nanos: 0,
        block_size,
        disk_size,
        point,
        parent,
        chain,
        job: job.into(),
        client: String::new(),
        stats: Stats::default(),
        files: vec![],
    };
    w.finish(meta).unwrap();
    std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Writes a finished restore point into `incoming/` the way the repository does (temp name,
/// then rename), owned by the service user.
pub fn put_incoming(
    rig: &Rig,
    job: &str,
    point: PointId,
    chain: PointId,
    parent: PointId,
) -> PathBuf {
    let tmp = rig.repo.join("incoming").join(format!(".tmp-{point}"));
    write_point(&tmp, &rig.user, job, point, chain, parent, point.0[15]);
    let dst = incoming_path(&rig.repo, point);
    std::fs::rename(&tmp, &dst).unwrap();
    dst
}

/// Writes and seals a full (or an incremental of `chain` when `parent` is set) as the user.
pub fn seal_new(
    rig: &Rig,
    job: &str,
    chain: Option<PointId>,
    parent: PointId,
) -> (PointId, CtlResult) {
    let point = new_point();
    let chain = chain.unwrap_or(point);
    let p = put_incoming(rig, job, point, chain, parent);
    let r = rig.user.ctl(&rig.socket(), &["seal", p.to_str().unwrap()]);
    (point, r)
}

/// BLAKE3 of a file's bytes, plus its inode, mode, owner and mtime.
pub fn fingerprint(p: &Path) -> (String, u64, u32, u32, i64, i64) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let data = std::fs::read(p).unwrap();
    (
        blake3::hash(&data).to_hex().to_string(),
        m.ino(),
        m.mode(),
        m.uid(),
        m.mtime(),
        m.mtime_nsec(),
    )
}

/// True when the file carries the immutable attribute.
pub fn is_immutable(p: &Path) -> bool {
    let f = File::open(p).unwrap();
    bulwark_sys::has_flag(&f, bulwark_sys::FS_IMMUTABLE_FL).unwrap()
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Waits up to `secs` for `cond`.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cond()
}

/// Spawns a long-lived shell as the user with stdin piped (to tell it when to continue).
pub fn user_shell(u: &TestUser, script: &str) -> std::process::Child {
    u.cmd("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A program built next to bulwark-immutd (the workspace's other binaries).
pub fn sibling(name: &str) -> Option<PathBuf> {
    let p = Path::new(IMMUTD).parent()?.join(name);
    p.is_file().then_some(p)
}

/// `bulwark` and `bulwark-repo`, built next to bulwark-immutd; `None` after a printed SKIP.
pub fn client_bins(test: &str) -> Option<(PathBuf, PathBuf)> {
    match (sibling("bulwark"), sibling("bulwark-repo")) {
        (Some(b), Some(r)) => Some((b, r)),
        _ => {
            eprintln!("SKIP {test}: bulwark and bulwark-repo are not built next to bulwark-immutd (run cargo test --workspace)");
            None
        }
    }
}

/// `bulwark-tier` (the S3 tier's command), built next to bulwark-immutd; `None` after a
/// printed SKIP.
#[allow(dead_code)]
pub fn tier_bin(test: &str) -> Option<PathBuf> {
    let t = sibling("bulwark-tier");
    if t.is_none() {
        eprintln!("SKIP {test}: bulwark-tier is not built next to bulwark-immutd (run cargo test --workspace)");
    }
    t
}

impl Rig {
    /// `bulwark-repo init` of the rig's folder as its user, guarded by the rig's service;
    /// `extra` options come before `--immutd-socket`.
    pub fn init_guarded(&self, repo_bin: &Path, extra: &[&str]) {
        // init wants an empty folder.
        std::fs::remove_dir(self.repo.join("incoming")).unwrap();
        let sock = self.socket();
        let repo = self.repo.to_str().unwrap();
        let mut args = vec!["init", repo];
        args.extend_from_slice(extra);
        args.extend(["--immutd-socket", sock.to_str().unwrap()]);
        let o = run_as(&self.user, repo_bin, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// Runs `prog args` as `u`, echoing what it printed (shown when a test fails).
pub fn run_as(u: &TestUser, prog: &Path, args: &[&str]) -> Output {
    let o = u.cmd(prog.to_str().unwrap()).args(args).output().unwrap();
    eprintln!(
        "{} {args:?}\n{}{}",
        prog.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}
