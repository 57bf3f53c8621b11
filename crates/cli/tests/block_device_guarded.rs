//! Issue 13 item 5: a local block-device backup on a guarded host, as the README sets it up
//! (a service user owns the repository, a real `bulwark-immutd` guards it, a loop device is
//! the disk). Root's `bulwark backup` opens the device, then continues as the repository's
//! owner: the point is sealed and nothing root-owned is left in `incoming/` or `locks/`.
//! Without root these tests print why they skip.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bulwark_testkit::cmd::{show, text};
use bulwark_testkit::immutd::ImmutdSetup;
use bulwark_testkit::{can_run, expect_binary as bin, LoopDev, Scratch, TestUser};

const NEEDS: &str = "a loop device, a service user and bulwark-immutd";

fn root_owned_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().uid() == 0 {
            out.push(p);
        }
    }
    out
}

/// `bulwark backup --repo REPO --job disk1 SOURCE`.
fn backup_args<'a>(repo: &'a Path, source: &'a str) -> [&'a str; 6] {
    [
        "backup",
        "--repo",
        repo.to_str().unwrap(),
        "--job",
        "disk1",
        source,
    ]
}

#[test]
fn root_backs_up_a_block_device_into_a_guarded_repository_as_its_service_user() {
    let test = "root_backs_up_a_block_device_into_a_guarded_repository_as_its_service_user";
    if !can_run(test, NEEDS, &["useradd", "losetup", "chattr"]) {
        return;
    }
    let Some(immutd_bin) = bulwark_testkit::require_binary(test, "bulwark-immutd") else {
        return;
    };
    let user = TestUser::create();
    let scratch = Scratch::new("bwbd");
    let dir = scratch.path();
    let srv = dir.join("srv");
    std::fs::create_dir(&srv).unwrap();
    std::os::unix::fs::chown(&srv, Some(user.uid), Some(user.gid)).unwrap();
    let repo = srv.join("repo");
    let immutd_dir = dir.join("immutd");
    std::fs::create_dir(&immutd_dir).unwrap();
    let setup = ImmutdSetup::new(&user.name, repo.clone(), immutd_dir.clone());
    let o = user.run(
        &bin("bulwark-repo"),
        &[
            "init",
            repo.to_str().unwrap(),
            "--immutable-days",
            "7",
            "--immutd-socket",
            setup.socket().to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    let daemon = setup.spawn(&immutd_bin).unwrap();
    // The disk: a loop device (root:disk 0660, as /dev/sdb would be).
    let img = dir.join("disk.img");
    let mut data = vec![0u8; 8 << 20];
    for (i, b) in data.iter_mut().enumerate().take(3 << 20) {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(&img, &data).unwrap();
    let dev = LoopDev::attach(&img);
    // The service user alone cannot read the device, and is told what to do.
    let o = user.run(&bin("bulwark"), &backup_args(&repo, dev.path()));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("needs root"), "{}", text(&o));
    // Root, as the README says: opens the device, continues as the service user.
    let o = Command::new(bin("bulwark"))
        .arg("--json")
        .args(backup_args(&repo, dev.path()))
        .output()
        .unwrap();
    show("[root] bulwark backup", &o);
    assert!(
        o.status.success(),
        "root's backup of the device failed: {}\n{}",
        text(&o),
        daemon.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["immutable"], true, "{v}");
    assert!(root_owned_files(&repo.join("incoming")).is_empty());
    assert!(
        root_owned_files(&repo.join("locks")).is_empty(),
        "root-owned lock left"
    );
    assert!(
        std::fs::read_dir(repo.join("incoming"))
            .unwrap()
            .next()
            .is_none(),
        "left in incoming/"
    );
    // The job is not blocked for the service user: its next backup (of a copy) works.
    let copy = dir.join("copy.img");
    std::fs::write(&copy, &data).unwrap();
    std::os::unix::fs::chown(&copy, Some(user.uid), Some(user.gid)).unwrap();
    let o = user.run(&bin("bulwark"), &backup_args(&repo, copy.to_str().unwrap()));
    assert!(o.status.success());
    assert!(text(&o).contains("incremental"), "{}", text(&o));
    daemon.stop();
}

#[test]
fn root_backup_into_a_guarded_repository_owned_by_root_is_refused_early_leaving_nothing() {
    let test =
        "root_backup_into_a_guarded_repository_owned_by_root_is_refused_early_leaving_nothing";
    if !can_run(test, NEEDS, &["losetup", "chattr"]) {
        return;
    }
    let scratch = Scratch::new("bwbd");
    let dir = scratch.path();
    let repo = dir.join("repo");
    let o = Command::new(bin("bulwark-repo"))
        .args([
            "init",
            repo.to_str().unwrap(),
            "--immutd-socket",
            dir.join("immutd.sock").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    show("[root] bulwark-repo init", &o);
    if !o.status.success() {
        // init may itself refuse root for a guarded repository: then there is nothing to test.
        bulwark_testkit::skip!(test, "init as root refused");
    }
    let img = dir.join("disk.img");
    std::fs::write(&img, vec![5u8; 1 << 20]).unwrap();
    let dev = LoopDev::attach(&img);
    let o = Command::new(bin("bulwark"))
        .args(backup_args(&repo, dev.path()))
        .output()
        .unwrap();
    show("[root] bulwark backup", &o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("owned by root") && text(&o).contains("service user"),
        "{}",
        text(&o)
    );
    for sub in ["incoming", "locks"] {
        let left: Vec<_> = std::fs::read_dir(repo.join(sub)).unwrap().collect();
        assert!(left.is_empty(), "{sub}/ not empty: {left:?}");
    }
}
