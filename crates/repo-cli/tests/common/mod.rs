//! The transport service as the network tests start it: the real `bulwark-repo serve` binary
//! as a fresh unprivileged user, real `bulwark` clients enrolled over TLS on 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use bulwark_remote::RemoteAddr;
use bulwark_testkit::{expect_binary, show, Mount, TestUser};

pub fn bin_repo() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bulwark-repo"))
}

pub fn bin_client() -> PathBuf {
    expect_binary("bulwark")
}

#[macro_export]
macro_rules! need_root {
    ($name:literal) => {
        if !bulwark_testkit::require_root($name, "creating the unprivileged service user") {
            return;
        }
    };
}

/// A repository owned by a fresh service user, and its running service.
pub struct Service {
    pub server: Option<Child>,
    pub addr: String,
    pub fp: String,
    pub repo: PathBuf,
    pub log: PathBuf,
    // Before `dir`: unmounted before the folder is removed.
    pub _tmpfs: Option<Mount>,
    pub dir: tempfile::TempDir,
    pub user: TestUser,
}

impl Service {
    pub fn start(extra: &[&str]) -> Service {
        Service::start_with(extra, None, &[])
    }

    /// [`Service::start`] with the repository on a tmpfs of `tmpfs_mib` MiB, and
    /// `[client_limits]` settings replaced in `repository.toml` before the service starts.
    pub fn start_with(extra: &[&str], tmpfs_mib: Option<u32>, limits: &[(&str, &str)]) -> Service {
        let user = TestUser::create();
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let base = dir.path().join("srv");
        std::fs::create_dir(&base).unwrap();
        let tmpfs = tmpfs_mib.map(|m| {
            Mount::new(
                &format!("-t tmpfs -o size={m}m,mode=0755"),
                Path::new("tmpfs"),
                &base,
            )
        });
        std::os::unix::fs::chown(&base, Some(user.uid), Some(user.gid)).unwrap();
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
        let o = svc.admin(&[
            "--json",
            "init",
            svc.repo.to_str().unwrap(),
            "--immutable-days",
            "7",
        ]);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        svc.fp = v["fingerprint"].as_str().unwrap().to_string();
        if !limits.is_empty() {
            let path = svc.repo.join("repository.toml");
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
        let log = std::fs::File::create(&svc.log).unwrap();
        let mut args = vec![
            "serve",
            svc.repo.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(bin_repo())
            .args(&args)
            .env("BULWARK_LOG", "info")
            .uid(svc.user.uid)
            .gid(svc.user.gid)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        svc.server = Some(child);
        svc.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("serve said {line:?}; log: {}", svc.log_text()))
            .to_string();
        svc
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

    pub fn token(&self, client: &str, expires: &str) -> String {
        let o = self.admin(&[
            "--json",
            "enroll",
            self.repo.to_str().unwrap(),
            "--client",
            client,
            "--expires",
            expires,
        ]);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    pub fn config(&self, client: &str) -> PathBuf {
        self.dir.path().join(format!("client-{client}"))
    }

    /// Runs `bulwark` with `client`'s configuration folder.
    pub fn client(&self, client: &str, args: &[&str]) -> Output {
        let o = Command::new(bin_client())
            .arg("--config-dir")
            .arg(self.config(client))
            .args(args)
            .output()
            .unwrap();
        show(&format!("[{client}] bulwark {}", args.join(" ")), &o);
        o
    }

    pub fn enroll_with(&self, client: &str, token: &str) -> Output {
        self.client(
            client,
            &["enroll", &self.addr, token, "--fingerprint", &self.fp],
        )
    }

    pub fn enroll(&self, client: &str) {
        let t = self.token(client, "10m");
        assert!(self.enroll_with(client, &t).status.success());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the service's log says `what` within 5 s: the service may write its log line
    /// just after it answered, so a client that exits at once can be faster than the log.
    pub fn logs(&self, what: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if self.log_text().contains(what) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn remote(&self) -> RemoteAddr {
        RemoteAddr::parse(&self.addr).unwrap()
    }

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
