//! What the monitor's test files share: a staged repository and the `check` command on it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bulwark-monitor")
}

/// An unguarded repository and a notification configuration; with `left`, a finished file
/// that has waited two minutes in `incoming/` (a `not_sealed` condition).
pub struct Staged {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
}

impl Staged {
    pub fn new(left: bool, notify_toml: &str) -> Staged {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        bulwark_repository::Repository::init(&repo, 7).unwrap();
        if left {
            let f = File::create(repo.join("incoming").join("left.bwrp")).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(120))
                .unwrap();
        }
        std::fs::write(dir.path().join("notify.toml"), notify_toml).unwrap();
        Staged { dir, repo }
    }

    /// `bulwark-monitor [--json] check REPO …` with this stage's configuration and state
    /// folder (no immutability service).
    pub fn check(&self, json: bool) -> Command {
        let p = |x: &str| -> PathBuf { self.dir.path().join(x) };
        let mut cmd = Command::new(bin());
        if json {
            cmd.arg("--json");
        }
        cmd.arg("check")
            .arg(&self.repo)
            .arg("--notify-config")
            .arg(p("notify.toml"))
            .arg("--state-dir")
            .arg(p("state"))
            .arg("--immutd-config")
            .arg(Path::new("/nonexistent/immutd.toml"));
        cmd
    }
}
