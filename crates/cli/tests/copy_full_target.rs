//! `bulwark copy` and a `[copy]` job into a target whose filesystem fills up (a real ext4 on a
//! loop device, root only): exit 2 with an error naming the target and ENOSPC, the bytes
//! that were sent counted, no partial file left filling the target, and a summary that says
//! the copy failed.

mod common;

use std::path::Path;

use bulwark_testkit::{FsKind, LoopFs};
use common::{backs_up, bulwark, copy, copy_json, copy_to, job_toml, s};

/// Every file in the target's `incoming/` (partial and finished copies waiting there).
fn incoming(repo: &Path) -> Vec<String> {
    std::fs::read_dir(repo.join("incoming"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_copy_into_a_full_target_fails_naming_it_and_leaves_no_partial_file_there() {
    let t = "a_copy_into_a_full_target_fails_naming_it_and_leaves_no_partial_file_there";
    if !bulwark_testkit::can_run(
        t,
        "a loop-mounted ext4 filesystem",
        &["mkfs.ext4", "losetup"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    bulwark_repository::Repository::init(&src, 7).unwrap();
    // A target of 24 MiB; the point to copy stores 40 MiB (random bytes do not compress).
    let fs = LoopFs::with_size(FsKind::Ext4, 24 << 20);
    let dst = fs.mnt.join("dst");
    bulwark_repository::Repository::init(&dst, 7).unwrap();
    let big = dir.path().join("big.img");
    std::fs::write(&big, bulwark_testkit::Rng::new(31).bytes(40 << 20)).unwrap();
    let small = dir.path().join("small.img");
    std::fs::write(&small, bulwark_testkit::Rng::new(32).bytes(2 << 20)).unwrap();
    for (job, img) in [("big", &big), ("small", &small)] {
        backs_up(&src, job, img);
    }

    let o = copy_json(&src, &dst, &["--job", "big"]);
    assert_eq!(o.status.code(), Some(2), "an operational error");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let j = &r["jobs"][0];
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(j["points_copied"], 0);
    assert_eq!(j["points_failed"], 1);
    assert_eq!(j["target_full"], true);
    let err = j["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("the target {} is full", s(&dst)))
            && err.contains("ENOSPC")
            && err.contains("No space left on device")
            && err.contains("nothing of this point is kept"),
        "{err}"
    );
    assert_eq!(j["failed_point"].as_str().map(str::len), Some(32), "{j}");
    // What went over the wire before the target filled is counted, not "0 B sent".
    let sent = j["bytes_sent"].as_u64().unwrap();
    assert!(sent > 8 << 20, "only {sent} bytes counted as sent");
    assert_eq!(r["bytes_sent"].as_u64(), Some(sent));
    // The partial file that filled the target is gone, and nothing was stored.
    assert!(incoming(&dst).is_empty(), "left: {:?}", incoming(&dst));
    assert!(!dst.join("store").join("big").exists());

    // The text says so, and gives no advice to run the same copy again as it is.
    let o = copy(&src, &dst, &["--job", "big"]);
    assert_eq!(o.status.code(), Some(2));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("copy FAILED for 1 of 1 jobs"), "{out}");
    assert!(out.contains("is full"), "{out}");
    assert!(!out.contains("Run the same command again"), "{out}");
    assert!(incoming(&dst).is_empty(), "left: {:?}", incoming(&dst));

    // With the space back, a copy that fits goes through; as a [copy] job the full target
    // fails the run (exit 2, recorded) with the same words.
    let o = copy(&src, &dst, &["--job", "small"]);
    assert_eq!(o.status.code(), Some(0), "the target has room again");
    let job = job_toml(dir.path(), "offsite", &src, &copy_to(&dst));
    let state = dir.path().join("state");
    let o = bulwark(&["--json", "job", "run", "--state-dir", s(&state), s(&job)]);
    assert_eq!(o.status.code(), Some(2));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("is full"), "{r}");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("jobs/offsite.json")).unwrap()).unwrap();
    assert_eq!(rec["ok"], false);
    assert!(incoming(&dst).is_empty(), "left: {:?}", incoming(&dst));
}
