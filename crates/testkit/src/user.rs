//! A real unprivileged user for one test (root only), and running programs as it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::cmd::{sh, show, PATH_ENV};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, starting with `prefix`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A system user with its own group and no home, deleted on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// Creates a new user (retrying while another test holds the passwd lock).
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
                .env("PATH", PATH_ENV)
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
            last = String::from_utf8_lossy(&o.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("useradd {name} failed: {last}");
    }

    /// A command that runs as this user with a clean environment (std clears supplementary
    /// groups when root sets a uid).
    pub fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(prog);
        c.uid(self.uid)
            .gid(self.gid)
            .env_clear()
            .env("PATH", PATH_ENV)
            .current_dir("/");
        c
    }

    /// Runs `sh -c script` as this user.
    pub fn sh(&self, script: &str) -> Output {
        self.cmd("sh").arg("-c").arg(script).output().unwrap()
    }

    /// Runs `prog args` as this user, echoing what it printed (shown when a test fails).
    pub fn run(&self, prog: &Path, args: &[&str]) -> Output {
        let o = self.cmd(prog).args(args).output().unwrap();
        show(
            &format!("[{}] {} {}", self.name, prog.display(), args.join(" ")),
            &o,
        );
        o
    }

    /// Spawns a long-lived shell as this user with every stream piped.
    pub fn spawn_sh(&self, script: &str) -> Child {
        self.cmd("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Gives `path` to this user.
    pub fn chown(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).unwrap();
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("userdel")
                .arg(&self.name)
                .env("PATH", PATH_ENV)
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove test user {}", self.name);
    }
}

/// Runs `prog args` as `u`, echoing what it printed.
pub fn run_as(u: &TestUser, prog: &Path, args: &[&str]) -> Output {
    u.run(prog, args)
}
