//! Applying retention to a real (unguarded) repository, and the flood defence.

use bulwark_engine::{backup_local, BackupOptions, BackupSummary, EngineError};
use bulwark_format::RetentionClass;
use bulwark_repository::retention::Policy;
use bulwark_repository::Repository;

const DAY: i64 = 86_400;

fn now() -> i64 {
    bulwark_time::UnixTime::now().secs()
}

/// A backup of `img` as job `j`, a full when `force_full`.
fn backup(
    repo: &Repository,
    img: &std::path::Path,
    force_full: bool,
) -> Result<BackupSummary, EngineError> {
    let opts = BackupOptions {
        force_full,
        ..Default::default()
    };
    backup_local(repo, "j", img, &opts, &|_| {})
}

fn setup() -> (tempfile::TempDir, Repository, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(&dir.path().join("repo"), 7).unwrap();
    let img = dir.path().join("d.img");
    std::fs::write(&img, b"some disk data ".repeat(40_000)).unwrap();
    (dir, repo, img)
}

#[test]
fn whole_old_chains_are_removed_and_kept_ones_still_restore() {
    let (dir, repo, img) = setup();
    repo.set_policy(
        "j",
        &Policy {
            keep_days: 7,
            keep_points: 2,
            weekly: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let a = backup(&repo, &img, false).unwrap();
    assert_eq!(
        a.sealed.meta.retention,
        RetentionClass::Weekly,
        "first full of the week is GFS weekly"
    );
    backup(&repo, &img, false).unwrap();
    backup(&repo, &img, false).unwrap();
    let b = backup(&repo, &img, true).unwrap();
    assert_eq!(
        b.sealed.meta.retention,
        RetentionClass::Regular,
        "second full of the week is regular"
    );
    backup(&repo, &img, false).unwrap();

    // Today everything is within 7 days.
    let r = repo.apply_retention("j", now(), false).unwrap();
    assert!(r.removed.is_empty());
    // In 30 days: the newest 2 points (chain B) and the weekly GFS full's chain (A) are kept.
    let later = now() + 30 * DAY;
    let dry = repo.apply_retention("j", later, true).unwrap();
    assert!(
        dry.marks.iter().all(|(m, _)| m.keep()),
        "GFS weekly keeps chain A whole"
    );
    // Without GFS, chain A goes as a whole and chain B stays.
    repo.set_policy(
        "j",
        &Policy {
            keep_days: 7,
            keep_points: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let dry = repo.apply_retention("j", later, true).unwrap();
    assert_eq!(dry.marks.iter().filter(|(m, _)| !m.keep()).count(), 3);
    assert_eq!(
        repo.scan_job("j").unwrap().points.len(),
        5,
        "a dry run removes nothing"
    );
    let r = repo.apply_retention("j", later, false).unwrap();
    assert_eq!(r.removed.len(), 3);
    let left = repo.scan_job("j").unwrap().points;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|p| p.meta.chain == b.sealed.meta.chain));
    assert!(
        !a.sealed.path.exists() && !a.sealed.path.parent().unwrap().exists(),
        "chain folder removed"
    );
    let out = dir.path().join("r.img");
    bulwark_engine::restore_local(&repo, "j", None, &out, &Default::default(), &|_| {}).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&img).unwrap());
    assert!(repo.verify(None, 2, &|_| {}).unwrap().is_clean());
}

#[test]
fn no_policy_removes_nothing() {
    let (_dir, repo, img) = setup();
    backup(&repo, &img, false).unwrap();
    let r = repo
        .apply_retention("j", now() + 3650 * DAY, false)
        .unwrap();
    assert!(r.policy.is_none() && r.removed.is_empty());
    assert_eq!(repo.scan_job("j").unwrap().points.len(), 1);
}

#[test]
fn a_flood_of_1000_points_is_refused_past_the_daily_limit_and_removes_nothing() {
    let (_dir, repo, img) = setup();
    repo.set_policy(
        "j",
        &Policy {
            keep_days: 1,
            keep_points: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let limit = repo.config().max_points_per_day as usize;
    let mut ok = 0;
    let mut refused = 0;
    for _ in 0..1000 {
        match backup(&repo, &img, false) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(e.to_string().contains("limit"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(ok, limit);
    assert_eq!(refused, 1000 - limit);
    let r = repo.apply_retention("j", now(), false).unwrap();
    assert!(
        r.removed.is_empty(),
        "retention removed points during a flood"
    );
    assert_eq!(repo.scan_job("j").unwrap().points.len(), limit);
}
