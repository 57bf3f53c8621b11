//! A guarded repository for root-only tests: a real service user, a loop-mounted
//! filesystem, the repository folder, a `bulwark-immutd` setup for it, and the workspace's
//! binaries that talk to it. Every resource is released by a Drop guard.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use bulwark_format::PointId;

use crate::bins::{expect_binary, require_binary};
use crate::cmd::sh_quiet;
use crate::fs::{LoopFs, Scratch};
use crate::immutd::{Immutd, ImmutdSetup};

/// `bulwark-immutd`.
pub fn immutd_bin() -> PathBuf {
    expect_binary("bulwark-immutd")
}

/// `bulwark-immutctl` (its own package, built by `cargo test --workspace`).
pub fn immutctl_bin() -> PathBuf {
    expect_binary("bulwark-immutctl")
}

/// `bulwark` and `bulwark-repo`; `None` after a printed SKIP.
pub fn client_bins(test: &str) -> Option<(PathBuf, PathBuf)> {
    Some((
        require_binary(test, "bulwark")?,
        require_binary(test, "bulwark-repo")?,
    ))
}

/// `bulwark-tier` (the S3 tier's command); `None` after a printed SKIP.
pub fn tier_bin(test: &str) -> Option<PathBuf> {
    require_binary(test, "bulwark-tier")
}

/// The root-only preamble of a guarded test: root and the tools, else a printed SKIP.
pub fn can_run(test: &str, tools: &[&str]) -> bool {
    crate::skip::can_run(test, "users, loop filesystems and the root service", tools)
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

impl TestUser {
    /// Runs `bulwark-immutctl --socket S args…` as this user.
    pub fn ctl(&self, socket: &Path, args: &[&str]) -> CtlResult {
        let o = self
            .cmd(immutctl_bin())
            .arg("--socket")
            .arg(socket)
            .args(args)
            .output()
            .unwrap();
        CtlResult::from(o)
    }
}

/// A guarded repository: a user, a filesystem, the repository folder and the service setup.
pub struct Rig {
    pub user: TestUser,
    pub fs: LoopFs,
    pub repo: PathBuf,
    pub setup: ImmutdSetup,
    _state: Scratch,
}

impl Rig {
    /// A repository folder (with `incoming/`) owned by a new user on a new filesystem.
    pub fn new(kind: FsKind) -> Rig {
        let user = TestUser::create();
        let fs = LoopFs::new(kind);
        let repo = fs.mnt.join("repo");
        std::fs::create_dir(&repo).unwrap();
        user.chown(&repo);
        std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o700)).unwrap();
        let incoming = repo.join("incoming");
        std::fs::create_dir(&incoming).unwrap();
        user.chown(&incoming);
        let state = Scratch::new("bwimmutd");
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
            .spawn(&immutd_bin())
            .expect("starting bulwark-immutd")
    }

    pub fn socket(&self) -> PathBuf {
        self.setup.socket()
    }

    /// Where the repository puts `point` for the service to seal (`incoming/<point>.bwrp`).
    pub fn incoming_path(&self, point: PointId) -> PathBuf {
        bulwark_immut_msg::layout::incoming_path(&self.repo, point)
    }

    /// Runs `bulwark-immutd --config C args…` as root.
    pub fn immutd_cli(&self, args: &[&str]) -> Output {
        Command::new(immutd_bin())
            .arg("--config")
            .arg(self.setup.config_path())
            .args(args)
            .output()
            .unwrap()
    }

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
        let o = self.user.run(repo_bin, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Attributes block removal of the state folder and the mount.
        sh_quiet(&format!(
            "chattr -R -a -i '{}' 2>/dev/null",
            self.setup.dir.display()
        ));
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

/// True when the file carries the immutable attribute.
pub fn is_immutable(p: &Path) -> bool {
    let f = File::open(p).unwrap();
    bulwark_sys::has_flag(&f, bulwark_sys::FS_IMMUTABLE_FL).unwrap()
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

pub use crate::cmd::sh;
pub use crate::fs::FsKind;
pub use crate::user::{run_as, TestUser};

/// The usual start of a system test: root and `tools`, the built `bulwark` and
/// `bulwark-repo`, and a [`Rig`] on a new `kind` filesystem.
pub struct System {
    pub rig: Rig,
    pub bulwark: PathBuf,
    pub repo_bin: PathBuf,
    /// The repository folder as text, for command lines.
    pub repo: String,
}

impl System {
    /// `None` after a printed SKIP (not root, a tool or a binary missing).
    pub fn new(test: &str, tools: &[&str], kind: FsKind) -> Option<System> {
        if !can_run(test, tools) {
            return None;
        }
        let (bulwark, repo_bin) = client_bins(test)?;
        let rig = Rig::new(kind);
        let repo = rig.repo.to_str().unwrap().to_string();
        Some(System {
            rig,
            bulwark,
            repo_bin,
            repo,
        })
    }

    /// [`System::new`], then `bulwark-repo init` guarded by the rig's service.
    pub fn guarded(test: &str, tools: &[&str], kind: FsKind) -> Option<System> {
        let s = System::new(test, tools, kind)?;
        s.rig.init_guarded(&s.repo_bin, &[]);
        Some(s)
    }

    pub fn user(&self) -> &TestUser {
        &self.rig.user
    }

    /// A disk image `name` on the rig's filesystem holding `content`, owned by the user.
    pub fn image(&self, name: &str, content: &[u8]) -> PathBuf {
        let img = self.rig.fs.mnt.join(name);
        std::fs::write(&img, content).unwrap();
        self.user().chown(&img);
        img
    }

    /// `bulwark backup --repo R --job JOB IMAGE` (with `--json` first when asked) as the user.
    pub fn backup(&self, json: bool, job: &str, image: &Path) -> Output {
        let mut args = vec![];
        if json {
            args.push("--json");
        }
        args.extend(["backup", "--repo", &self.repo, "--job", job]);
        args.push(image.to_str().unwrap());
        self.user().run(&self.bulwark, &args)
    }

    /// `bulwark-repo args…` as the user.
    pub fn repo_cmd(&self, args: &[&str]) -> Output {
        self.user().run(&self.repo_bin, args)
    }
}
