//! Partial files of interrupted backups: removed for every job nobody is writing (what the
//! repository service does when it starts), never the file of a backup in progress, never
//! a resumable copy.

use bulwark_format::{BlockNo, PointId, StoredBlock};
use bulwark_immut_msg::layout;
use bulwark_repository::{NewPoint, Repository, COPY_PREFIX};

#[test]
fn partials_of_interrupted_backups_go_and_a_running_backups_file_stays() {
    let d = tempfile::tempdir().unwrap();
    let repo = Repository::init(&d.path().join("repo"), 7).unwrap();
    let incoming = layout::incoming_dir(repo.root());
    let stale = incoming.join(format!(
        "{}web-01-{}",
        layout::TMP_PREFIX,
        layout::point_file_name(PointId::new(1_700_000_000_000_000_000, [3; 8]))
    ));
    std::fs::write(&stale, b"half a backup").unwrap();
    let copy = incoming.join(format!("{COPY_PREFIX}web-01-x.bwrp"));
    std::fs::write(&copy, b"a resumable copy").unwrap();
    let mut running = repo
        .begin_point(NewPoint::active_full("db", 65_536, 65_536))
        .unwrap();
    running
        .put_stored(StoredBlock::raw(BlockNo(0), &[5u8; 65_536]))
        .unwrap();
    let live = bulwark_testkit::fs::entries_starting_with(&incoming, ".tmp-db-");
    assert_eq!(live.len(), 1);

    let removed = repo.remove_interrupted_partials().unwrap();
    assert_eq!(removed, vec![stale.clone()]);
    assert!(!stale.exists());
    assert!(live[0].exists(), "the running backup's file was removed");
    assert!(copy.exists(), "a resumable copy was removed");
    running.finish().unwrap();
    assert_eq!(repo.scan_job("db").unwrap().points.len(), 1);
}
