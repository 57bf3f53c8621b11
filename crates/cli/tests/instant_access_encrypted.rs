//! Issue 17: `bulwark export` of encrypted restore points (docs/encryption.md), read by
//! qemu-img: a symmetric chain with `--key`, a write-only chain with `--restore-key`, both
//! byte-identical to their source (full and incremental); refused without the key, with the
//! public key, and with a key given for a plain point; `bulwark mount --no-partitions` of a
//! write-only point with `--restore-key`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use bulwark_testkit::images::{change, mixed as image, qemu_compare as compare};
use bulwark_testkit::require_tools;
use common::{bulwark_pass, create_write_only_key, init_repo, ok, ready_report, rig, s, Export};

fn bulwark(args: &[&str], pass: Option<&str>) -> Output {
    bulwark_pass(args, pass, None)
}

/// `bulwark export` of `args` under `pass`, which must be refused; its error.
fn refused(args: &[&str], sock: &Path, pass: Option<&str>) -> String {
    Export::try_start(args, sock, pass).err().expect("refused")
}

#[test]
fn export_serves_encrypted_points_byte_identical_with_their_key_and_refuses_without_it() {
    let t = "export_serves_encrypted_points_byte_identical_with_their_key_and_refuses_without_it";
    let Some((d, repo, _)) = rig(t, &["qemu-img"]) else {
        return;
    };
    let r = s(&repo);
    let key = d.path().join("sym.key");
    ok(&bulwark(&["key", "create", "--out", s(&key)], Some("sym")));
    let (private, public) = (d.path().join("restore.key"), d.path().join("client.pub"));
    create_write_only_key(&private, &public, "wo");
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
            let o = ok(&bulwark(
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
            let e = Export::try_start(
                &["--repo", r, "--job", job, "--point", p, ropt, s(rfile)],
                &sock,
                Some(pass),
            )
            .unwrap();
            compare(copy, &e.uri());
            drop(e);
        }
        // Without a key: a clear refusal naming the options.
        let e = refused(&["--repo", r, "--job", job], &sock, None);
        assert!(
            e.contains("is encrypted") && e.contains("--key") && e.contains("--restore-key"),
            "{e}"
        );
        // The wrong passphrase: refused.
        let e = refused(
            &["--repo", r, "--job", job, ropt, s(rfile)],
            &sock,
            Some("x"),
        );
        assert!(e.contains("wrong passphrase"), "{e}");
    }
    // The public key cannot open a write-only point.
    let e = refused(
        &["--repo", r, "--job", "wo", "--restore-key", s(&public)],
        &sock,
        Some("wo"),
    );
    assert!(e.contains("public key"), "{e}");
    // A symmetric key for a write-only point: refused, not garbage served.
    let e = refused(
        &["--repo", r, "--job", "wo", "--key", s(&key)],
        &sock,
        Some("sym"),
    );
    assert!(
        e.contains("write-only mode") && e.contains("--restore-key"),
        "{e}"
    );
    // A key given for a plain point: refused.
    let plain = d.path().join("plain.img");
    image(&plain, 3, 2);
    ok(&bulwark(
        &["backup", "--repo", r, "--job", "plain", s(&plain)],
        None,
    ));
    let e = refused(
        &["--repo", r, "--job", "plain", "--key", s(&key)],
        &sock,
        Some("sym"),
    );
    assert!(e.contains("not encrypted"), "{e}");
    let e = Export::try_start(&["--repo", r, "--job", "plain"], &sock, None).unwrap();
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
    let repo = init_repo(d.path());
    let r = s(&repo);
    let (private, public) = (d.path().join("restore.key"), d.path().join("client.pub"));
    create_write_only_key(&private, &public, "wo");
    let img = d.path().join("disk.img");
    image(&img, 7, 5);
    ok(&bulwark(
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
    let mount = ["mount", "--repo", r, "--job", "vm", "--no-partitions"];
    let o = bulwark(&[&mount[..], &[s(&mnt)]].concat(), None);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("is encrypted") && e.contains("--restore-key"),
        "{e}"
    );
    let mut child = Command::new(common::bin())
        .arg("--json")
        .args(mount)
        .args(["--restore-key", s(&private), s(&mnt)])
        .env("BULWARK_PASSPHRASE", "wo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let report = ready_report(&mut child);
    let ready = report.is_ok();
    let same = ready && std::fs::read(mnt.join("disk.raw")).ok() == std::fs::read(&img).ok();
    let u = bulwark(&["umount", s(&mnt)], None);
    let status = child.wait().unwrap();
    if let Err(text) = report {
        panic!("the mount said {text:?} before exiting");
    }
    assert!(same, "disk.raw differs from the source image");
    assert!(u.status.success(), "{}", String::from_utf8_lossy(&u.stderr));
    assert!(status.success());
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
}
