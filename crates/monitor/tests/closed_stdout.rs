//! `bulwark-monitor check` whose standard output is gone (`bulwark-monitor check … | head -1`
//! after `head` exits) or fails (`/dev/full`) does not panic: a closed pipe drops the rest of
//! the output and keeps the check's exit code (0 nothing to report, 1 a condition); any other
//! write error is one line on stderr and exit 2 (an operational error). The state is still
//! written either way.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bulwark-monitor")
}

/// An unguarded repository with no notification channel; with `left`, a finished file that
/// has waited two minutes in `incoming/` (a `not_sealed` condition).
struct Staged {
    dir: tempfile::TempDir,
    repo: PathBuf,
}

fn stage(left: bool) -> Staged {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    bulwark_repository::Repository::init(&repo, 7).unwrap();
    if left {
        let f = File::create(repo.join("incoming").join("left.bwrp")).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(120))
            .unwrap();
    }
    std::fs::write(dir.path().join("notify.toml"), "# no channel\n").unwrap();
    Staged { dir, repo }
}

impl Staged {
    fn check(&self, json: bool, stdout: Stdio) -> Output {
        let p = |x: &str| -> PathBuf { self.dir.path().join(x) };
        let mut cmd = Command::new(bin());
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .arg("check")
            .arg(&self.repo)
            .arg("--notify-config")
            .arg(p("notify.toml"))
            .arg("--state-dir")
            .arg(p("state"))
            .arg("--immutd-config")
            .arg(Path::new("/nonexistent/immutd.toml"))
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A pipe's read end is closed before the program writes.
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_into_a_closed_pipe_keeps_its_exit_code_without_panicking() {
    for (left, code) in [(false, 0), (true, 1)] {
        for json in [false, true] {
            let s = stage(left);
            let o = s.check(json, Stdio::piped());
            let err = stderr(&o);
            assert!(!err.contains("panicked"), "left={left} json={json}: {err}");
            assert_eq!(
                o.status.code(),
                Some(code),
                "left={left} json={json}: {err}"
            );
            assert!(
                !err.contains("standard output"),
                "a closed pipe is not reported: {err}"
            );
            assert!(
                s.dir.path().join("state").join("sent.json").exists(),
                "the state is written after the output"
            );
        }
    }
}

#[test]
fn check_onto_a_full_device_says_so_on_stderr_and_exits_2() {
    for left in [false, true] {
        let s = stage(left);
        let o = s.check(false, Stdio::from(File::create("/dev/full").unwrap()));
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "left={left}: {err}");
        assert_eq!(o.status.code(), Some(2), "left={left}: {err}");
        let said: Vec<_> = err
            .lines()
            .filter(|l| l.contains("cannot write to standard output"))
            .collect();
        assert_eq!(said.len(), 1, "named once: {err}");
    }
}
