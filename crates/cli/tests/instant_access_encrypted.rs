//! Issue 17: `bulwark export` of encrypted restore points (docs/encryption.md), read by
//! qemu-img: a symmetric chain with `--key`, a write-only chain with `--restore-key`, both
//! byte-identical to their source (full and incremental); refused without the key, with the
//! public key, and with a key given for a plain point; `bulwark mount --no-partitions` of a
//! write-only point with `--restore-key`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use bulwark_testkit::{require_tools, Rng};

fn bulwark(args: &[&str], pass: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    c.args(args)
        .stdin(Stdio::null())
        .env_remove("BULWARK_PASSPHRASE");
    if let Some(p) = pass {
        c.env("BULWARK_PASSPHRASE", p);
    }
    c.output().unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A disk image of random, compressible and zero stretches.
fn image(path: &Path, seed: u64, mib: usize) {
    let mut rng = Rng::new(seed);
    let mut data = rng.bytes(mib << 20);
    for (i, chunk) in data.chunks_mut(192 << 10).enumerate() {
        match i % 4 {
            1 => chunk.fill(b'q'),
            3 => chunk.fill(0),
            _ => {}
        }
    }
    std::fs::write(path, data).unwrap();
}

fn change(path: &Path, seed: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut rng = Rng::new(seed);
    for _ in 0..4 {
        let at = rng.below(len - 100_000);
        f.write_all_at(&rng.bytes(100_000), at).unwrap();
    }
}

/// A running `bulwark export`, stopped with SIGTERM on drop.
struct Export {
    child: Child,
    sock: PathBuf,
}

impl Export {
    /// Starts an export and waits for its JSON report; `Err(stderr)` when it exits instead.
    // The child is waited for on every path: by `wait_with_output` when it exits, and by
    // `Export`'s drop once it serves (the lint does not follow the move into `Export`).
    #[allow(clippy::zombie_processes)]
    fn start(args: &[&str], sock: &Path, pass: Option<&str>) -> Result<Export, String> {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
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
        let mut r = BufReader::new(child.stdout.take().unwrap());
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = r.read_line(&mut line).unwrap_or(0);
            text.push_str(&line);
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                let e = Export {
                    child,
                    sock: sock.to_path_buf(),
                };
                std::thread::spawn(move || {
                    let mut sink = String::new();
                    while r.read_line(&mut sink).unwrap_or(0) > 0 {}
                });
                assert!(v["uri"].as_str().unwrap().contains(s(sock)), "{v}");
                return Ok(e);
            }
            if n == 0 {
                let o = child.wait_with_output().unwrap();
                assert!(!o.status.success(), "exited 0 without serving: {text}");
                return Err(String::from_utf8_lossy(&o.stderr).into_owned());
            }
        }
    }

    fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.sock.display())
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .output();
        let _ = self.child.wait();
    }
}

