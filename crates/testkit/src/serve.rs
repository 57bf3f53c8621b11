//! The transport service as tests start it: the real `bulwark-repo serve` binary as a fresh
//! unprivileged user, real `bulwark` clients enrolled over TLS on 127.0.0.1 (root only, for
//! the service user: start a test with [`need_root!`](crate::need_root)).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::bins::expect_binary;
use crate::cmd::show;
use crate::fs::{Mount, Scratch};
use crate::system::listening_addr;
use crate::user::TestUser;

/// Returns from the test (after a printed SKIP) unless it runs as root, which a [`Service`]
/// needs for its unprivileged service user.
#[macro_export]
macro_rules! need_root {
    ($name:expr) => {
        if !$crate::require_root($name, "creating the unprivileged service user") {
            return;
        }
    };
}

/// `bulwark-repo`, built next to the test by `cargo test`.
pub fn bin_repo() -> PathBuf {
    expect_binary("bulwark-repo")
}

/// `bulwark`, built next to the test by `cargo test --workspace`.
pub fn bin_client() -> PathBuf {
    expect_binary("bulwark")
}

/// Spawns `serve` (a `bulwark-repo serve … --listen HOST:PORT` command, its stdout not yet
/// set) and waits for its first line, `listening on ADDR`; returns the child and ADDR. When it
/// says anything else the test fails showing the service's `log`.
pub fn spawn_listening(serve: &mut Command, log: &Path) -> (Child, String) {
    let mut child = serve.stdout(Stdio::piped()).spawn().unwrap();
    let addr = listening_addr(&mut child, Some(log));
    (child, addr)
}

/// A repository owned by a fresh service user, and its running service.
pub struct Service {
    pub server: Option<Child>,
    /// HOST:PORT the service listens on.
    pub addr: String,
    /// The repository CA's fingerprint, as `init` printed it.
    pub fp: String,
    pub repo: PathBuf,
    /// The service's standard error (`BULWARK_LOG=info`).
    pub log: PathBuf,
    // Before `dir`: unmounted before the folder is removed.
    pub _tmpfs: Option<Mount>,
    /// The test's folder: the repository under `srv/`, client folders, images.
    pub dir: Scratch,
    pub user: TestUser,
}

impl Service {
    /// A new repository (immutability period 7 days) served with `extra` arguments to `serve`.
    pub fn start(extra: &[&str]) -> Service {
        Service::start_with(extra, None, &[])
    }

    /// [`Service::start`] with the repository on a tmpfs of `tmpfs_mib` MiB, and
    /// `[client_limits]` settings replaced in `repository.toml` before the service starts.
    pub fn start_with(extra: &[&str], tmpfs_mib: Option<u32>, limits: &[(&str, &str)]) -> Service {
        let user = TestUser::create();
        let dir = Scratch::new("bwserve");
        let base = dir.path().join("srv");
        std::fs::create_dir(&base).unwrap();
        let tmpfs = tmpfs_mib.map(|m| {
            Mount::new(
                &format!("-t tmpfs -o size={m}m,mode=0755"),
                Path::new("tmpfs"),
                &base,
            )
        });
        user.chown(&base);
        let repo = base.join("repo");
        let mut svc = Service {
            server: None,
            addr: String::new(),
            fp: String::new(),
            log: dir.path().join("serve.log"),
            repo,
            _tmpfs: tmpfs,
            dir,
            user,
        };
        let v = svc.admin_json(&["init", svc.repo.to_str().unwrap(), "--immutable-days", "7"]);
        svc.fp = v["fingerprint"].as_str().unwrap().to_string();
        if !limits.is_empty() {
            svc.set_limits(limits);
        }
        let log = std::fs::File::create(&svc.log).unwrap();
        let (child, addr) = spawn_listening(
            Command::new(bin_repo())
                .args([
                    "serve",
                    svc.repo.to_str().unwrap(),
                    "--listen",
                    "127.0.0.1:0",
                ])
                .args(extra)
                .env("BULWARK_LOG", "info")
                .uid(svc.user.uid)
                .gid(svc.user.gid)
                .stderr(log),
            &svc.log,
        );
        svc.server = Some(child);
        svc.addr = addr;
        svc
    }

    /// Replaces the `[client_limits]` settings `limits` (name, TOML value) in `repository.toml`.
    fn set_limits(&self, limits: &[(&str, &str)]) {
        let path = self.repo.join("repository.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            match limits
                .iter()
                .find(|(k, _)| line.starts_with(&format!("{k} =")))
            {
                Some((k, v)) => out.push_str(&format!("{k} = {v}\n")),
                None => out.push_str(&format!("{line}\n")),
            }
        }
        assert!(out.contains("[client_limits]"), "{out}");
        std::fs::write(&path, out).unwrap();
    }

