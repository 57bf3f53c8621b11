//! Live sources over the network (issue 15, docs/sources.md, docs/protocol.md `GetParentCbt`,
//! `ParentCbt`, `Cbt`): a qcow2 backed up with `--cbt` to a real `bulwark-repo serve` as an
//! unprivileged user over TLS; the incremental fetches the parent's CBT record from the
//! server, reads only the dirty blocks, and restores over the network exactly as
//! `qemu-img convert` gives the image. Needs root (the service user) and qemu-utils.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use bulwark_testkit::{expect_binary, require_root, require_tools, show, Mount, TestUser};

fn bin_repo() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bulwark-repo"))
}

fn bin_client() -> PathBuf {
    expect_binary("bulwark")
}

/// A repository owned by a fresh service user, and its running service.
struct Service {
    server: Option<Child>,
    addr: String,
    fp: String,
    repo: PathBuf,
    log: PathBuf,
    // Before `dir`: unmounted before the folder is removed.
    _tmpfs: Option<Mount>,
    dir: tempfile::TempDir,
    user: TestUser,
}

impl Service {
    fn start(extra: &[&str]) -> Service {
        Service::start_with(extra, None, &[])
    }

    /// [`Service::start`] with the repository on a tmpfs of `tmpfs_mib` MiB, and
    /// `[client_limits]` settings replaced in `repository.toml` before the service starts.
    fn start_with(extra: &[&str], tmpfs_mib: Option<u32>, limits: &[(&str, &str)]) -> Service {
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
    fn admin(&self, args: &[&str]) -> Output {
        let o = Command::new(bin_repo())
            .args(args)
            .uid(self.user.uid)
            .gid(self.user.gid)
            .output()
            .unwrap();
        show(&format!("bulwark-repo {}", args.join(" ")), &o);
        o
    }

    fn token(&self, client: &str, expires: &str) -> String {
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

    fn config(&self, client: &str) -> PathBuf {
        self.dir.path().join(format!("client-{client}"))
    }

    /// Runs `bulwark` with `client`'s configuration folder.
    fn client(&self, client: &str, args: &[&str]) -> Output {
        let o = Command::new(bin_client())
            .arg("--config-dir")
            .arg(self.config(client))
            .args(args)
            .output()
            .unwrap();
        show(&format!("[{client}] bulwark {}", args.join(" ")), &o);
        o
    }

    fn enroll_with(&self, client: &str, token: &str) -> Output {
        self.client(
            client,
            &["enroll", &self.addr, token, "--fingerprint", &self.fp],
        )
    }

    fn enroll(&self, client: &str) {
        let t = self.token(client, "10m");
        assert!(self.enroll_with(client, &t).status.success());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
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

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn raw_of(img: &Path) -> Vec<u8> {
    let out = img.with_extension("raw");
    run(Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(img)
        .arg(&out));
    std::fs::read(&out).unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_cbt_incremental_over_the_network_reads_only_the_dirty_blocks() {
    let t = "a_cbt_incremental_over_the_network_reads_only_the_dirty_blocks";
    if !require_root(t, "creating the unprivileged service user")
        || !require_tools(t, &["qemu-img", "qemu-io", "qemu-storage-daemon"])
    {
        return;
    }
    let svc = Service::start(&[]);
    svc.enroll("c1");
    let img = svc.path("vm.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("64M"));
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 3 0 12M"])
        .arg(&img));
    let backup = || {
        json(&svc.client(
            "c1",
            &[
                "backup",
                "--json",
                "--repo",
                &svc.addr,
                "--job",
                "vm",
                "--cbt",
                img.to_str().unwrap(),
            ],
        ))
    };
    let full = backup();
    assert_eq!(full["kind"], "full");
    run(Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 9 2M 64k",
            "-c",
            "write -P 8 40M 64k",
        ])
        .arg(&img));
    let r = backup();
    assert_eq!(r["kind"], "incremental");
    assert_eq!(r["cbt"]["used"], true, "{r}");
    assert_eq!(r["bytes_read"], 2 << 20, "{r}");
    let out = svc.path("restored.img");
    let o = svc.client(
        "c1",
        &[
            "restore",
            "--repo",
            &svc.addr,
            "--job",
            "vm",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    assert!(
        std::fs::read(&out).unwrap() == raw_of(&img),
        "the restore differs from the image"
    );
}