fn compare(src: &Path, uri: &str) {
    let o = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", s(src), uri])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img compare {}: {}{}",
        s(src),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn export_serves_encrypted_points_byte_identical_with_their_key_and_refuses_without_it() {
    let t = "export_serves_encrypted_points_byte_identical_with_their_key_and_refuses_without_it";
    if !require_tools(t, &["qemu-img"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    bulwark_repository::Repository::init(&repo, 7).unwrap();
    let r = s(&repo);
    let key = d.path().join("sym.key");
    ok(bulwark(&["key", "create", "--out", s(&key)], Some("sym")));
    let (private, public) = (d.path().join("restore.key"), d.path().join("client.pub"));
    ok(bulwark(
        &[
            "key",
            "create",
            "--write-only",
            "--out",
            s(&private),
            "--public",
            s(&public),
        ],
        Some("wo"),
    ));
    let sock = d.path().join("nbd.sock");
    for (job, wopt, wfile, ropt, rfile, pass, seed) in [
        ("sym", "--key", &key, "--key", &key, "sym", 1u64),
        (
            "wo",
            "--public-key",
            &public,
            "--restore-key",
            &private,
            "wo",
            2,
        ),
    ] {
        let img = d.path().join(format!("{job}.img"));
        image(&img, seed, 6);
        let mut copies = Vec::new();
        let mut points = Vec::new();
        for round in 0..2 {
            if round == 1 {
                change(&img, seed + 10);
            }
            let o = ok(bulwark(
                &[
                    "backup",
                    "--repo",
                    r,
                    "--job",
                    job,
                    "--json",
                    wopt,
                    s(wfile),
                    s(&img),
                ],
                (wopt == "--key").then_some(pass),
            ));
            let v: serde_json::Value = serde_json::from_str(&o).unwrap();
            points.push(v["point"].as_str().expect("a point id").to_string());
            let copy = d.path().join(format!("{job}-{round}.img"));
            std::fs::copy(&img, &copy).unwrap();
            copies.push(copy);
        }
        // Full and incremental, each byte-identical to the image it was taken of.
        for (p, copy) in points.iter().zip(&copies) {
            let e = Export::start(
                &["--repo", r, "--job", job, "--point", p, ropt, s(rfile)],
                &sock,
                Some(pass),
            )
            .unwrap();
            compare(copy, &e.uri());
            drop(e);
        }
        // Without a key: a clear refusal naming the options.
        let e = Export::start(&["--repo", r, "--job", job], &sock, None)
            .err()
            .expect("refused");
        assert!(
            e.contains("is encrypted") && e.contains("--key") && e.contains("--restore-key"),
            "{e}"
        );
        // The wrong passphrase: refused.
        let e = Export::start(
            &["--repo", r, "--job", job, ropt, s(rfile)],
            &sock,
            Some("x"),
        )
        .err()
        .expect("refused");
        assert!(e.contains("wrong passphrase"), "{e}");
    }
    // The public key cannot open a write-only point.
    let e = Export::start(
        &["--repo", r, "--job", "wo", "--restore-key", s(&public)],
        &sock,
        Some("wo"),
    )
    .err()
    .expect("refused");
    assert!(e.contains("public key"), "{e}");
    // A symmetric key for a write-only point: refused, not garbage served.
    let e = Export::start(
        &["--repo", r, "--job", "wo", "--key", s(&key)],
        &sock,
        Some("sym"),
    )
    .err()
    .expect("refused");
    assert!(
        e.contains("write-only mode") && e.contains("--restore-key"),
        "{e}"
    );
    // A key given for a plain point: refused.
    let plain = d.path().join("plain.img");
    image(&plain, 3, 2);
    ok(bulwark(
        &["backup", "--repo", r, "--job", "plain", s(&plain)],
        None,
    ));
    let e = Export::start(
        &["--repo", r, "--job", "plain", "--key", s(&key)],
        &sock,
        Some("sym"),
    )
    .err()
    .expect("refused");
    assert!(e.contains("not encrypted"), "{e}");
    let e = Export::start(&["--repo", r, "--job", "plain"], &sock, None).unwrap();
    compare(&plain, &e.uri());
}

/// `bulwark mount --no-partitions` of an encrypted point (FUSE, no root needed): the disk file
/// reads byte-identical with `--restore-key`, and the mount is refused without the key.
#[test]
fn mount_shows_an_encrypted_point_byte_identical_with_its_restore_key() {
    let t = "mount_shows_an_encrypted_point_byte_identical_with_its_restore_key";
    if !require_tools(t, &["fusermount3"]) {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        bulwark_testkit::skip::skip(t, "/dev/fuse is missing");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    bulwark_repository::Repository::init(&repo, 7).unwrap();
    let r = s(&repo);
    let (private, public) = (d.path().join("restore.key"), d.path().join("client.pub"));
    ok(bulwark(
        &[
            "key",
            "create",
            "--write-only",
            "--out",
            s(&private),
            "--public",
            s(&public),
        ],
        Some("wo"),
    ));
    let img = d.path().join("disk.img");
    image(&img, 7, 5);
    ok(bulwark(
        &[
            "backup",
            "--repo",
            r,
            "--job",
            "vm",
            "--public-key",
            s(&public),
            s(&img),
        ],
        None,
    ));
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let o = bulwark(
        &[
            "mount",
            "--repo",
            r,
            "--job",
            "vm",
            "--no-partitions",
            s(&mnt),
        ],
        None,
    );
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("is encrypted") && e.contains("--restore-key"),
        "{e}"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args([
            "--json",
            "mount",
            "--repo",
            r,
            "--job",
            "vm",
            "--no-partitions",
            "--restore-key",
            s(&private),
            s(&mnt),
        ])
        .env("BULWARK_PASSPHRASE", "wo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rd = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let ready = loop {
        let mut line = String::new();
        let n = rd.read_line(&mut line).unwrap_or(0);
        text.push_str(&line);
        if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
            break true;
        }
        if n == 0 {
            break false;
        }
    };
    let same = ready && std::fs::read(mnt.join("disk.raw")).ok() == std::fs::read(&img).ok();
    let u = bulwark(&["umount", s(&mnt)], None);
    let status = child.wait().unwrap();
    assert!(ready, "the mount said {text:?} before exiting");
    assert!(same, "disk.raw differs from the source image");
    assert!(u.status.success(), "{}", String::from_utf8_lossy(&u.stderr));
    assert!(status.success());
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
}
