//! The target's flood rule holds for copies as for backups: a copy never makes a job exceed
//! the target's `max_points_per_day`, and what it refuses it reports (the rule lives once, in
//! the repository's writer).

use bulwark_copy::{copy, CopyOptions, LocalSource, LocalTarget};
use bulwark_format::{BlockNo, PointKind, StoredBlock};
use bulwark_repository::{NewPoint, Repository};
use bulwark_testkit::Rng;

const BS: usize = 64 * 1024;

/// A full of one random block per point (each point its own chain: nothing to reference).
fn full(repo: &Repository, seed: u64) {
    let mut b = repo
        .begin_point(NewPoint {
            job: "vm".into(),
            parent: None,
            disk_size: BS as u64,
            block_size: BS as u32,
            compression_level: 0,
            client: String::new(),
            full_kind: PointKind::ActiveFull,
        })
        .unwrap();
    b.put_stored(StoredBlock::raw(BlockNo(0), &Rng::new(seed).bytes(BS)))
        .unwrap();
    b.finish().unwrap();
}

#[test]
fn a_copy_stops_at_the_targets_daily_limit_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let src = Repository::init(&dir.path().join("src"), 7).unwrap();
    let dst_root = dir.path().join("dst");
    Repository::init(&dst_root, 7).unwrap();
    let cfg = dst_root.join("repository.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("max_points_per_day = 48"), "{text}");
    std::fs::write(
        &cfg,
        text.replace("max_points_per_day = 48", "max_points_per_day = 2"),
    )
    .unwrap();
    for seed in [1, 3, 5] {
        full(&src, seed);
    }
    let mut s = LocalSource { repo: src };
    let mut t = LocalTarget::new(Repository::open(&dst_root).unwrap());
    let r = copy(&mut s, &mut t, &CopyOptions::default(), &mut |_, _, _| {}).unwrap();
    let job = &r.jobs[0];
    assert!(!r.ok(), "the third point is refused: {r:?}");
    assert_eq!(job.points_copied, 2, "{r:?}");
    let error = job.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("max_points_per_day") && error.contains("refusing more copies"),
        "{error}"
    );
    let held = Repository::open(&dst_root).unwrap().scan_job("vm").unwrap();
    assert_eq!(
        held.points.len(),
        2,
        "the target holds only what it accepted"
    );
}
