//! `bulwark backup --synthetic-full`: an incremental, then a synthetic full of it that
//! starts a new chain and restores like the image.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

fn bulwark(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bulwark {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Distinct, incompressible-enough bytes for a region of the image.
fn fill(f: &std::fs::File, at: u64, len: usize, seed: u64) {
    let data = bulwark_testkit::Rng::new(seed).bytes(len);
    f.write_all_at(&data, at).unwrap();
}

#[test]
fn backup_with_synthetic_full_starts_a_new_chain_that_restores_the_image() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    bulwark_repository::Repository::init(&repo, 7).unwrap();
    let img = t.path().join("disk.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    fill(&f, 0, 5 << 20, 1);
    bulwark(&[
        "backup",
        "--repo",
        s(&repo),
        "--job",
        "pc",
        "--block-size",
        "64K",
        s(&img),
    ]);
    fill(&f, 3 << 20, 300_000, 2);
    fill(&f, 7 << 20, 100_000, 3);
    let out = bulwark(&[
        "backup",
        "--repo",
        s(&repo),
        "--job",
        "pc",
        "--synthetic-full",
        "--json",
        s(&img),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "incremental");
    let sf = &v["synthetic_full"];
    assert_eq!(sf["point"], sf["chain"], "{v}");
    assert_ne!(sf["chain"], v["chain"]);
    assert!(["clone", "copy"].contains(&sf["method"].as_str().unwrap()));

    let restored = t.path().join("restored.img");
    bulwark(&["restore", "--repo", s(&repo), "--job", "pc", s(&restored)]);
    assert!(std::fs::read(&restored).unwrap() == std::fs::read(&img).unwrap());
    let list: serde_json::Value =
        serde_json::from_slice(&bulwark(&["list", "--repo", s(&repo), "--json"]).stdout).unwrap();
    assert!(list.to_string().contains("synthetic-full"), "{list}");

    // The next backup is an incremental of the synthetic full's chain.
    fill(&f, 1 << 20, 4096, 4);
    let next: serde_json::Value = serde_json::from_slice(
        &bulwark(&[
            "backup",
            "--repo",
            s(&repo),
            "--job",
            "pc",
            "--json",
            s(&img),
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(next["kind"], "incremental");
    assert_eq!(next["chain"], sf["chain"]);
}