    /// Runs `bulwark-repo` as the service user.
    pub fn admin(&self, args: &[&str]) -> Output {
        let o = Command::new(bin_repo())
            .args(args)
            .uid(self.user.uid)
            .gid(self.user.gid)
            .output()
            .unwrap();
        show(&format!("bulwark-repo {}", args.join(" ")), &o);
        o
    }

    /// `bulwark-repo --json ARGS` as the service user, which must succeed; its JSON answer.
    fn admin_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.admin(&a);
        assert!(o.status.success());
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// A new enrollment token for `client`, valid for `expires` (e.g. `10m`).
    pub fn token(&self, client: &str, expires: &str) -> String {
        let repo = self.repo.to_str().unwrap();
        let v = self.admin_json(&["enroll", repo, "--client", client, "--expires", expires]);
        v["token"].as_str().unwrap().to_string()
    }

    /// `client`'s configuration folder (`--config-dir`).
    pub fn config(&self, client: &str) -> PathBuf {
        self.dir.path().join(format!("client-{client}"))
    }

    /// The `bulwark` command of `client`, for [`Client::run`] and its shorthands.
    pub fn bulwark<'a>(&'a self, client: &'a str) -> Client<'a> {
        Client {
            svc: self,
            name: client,
            env: Vec::new(),
        }
    }

    /// Runs `bulwark` with `client`'s configuration folder.
    pub fn client(&self, client: &str, args: &[&str]) -> Output {
        self.bulwark(client).run(args)
    }

    /// `bulwark enroll` of `client` with `token` against this service.
    pub fn enroll_with(&self, client: &str, token: &str) -> Output {
        self.client(
            client,
            &["enroll", &self.addr, token, "--fingerprint", &self.fp],
        )
    }

    /// Enrolls `client`, which must succeed.
    pub fn enroll(&self, client: &str) {
        let t = self.token(client, "10m");
        assert!(self.enroll_with(client, &t).status.success());
    }

    /// What the service logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the service's log says `what` within 5 s: the service may write its log line
    /// just after it answered, so a client that exits at once can be faster than the log.
    pub fn logs(&self, what: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.log_text().contains(what) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `name` in the test's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- service log ---\n{}", self.log_text());
        }
    }
}

/// One enrolled client's `bulwark` against a [`Service`], with extra environment.
pub struct Client<'a> {
    svc: &'a Service,
    name: &'a str,
    env: Vec<(&'a str, &'a str)>,
}

impl<'a> Client<'a> {
    /// The same client with the key passphrase `pass` in `BULWARK_PASSPHRASE`.
    pub fn passphrase(mut self, pass: &'a str) -> Client<'a> {
        self.env.push(("BULWARK_PASSPHRASE", pass));
        self
    }

    /// The `bulwark ARGS` command of this client, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_client());
        c.arg("--config-dir")
            .arg(self.svc.config(self.name))
            .args(args)
            .envs(self.env.iter().copied());
        c
    }

    /// Runs `bulwark ARGS`, echoing what it printed.
    pub fn run(&self, args: &[&str]) -> Output {
        let o = self.command(args).output().unwrap();
        show(&format!("[{}] bulwark {}", self.name, args.join(" ")), &o);
        o
    }

    /// `COMMAND --repo ADDR --job JOB EXTRA… PATH`: the form of `backup` and `restore`.
    fn job_args<'b>(
        &'b self,
        command: &'b str,
        job: &'b str,
        path: &'b Path,
        extra: &[&'b str],
    ) -> Vec<&'b str> {
        let mut a = vec![command, "--repo", &self.svc.addr, "--job", job];
        a.extend_from_slice(extra);
        a.push(path.to_str().unwrap());
        a
    }

    /// `bulwark backup --repo ADDR --job JOB EXTRA… IMAGE`.
    pub fn backup(&self, job: &str, image: &Path, extra: &[&str]) -> Output {
        self.run(&self.job_args("backup", job, image, extra))
    }

    /// `bulwark --json backup …` as [`Client::backup`], which must succeed; its report.
    pub fn backup_json(&self, job: &str, image: &Path, extra: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend(self.job_args("backup", job, image, extra));
        json_of(&self.run(&a))
    }

    /// `bulwark restore --repo ADDR --job JOB EXTRA… OUT`.
    pub fn restore(&self, job: &str, out: &Path, extra: &[&str]) -> Output {
        self.run(&self.job_args("restore", job, out, extra))
    }

    /// `bulwark --json list --repo ADDR`, which must succeed; the listing.
    pub fn list_json(&self) -> serde_json::Value {
        json_of(&self.run(&["--json", "list", "--repo", &self.svc.addr]))
    }
}

/// The JSON a successful command printed (failing the test, with its standard error, when
/// it did not succeed).
pub fn json_of(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}
