//! `bulwark backup --synthetic-full`: an incremental, then a synthetic full of it that
//! starts a new chain and restores like the image.

mod common;

use std::os::unix::fs::FileExt;

use bulwark_testkit::system::job_args;
use common::{bulwark_ok as bulwark, init_repo, s};

/// Distinct, incompressible-enough bytes for a region of the image.
fn fill(f: &std::fs::File, at: u64, len: usize, seed: u64) {
    let data = bulwark_testkit::Rng::new(seed).bytes(len);
    f.write_all_at(&data, at).unwrap();
}

#[test]
fn backup_with_synthetic_full_starts_a_new_chain_that_restores_the_image() {
    let t = tempfile::tempdir().unwrap();
    let repo = init_repo(t.path());
    let img = t.path().join("disk.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    fill(&f, 0, 5 << 20, 1);
    let backup = |opts: &[&str]| bulwark(&job_args("backup", s(&repo), "pc", opts, &img));
    let json = |out: std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    backup(&["--block-size", "64K"]);
    fill(&f, 3 << 20, 300_000, 2);
    fill(&f, 7 << 20, 100_000, 3);
    let v = json(backup(&["--synthetic-full", "--json"]));
    assert_eq!(v["kind"], "incremental");
    let sf = &v["synthetic_full"];
    assert_eq!(sf["point"], sf["chain"], "{v}");
    assert_ne!(sf["chain"], v["chain"]);
    assert!(["clone", "copy"].contains(&sf["method"].as_str().unwrap()));

    let restored = t.path().join("restored.img");
    bulwark(&job_args("restore", s(&repo), "pc", &[], &restored));
    assert!(std::fs::read(&restored).unwrap() == std::fs::read(&img).unwrap());
    let list = json(bulwark(&["list", "--repo", s(&repo), "--json"]));
    assert!(list.to_string().contains("synthetic-full"), "{list}");

    // The next backup is an incremental of the synthetic full's chain.
    fill(&f, 1 << 20, 4096, 4);
    let next = json(backup(&["--json"]));
    assert_eq!(next["kind"], "incremental");
    assert_eq!(next["chain"], sf["chain"]);
}
