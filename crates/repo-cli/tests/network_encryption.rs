//! Encryption over the network (issue 17, docs/encryption.md): real `bulwark-repo serve` as
//! an unprivileged user, real `bulwark` clients over TLS. A write-only client (public key
//! only) backs up a full and an incremental but cannot restore; the private restore key
//! restores; the repository never holds plaintext and verifies every stored byte without a
//! key; a symmetric client round-trips, and an unencrypted backup of its job is refused.
//! Needs root (the service user); prints why it skips otherwise.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use bulwark_testkit::{expect_binary, require_root, show, Mount, Rng, TestUser};

const MARKER: &[u8] = b"NETWORK-PLAINTEXT-MARKER-51c2";

fn bin_repo() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bulwark-repo"))
}

fn bin_client() -> PathBuf {
    expect_binary("bulwark")
}

macro_rules! need_root {
    ($name:literal) => {
        if !require_root($name, "creating the unprivileged service user") {
            return;
        }
    };
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

fn image(path: &Path, seed: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(8 << 20).unwrap();
    f.write_all_at(&Rng::new(seed).bytes(1 << 20), 0).unwrap();
    let text: Vec<u8> = MARKER.iter().copied().cycle().take(1 << 20).collect();
    f.write_all_at(&text, 3 << 20).unwrap();
}

fn change(path: &Path, seed: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&Rng::new(seed).bytes(10_000), 6 << 20)
        .unwrap();
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn assert_no_marker(repo: &Path) {
    let mut all = Vec::new();
    files(repo, &mut all);
    assert!(all
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "bwrp")));
    for p in all {
        let b = std::fs::read(&p).unwrap();
        assert!(
            !b.windows(16).any(|w| w == &MARKER[..16]),
            "{} holds plaintext",
            p.display()
        );
    }
}

impl Service {
    /// `bulwark` with `client`'s folder and the key passphrase in the environment.
    fn client_pw(&self, client: &str, args: &[&str]) -> Output {
        let o = Command::new(bin_client())
            .arg("--config-dir")
            .arg(self.config(client))
            .args(args)
            .env("BULWARK_PASSPHRASE", "correct horse battery")
            .output()
            .unwrap();
        show(&format!("[{client}] bulwark {}", args.join(" ")), &o);
        o
    }
}

