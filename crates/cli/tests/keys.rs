//! `bulwark key` and the key options of backup and restore (docs/encryption.md), through the
//! real binary: create (with its warning), show, paper and unpaper, passwd (the old passphrase
//! stops working), rotate (old chains stay readable), and the clear refusals: a wrong
//! passphrase, a public key given where a secret key is needed, an existing file.

mod common;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use bulwark_testkit::system::job_args;
use common::{bulwark_pass as bulwark, create_write_only_key, err, init_repo, ok, s};

/// `bulwark key show KEY` under `pass`.
fn key_show(key: &Path, pass: &str) -> Output {
    bulwark(&["key", "show", s(key)], Some(pass), None)
}

/// `bulwark CMD` of job `vm` of `repo` with `--key KEY` and `opts`, under `pass`.
fn with_key(
    cmd: &str,
    repo: &Path,
    opts: &[&str],
    key: &Path,
    target: &Path,
    pass: &str,
) -> Output {
    let opts = [opts, &["--key", s(key)]].concat();
    bulwark(
        &job_args(cmd, s(repo), "vm", &opts, target),
        Some(pass),
        None,
    )
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
    let show = ok(&key_show(&key, "first pass"));
    assert!(show.contains("generation 1: fingerprint"), "{show}");
    let e = err(&key_show(&key, "wrong"));
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
    let repo = init_repo(d.path());
    let img = d.path().join("disk.img");
    image(&img, 1);
    ok(&with_key("backup", &repo, &[], &key, &img, "first pass"));
    let out = d.path().join("out.img");
    let e = err(&bulwark(
        &job_args("restore", s(&repo), "vm", &[], &out),
        None,
        None,
    ));
    assert!(e.contains("is encrypted") && e.contains("--key"), "{e}");
    let e = err(&with_key("restore", &repo, &[], &key, &out, "nope"));
    assert!(e.contains("wrong passphrase"), "{e}");
    assert!(!out.exists(), "nothing was written");
    ok(&with_key("restore", &repo, &[], &key, &out, "first pass"));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
    std::fs::remove_file(&out).unwrap();

    // A new passphrase: the old one no longer opens the file.
    let mut c = Command::new(common::bin());
    let o = c
        .args(["key", "passwd", s(&key)])
        .env("BULWARK_PASSPHRASE", "first pass")
        .env("BULWARK_NEW_PASSPHRASE", "second pass")
        .output()
        .unwrap();
    ok(&o);
    let e = err(&key_show(&key, "first pass"));
    assert!(e.contains("wrong passphrase"), "{e}");

    // Rotate: a new chain uses generation 2, the old chain still restores.
    let rot = ok(&bulwark(
        &["key", "rotate", s(&key)],
        Some("second pass"),
        None,
    ));
    assert!(rot.contains("generation 2"), "{rot}");
    image(&img, 2);
    ok(&with_key(
        "backup",
        &repo,
        &["--full"],
        &key,
        &img,
        "second pass",
    ));
    let show = ok(&key_show(&key, "second pass"));
    assert!(
        show.contains("generation 2") && show.contains("current"),
        "{show}"
    );
    ok(&with_key("restore", &repo, &[], &key, &out, "second pass"));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());

    // Write-only keys: the public key is refused where a secret key is needed.
    let (private, public) = (d.path().join("r.key"), d.path().join("c.pub"));
    create_write_only_key(&private, &public, "p");
    let o2 = d.path().join("o2");
    let e = err(&bulwark(
        &job_args(
            "restore",
            s(&repo),
            "vm",
            &["--restore-key", s(&public)],
            &o2,
        ),
        Some("p"),
        None,
    ));
    assert!(e.contains("public key") && e.contains("never read"), "{e}");
    let e = err(&with_key("backup", &repo, &[], &private, &img, "p"));
    assert!(e.contains("--public-key"), "{e}");
}
