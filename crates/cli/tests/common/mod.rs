//! What the `bulwark` binary's integration tests share: running it (with or without a
//! passphrase), the JSON report a long-running command prints once it is ready, and a running
//! `bulwark export`. Each test binary uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

/// The `bulwark` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bulwark")
}

/// A path as the `&str` argument a command takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A new repository `repo` in `dir` (7 immutable days).
pub fn init_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    bulwark_repository::Repository::init(&repo, 7).unwrap();
    repo
}

/// Where the export tests start, once `tools` are found (else the test skips): a scratch
/// folder, a new repository in it, and the path of its disk image `disk.img`.
pub fn rig(t: &str, tools: &[&str]) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    if !bulwark_testkit::require_tools(t, tools) {
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    let repo = init_repo(d.path());
    let img = d.path().join("disk.img");
    Some((d, repo, img))
}

/// Runs `bulwark args`, which must succeed.
pub fn bulwark_ok(args: &[&str]) -> Output {
    let o = Command::new(bin()).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "bulwark {args:?} failed: {}",
        bulwark_testkit::text(&o)
    );
    o
}

/// Runs `bulwark args` with `BULWARK_PASSPHRASE` set to `pass` (unset, as is
/// `BULWARK_NEW_PASSPHRASE`, when `None`), writing `stdin` to its standard input.
pub fn bulwark_pass(args: &[&str], pass: Option<&str>, stdin: Option<&str>) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("BULWARK_PASSPHRASE")
        .env_remove("BULWARK_NEW_PASSPHRASE");
    if let Some(p) = pass {
        c.env("BULWARK_PASSPHRASE", p);
    }
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(t) = stdin {
        input.write_all(t.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// The standard output of a command that must have succeeded.
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", bulwark_testkit::text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The standard error of a command that must have failed.
pub fn err(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `bulwark key create --write-only` of the secret key `private` and its public key `public`,
/// under `pass`.
pub fn create_write_only_key(private: &Path, public: &Path, pass: &str) {
    ok(&bulwark_pass(
        &[
            "key",
            "create",
            "--write-only",
            "--out",
            s(private),
            "--public",
            s(public),
        ],
        Some(pass),
        None,
    ));
}

/// The JSON report a command prints once it is ready (pretty-printed: read until it parses);
/// `Err(what it printed)` when its output ends first. Its further output is drained, so the
/// pipe stays open while it runs.
pub fn ready_report(child: &mut Child) -> Result<serde_json::Value, String> {
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).unwrap_or(0);
        text.push_str(&line);
        if let Ok(v) = serde_json::from_str(&text) {
            std::thread::spawn(move || {
                let mut sink = String::new();
                while r.read_line(&mut sink).unwrap_or(0) > 0 {}
            });
            return Ok(v);
        }
        if n == 0 {
            return Err(text);
        }
    }
}

/// A running `bulwark export`, stopped with SIGTERM on drop.
pub struct Export {
    pub child: Child,
    sock: PathBuf,
}

impl Export {
    /// Starts `bulwark --json export ARGS --nbd unix:SOCK` (with `BULWARK_PASSPHRASE` = `pass`)
    /// and waits for its JSON report; `Err(stderr)` when it exits instead.
    // The child is waited for on every path: by `wait_with_output` when it exits, and by
    // `Export`'s drop once it serves (the lint does not follow the move into `Export`).
    #[allow(clippy::zombie_processes)]
    pub fn try_start(args: &[&str], sock: &Path, pass: Option<&str>) -> Result<Export, String> {
        let mut c = Command::new(bin());
        c.arg("--json")
            .arg("export")
            .args(args)
            .arg("--nbd")
            .arg(format!("unix:{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("BULWARK_PASSPHRASE");
        if let Some(p) = pass {
            c.env("BULWARK_PASSPHRASE", p);
        }
        let mut child = c.spawn().unwrap();
        match ready_report(&mut child) {
            Ok(v) => {
                assert!(v["uri"].as_str().unwrap().contains(s(sock)), "{v}");
                // Its log goes on to the test's output.
                let mut err = child.stderr.take().unwrap();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = err.read(&mut buf) {
                        eprint!("{}", String::from_utf8_lossy(&buf[..n]));
                    }
                });
                Ok(Export {
                    child,
                    sock: sock.to_path_buf(),
                })
            }
            Err(text) => {
                let o = child.wait_with_output().unwrap();
                assert!(!o.status.success(), "exited 0 without serving: {text}");
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        }
    }

    /// Starts an export of `point` of `job` (no key) with `extra` options, which must serve.
    pub fn start(repo: &Path, job: &str, point: &str, sock: &Path, extra: &[&str]) -> Export {
        let mut args = vec!["--repo", s(repo), "--job", job, "--point", point];
        args.extend_from_slice(extra);
        Export::try_start(&args, sock, None).unwrap_or_else(|e| panic!("export failed: {e}"))
    }

    /// The export's NBD URI.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.sock.display())
    }

    /// Sends `signal` (`-TERM`, `-INT`) to the export.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .output();
    }

    /// Stops the export with SIGTERM; how it exited.
    pub fn stop(mut self) -> ExitStatus {
        self.signal("-TERM");
        self.child.wait().unwrap()
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        self.signal("-TERM");
        let _ = self.child.wait();
    }
}

/// Runs `bulwark args`, showing what it printed; how it exited is for the test to check.
pub fn bulwark(args: &[&str]) -> Output {
    let o = Command::new(bin()).args(args).output().unwrap();
    bulwark_testkit::show(&format!("bulwark {}", args.join(" ")), &o);
    o
}

/// `bulwark backup --repo REPO --job JOB IMG`, which must succeed.
pub fn backs_up(repo: &Path, job: &str, img: &Path) {
    let o = bulwark(&["backup", "--repo", s(repo), "--job", job, s(img)]);
    assert!(o.status.success(), "backup of {job} to {}", repo.display());
}

/// `bulwark copy --from FROM --to TO extra…`, shown (see [`bulwark`]).
pub fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>, extra: &[&str]) -> Output {
    copy_with(&[], from.as_ref(), to.as_ref(), extra)
}

/// [`copy`] with `--json`.
pub fn copy_json(from: impl AsRef<Path>, to: impl AsRef<Path>, extra: &[&str]) -> Output {
    copy_with(&["--json"], from.as_ref(), to.as_ref(), extra)
}

fn copy_with(global: &[&str], from: &Path, to: &Path, extra: &[&str]) -> Output {
    let mut args = global.to_vec();
    args.extend(["copy", "--from", s(from), "--to", s(to)]);
    args.extend_from_slice(extra);
    bulwark(&args)
}

/// Writes the job file `DIR/NAME.toml` of job `name` on `repository` (a folder or a service's
/// address), with the TOML lines `rest` after those two; its path.
pub fn job_toml(dir: &Path, name: &str, repository: impl AsRef<Path>, rest: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nrepository = \"{}\"\n{rest}",
            repository.as_ref().display()
        ),
    )
    .unwrap();
    path
}

/// The TOML of a `[copy]` table copying to `to`.
pub fn copy_to(to: impl AsRef<Path>) -> String {
    format!("[copy]\nto = \"{}\"\n", to.as_ref().display())
}