#[test]
fn a_write_only_client_backs_up_over_tls_but_only_the_private_restore_key_restores() {
    need_root!("a_write_only_client_backs_up_over_tls_but_only_the_private_restore_key_restores");
    let svc = Service::start(&[]);
    svc.enroll("alice");
    let (private, public) = (svc.path("restore.key"), svc.path("client.pub"));
    let o = svc.client_pw(
        "alice",
        &[
            "key",
            "create",
            "--write-only",
            "--out",
            s(&private),
            "--public",
            s(&public),
        ],
    );
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("losing every copy"),
        "the first key create warns: {}",
        stderr(&o)
    );
    let img = svc.path("disk.img");
    image(&img, 1);
    let first = std::fs::read(&img).unwrap();
    let full = json(&svc.client(
        "alice",
        &[
            "--json",
            "backup",
            "--repo",
            &svc.addr,
            "--job",
            "vm",
            "--public-key",
            s(&public),
            s(&img),
        ],
    ));
    assert_eq!(full["kind"], "full");
    change(&img, 2);
    let inc = json(&svc.client(
        "alice",
        &[
            "--json",
            "backup",
            "--repo",
            &svc.addr,
            "--job",
            "vm",
            "--public-key",
            s(&public),
            s(&img),
        ],
    ));
    assert_eq!(inc["kind"], "incremental");
    assert_eq!(inc["chain"], full["chain"]);
    assert!(inc["blocks_unchanged"].as_u64().unwrap() > 0, "{inc}");
    assert_eq!(inc["blocks_new"].as_u64().unwrap(), 1, "{inc}");
    // Without the private key the client cannot read its own backups.
    let out = svc.path("out.img");
    let o = svc.client(
        "alice",
        &["restore", "--repo", &svc.addr, "--job", "vm", s(&out)],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is encrypted") && stderr(&o).contains("--restore-key"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let o = svc.client_pw(
        "alice",
        &[
            "restore",
            "--repo",
            &svc.addr,
            "--job",
            "vm",
            "--key",
            s(&public),
            s(&out),
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("public key"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // With it: both points, byte for byte.
    let o = svc.client_pw(
        "alice",
        &[
            "restore",
            "--repo",
            &svc.addr,
            "--job",
            "vm",
            "--restore-key",
            s(&private),
            s(&out),
        ],
    );
    assert!(o.status.success());
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
    std::fs::remove_file(&out).unwrap();
    let p = full["point"].as_str().unwrap();
    let o = svc.client_pw(
        "alice",
        &[
            "restore",
            "--repo",
            &svc.addr,
            "--job",
            "vm",
            "--point",
            p,
            "--restore-key",
            s(&private),
            s(&out),
        ],
    );
    assert!(o.status.success());
    assert!(std::fs::read(&out).unwrap() == first);
    // The repository holds no plaintext and verifies every stored byte without a key.
    assert_no_marker(&svc.repo);
    let o = svc.admin(&["verify", s(&svc.repo)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let file = PathBuf::from(full["path"].as_str().map(String::from).unwrap_or_default());
    let file = if file.as_os_str().is_empty() {
        let mut all = Vec::new();
        files(&svc.repo.join("store"), &mut all);
        all.into_iter()
            .find(|f| f.to_string_lossy().contains(p))
            .unwrap()
    } else {
        file
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 4096 + 100).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], 4096 + 100).unwrap();
    let o = svc.admin(&["verify", s(&svc.repo)]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "verify finds the flipped ciphertext byte: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn a_symmetric_client_round_trips_over_tls_and_an_unencrypted_backup_of_its_job_is_refused() {
    need_root!(
        "a_symmetric_client_round_trips_over_tls_and_an_unencrypted_backup_of_its_job_is_refused"
    );
    let svc = Service::start(&[]);
    svc.enroll("bob");
    let key = svc.path("bob.key");
    assert!(svc
        .client_pw("bob", &["key", "create", "--out", s(&key)])
        .status
        .success());
    let img = svc.path("disk.img");
    image(&img, 3);
    json(&svc.client_pw(
        "bob",
        &[
            "--json",
            "backup",
            "--repo",
            &svc.addr,
            "--job",
            "db",
            "--key",
            s(&key),
            s(&img),
        ],
    ));
    change(&img, 4);
    let inc = json(&svc.client_pw(
        "bob",
        &[
            "--json",
            "backup",
            "--repo",
            &svc.addr,
            "--job",
            "db",
            "--key",
            s(&key),
            s(&img),
        ],
    ));
    assert_eq!(inc["kind"], "incremental");
    let out = svc.path("out.img");
    assert!(svc
        .client_pw(
            "bob",
            &[
                "restore",
                "--repo",
                &svc.addr,
                "--job",
                "db",
                "--key",
                s(&key),
                s(&out)
            ]
        )
        .status
        .success());
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
    assert_no_marker(&svc.repo);
    // Never silently unencrypted.
    let o = svc.client(
        "bob",
        &["backup", "--repo", &svc.addr, "--job", "db", s(&img)],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is encrypted") && stderr(&o).contains("--key"),
        "{}",
        stderr(&o)
    );
    // A wrong passphrase says so and sends nothing.
    let o = Command::new(bin_client())
        .arg("--config-dir")
        .arg(svc.config("bob"))
        .args([
            "backup",
            "--repo",
            &svc.addr,
            "--job",
            "db",
            "--key",
            s(&key),
            s(&img),
        ])
        .env("BULWARK_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("wrong passphrase"),
        "{}",
        stderr(&o)
    );
}
