//! Issue 17: the S3 tier copies and imports encrypted restore points. Encrypted backups made
//! through the real `bulwark` binary (a symmetric key file, and a write-only public key) are
//! synced to the real S3 store of `.ci/run` (`S3_ENDPOINT`, `S3_ACCESS_KEY`, `S3_SECRET_KEY`;
//! the test skips loudly without it), imported into an empty repository from the bucket alone,
//! and restored from there: byte-identical with the key, refused without it. No object in the
//! bucket, and no file of either repository, holds a plaintext marker of the source image.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use bulwark_repository::Repository;
use bulwark_testkit::expect_binary;
use bulwark_testkit::skip::require_s3;

const MARKER: &[u8] = b"BULWARK-PLAINTEXT-MARKER-4f1c9e";

fn run(bin: &Path, args: &[&str], pass: Option<&str>) -> Output {
    let mut c = Command::new(bin);
    c.args(args)
        .stdin(Stdio::null())
        .env_remove("BULWARK_PASSPHRASE")
        .env_remove("BULWARK_NEW_PASSPHRASE");
    if let Some(p) = pass {
        c.env("BULWARK_PASSPHRASE", p);
    }
    c.output().unwrap()
}

fn bulwark(args: &[&str], pass: Option<&str>) -> Output {
    run(&expect_binary("bulwark"), args, pass)
}

