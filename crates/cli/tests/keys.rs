//! `bulwark key` and the key options of backup and restore (docs/encryption.md), through the
//! real binary: create (with its warning), show, paper and unpaper, passwd (the old passphrase
//! stops working), rotate (old chains stay readable), and the clear refusals: a wrong
//! passphrase, a public key given where a secret key is needed, an existing file.

use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn bulwark(args: &[&str], pass: Option<&str>, stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.env_remove("BULWARK_PASSPHRASE")
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

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn image(p: &Path, seed: u8) {
    let f = std::fs::File::create(p).unwrap();
    f.set_len(4 << 20).unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect();
    f.write_all_at(&data, 0).unwrap();
    f.write_all_at(&b"some text ".repeat(20_000), 1 << 20)
        .unwrap();
}

#[test]
fn key_commands_and_encrypted_backup_and_restore_through_the_binary() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("k.key");
    let o = bulwark(
        &["key", "create", "--out", s(&key)],
        Some("first pass"),
        None,
    );
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("losing every copy"),
        "the first key create warns"
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let e = err(&bulwark(
        &["key", "create", "--out", s(&key)],
        Some("x"),
        None,
    ));
    assert!(e.contains("never overwritten"), "{e}");
    let show = ok(&bulwark(
        &["key", "show", s(&key)],
        Some("first pass"),
        None,
    ));
    assert!(show.contains("generation 1: fingerprint"), "{show}");
    let e = err(&bulwark(&["key", "show", s(&key)], Some("wrong"), None));
    assert!(e.contains("wrong passphrase"), "{e}");

    // Paper copy and back: the same file.
    let paper = ok(&bulwark(&["key", "paper", s(&key)], None, None));
    let back = d.path().join("back.key");
    ok(&bulwark(
        &["key", "unpaper", "--out", s(&back)],
        None,
        Some(&paper),
    ));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&key).unwrap());

    // Backups with the key; restore refused without it, with a wrong passphrase, and right.
    let repo = d.path().join("repo");
    bulwark_repository::Repository::init(&repo, 7).unwrap();
    let img = d.path().join("disk.img");
    image(&img, 1);
    ok(&bulwark(
        &[
            "backup",
            "--repo",
            s(&repo),
            "--job",
            "vm",
            "--key",
            s(&key),
            s(&img),
        ],
        Some("first pass"),
        None,
    ));
    let out = d.path().join("out.img");
    let e = err(&bulwark(
        &["restore", "--repo", s(&repo), "--job", "vm", s(&out)],
        None,
        None,
    ));
    assert!(e.contains("is encrypted") && e.contains("--key"), "{e}");
    let e = err(&bulwark(
        &[
            "restore",
            "--repo",
            s(&repo),
            "--job",
            "vm",
            "--key",
            s(&key),
            s(&out),
        ],
        Some("nope"),
        None,
    ));
    assert!(e.contains("wrong passphrase"), "{e}");
    assert!(!out.exists(), "nothing was written");
    ok(&bulwark(
        &[
            "restore",
            "--repo",
            s(&repo),
            "--job",
            "vm",
            "--key",
            s(&key),
            s(&out),
        ],
        Some("first pass"),
        None,
    ));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
    std::fs::remove_file(&out).unwrap();

    // A new passphrase: the old one no longer opens the file.
    let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    let o = c
        .args(["key", "passwd", s(&key)])
        .env("BULWARK_PASSPHRASE", "first pass")
        .env("BULWARK_NEW_PASSPHRASE", "second pass")
        .output()
        .unwrap();
    ok(&o);
    let e = err(&bulwark(
        &["key", "show", s(&key)],
        Some("first pass"),
        None,
    ));
    assert!(e.contains("wrong passphrase"), "{e}");

    // Rotate: a new chain uses generation 2, the old chain still restores.
    let rot = ok(&bulwark(
        &["key", "rotate", s(&key)],
        Some("second pass"),
        None,
    ));
    assert!(rot.contains("generation 2"), "{rot}");
    image(&img, 2);
    ok(&bulwark(
        &[
            "backup",
            "--repo",
            s(&repo),
            "--job",
            "vm",
            "--full",
            "--key",
            s(&key),
            s(&img),
        ],
        Some("second pass"),
        None,
    ));
    let show = ok(&bulwark(
        &["key", "show", s(&key)],
        Some("second pass"),
        None,
    ));
    assert!(
        show.contains("generation 2") && show.contains("current"),
        "{show}"
    );
    ok(&bulwark(
        &[
            "restore",
            "--repo",
            s(&repo),
            "--job",
            "vm",
            "--key",
            s(&key),
            s(&out),
        ],
        Some("second pass"),
        None,
    ));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());

    // Write-only keys: the public key is refused where a secret key is needed.
    let (private, public) = (d.path().join("r.key"), d.path().join("c.pub"));
    ok(&bulwark(
        &[
            "key",
            "create",
            "--write-only",
            "--out",
            s(&private),
            "--public",
            s(&public),
        ],
        Some("p"),
        None,
    ));
    let e = err(&bulwark(
        &[
            "restore",
            "--repo",
            s(&repo),
            "--job",
            "vm",
            "--restore-key",
            s(&public),
            s(&d.path().join("o2")),
        ],
        Some("p"),
        None,
    ));
    assert!(e.contains("public key") && e.contains("never read"), "{e}");
    let e = err(&bulwark(
        &[
            "backup",
            "--repo",
            s(&repo),
            "--job",
            "vm",
            "--key",
            s(&private),
            s(&img),
        ],
        Some("p"),
        None,
    ));
    assert!(e.contains("--public-key"), "{e}");
}