fn tier(args: &[&str]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_bulwark-tier")), args, None)
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

fn err(o: Output) -> String {
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

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A 4 MiB sparse image: varied bytes, a compressible text run with the marker in it, and the
/// marker alone in one more block (changed by `seed`, so the next backup is an incremental
/// with dirty blocks).
fn image(p: &Path, seed: u8) {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(p)
        .unwrap();
    f.set_len(4 << 20).unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect();
    f.write_all_at(&data, 0).unwrap();
    let mut text = b"some text ".repeat(10_000);
    text.extend_from_slice(MARKER);
    text.extend_from_slice(&b"more text ".repeat(10_000));
    f.write_all_at(&text, 1 << 20).unwrap();
    let mut m = MARKER.to_vec();
    m.push(seed);
    f.write_all_at(&m, (3 << 20) + 12_345).unwrap();
}

fn no_marker_in(dir: &Path) {
    for f in bulwark_testkit::fs::files_under(dir) {
        let Ok(b) = std::fs::read(&f) else { continue };
        assert!(
            !contains(&b, MARKER),
            "{} holds the plaintext marker",
            f.display()
        );
    }
}

#[test]
fn the_s3_tier_copies_and_imports_encrypted_points_that_restore_only_with_their_key() {
    let name = "the_s3_tier_copies_and_imports_encrypted_points_that_restore_only_with_their_key";
    let Some(env) = require_s3(name) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    Repository::init(&repo, 7).unwrap();
    let r = s(&repo);
    let creds = d.path().join("s3.credentials");
    env.write_credentials(&creds);
    let bucket = bulwark_testkit::skip::S3Env::new_bucket("enc");

    // Keys: a symmetric key file, and a write-only pair (the client holds only the public).
    let key = d.path().join("sym.key");
    ok(bulwark(
        &["key", "create", "--out", s(&key)],
        Some("sym pass"),
    ));
    let (private, public) = (d.path().join("restore.key"), d.path().join("client.pub"));
    ok(bulwark(
        &bulwark_testkit::keys::write_only_args(s(&private), s(&public)),
        Some("wo pass"),
    ));

    // Job "sym": a full and an incremental with the key; job "wo": a full and an incremental
    // with the public key only.
    let img = d.path().join("disk.img");
    let mut want = Vec::new();
    for (job, opt, file, pass) in [
        ("sym", "--key", &key, Some("sym pass")),
        ("wo", "--public-key", &public, None),
    ] {
        for seed in [1u8, 2] {
            image(&img, seed);
            assert!(contains(&std::fs::read(&img).unwrap(), MARKER));
            ok(bulwark(
                &["backup", "--repo", r, "--job", job, opt, s(file), s(&img)],
                pass,
            ));
        }
        want.push((job, std::fs::read(&img).unwrap()));
    }
    let o = ok(bulwark(&["--json", "list", "--repo", r], None));
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let count: usize = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["points"].as_array().unwrap().len())
        .sum();
    assert_eq!(count, 4, "{v}");
    no_marker_in(&repo);

    // Copy to the tier.
    ok(tier(&env.add_args(r, &bucket, &creds)));
    ok(tier(&["sync", r]));
    let o = tier(&["--json", "status", r]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["tiers"][0]["copied"], 4, "{st}");
    assert_eq!(st["tiers"][0]["pending"], 0, "{st}");
    ok(tier(&["verify", r]));

    // Every object version in the bucket: downloaded, free of the marker.
    let t = bulwark_tier_s3::Tier::open(&Repository::open(&repo).unwrap(), "s3").unwrap();
    let versions = t.store().list_versions("").unwrap();
    let points = versions.iter().filter(|v| v.key.ends_with(".bwrp")).count();
    assert_eq!(points, 4, "{versions:?}");
    for v in &versions {
        let tmp = d.path().join("object");
        let mut f = std::fs::File::create(&tmp).unwrap();
        let (n, _) = t
            .store()
            .download(&v.key, &v.version_id, &mut f, 1 << 30)
            .unwrap();
        assert_eq!(n, v.size);
        let b = std::fs::read(&tmp).unwrap();
        assert!(
            !contains(&b, MARKER),
            "object {} holds the plaintext marker",
            v.key
        );
    }
    drop(t);

    // The host is lost: an empty repository is rebuilt from the bucket alone.
    let fresh = d.path().join("rebuilt");
    let f = s(&fresh);
    ok(tier(&[
        "import",
        f,
        "--endpoint",
        &env.endpoint,
        "--bucket",
        &bucket,
        "--credentials",
        s(&creds),
    ]));
    let o = ok(bulwark(&["list", "--repo", f], None));
    assert!(
        o.contains("job sym") && o.contains("job wo") && o.contains("in the tier only"),
        "{o}"
    );

    for (job, bytes) in &want {
        let out = d.path().join(format!("{job}.out"));
        // Without a key: refused, nothing written.
        let e = err(bulwark(
            &["restore", "--repo", f, "--job", job, s(&out)],
            None,
        ));
        assert!(e.contains("is encrypted"), "{e}");
        assert!(!out.exists(), "nothing was written");
        // The write-only job's point cannot be read with the public key, nor the symmetric
        // job's with a wrong passphrase.
        if *job == "wo" {
            let e = err(bulwark(
                &[
                    "restore",
                    "--repo",
                    f,
                    "--job",
                    job,
                    "--restore-key",
                    s(&public),
                    s(&out),
                ],
                Some("wo pass"),
            ));
            assert!(e.contains("public key"), "{e}");
        } else {
            let e = err(bulwark(
                &[
                    "restore",
                    "--repo",
                    f,
                    "--job",
                    job,
                    "--key",
                    s(&key),
                    s(&out),
                ],
                Some("wrong"),
            ));
            assert!(e.contains("wrong passphrase"), "{e}");
        }
        assert!(!out.exists(), "nothing was written");
        // With the key: byte-identical to the source image of the last backup.
        let (opt, file, pass) = if *job == "wo" {
            ("--restore-key", &private, "wo pass")
        } else {
            ("--key", &key, "sym pass")
        };
        ok(bulwark(
            &["restore", "--repo", f, "--job", job, opt, s(file), s(&out)],
            Some(pass),
        ));
        assert!(
            std::fs::read(&out).unwrap() == *bytes,
            "{job} restores byte-identical"
        );
        std::fs::remove_file(&out).unwrap();
    }
    // The imported repository's files (the downloaded points included) hold no plaintext.
    no_marker_in(&fresh);
}
