//! Restores onto block devices and the files a restore leaves (issue 13 items 3 and 4):
//! a mounted device is refused and stays intact, a device holding a filesystem needs
//! `force`, the partial file of a killed restore is removed by the next one, and a disk over
//! 1 PiB is refused before a backup begins. The loop-device tests need root and print
//! `SKIP` otherwise; every loop device and mount is released by a guard.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bulwark_engine::*;
use bulwark_repository::Repository;
use bulwark_testkit::{sh, LoopDev as Loop, Mount, Rng};

const NEEDS: &str = "loop devices and mounts";

/// A scratch folder, once root and `tools` are there (else the test skips).
fn scratch(test: &str, tools: &[&str]) -> Option<tempfile::TempDir> {
    bulwark_testkit::can_run(test, NEEDS, tools).then(|| tempfile::tempdir().unwrap())
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(n)
}

/// A repository with one full backup of a 16 MiB image; returns it and the image.
fn backed_up(dir: &Path) -> (Repository, PathBuf) {
    let img = dir.join("source.img");
    let f = File::create(&img).unwrap();
    f.set_len(16 << 20).unwrap();
    f.write_all_at(&pattern(3 << 20, 7), 1 << 20).unwrap();
    f.write_all_at(&pattern(1 << 20, 9), 12 << 20).unwrap();
    let repo = Repository::init(&dir.join("repo"), 7).unwrap();
    backup_local(&repo, "vm", &img, &BackupOptions::default(), &|_| {}).unwrap();
    (repo, img)
}

fn restore(repo: &Repository, target: &Path, force: bool) -> Result<(), EngineError> {
    restore_local(
        repo,
        "vm",
        None,
        target,
        &RestoreOptions {
            force,
            ..Default::default()
        },
        &|_| {},
    )
    .map(|_| ())
}

/// A loop device on a `mib` MiB image `name` in `dir`, holding an empty ext4 filesystem when
/// `ext4`.
fn device(dir: &Path, name: &str, mib: u64, ext4: bool) -> Loop {
    let img = dir.join(name);
    sh(&format!("truncate -s {mib}M {}", img.display()));
    if ext4 {
        sh(&format!("mkfs.ext4 -q -F {}", img.display()));
    }
    Loop::attach(&img)
}

fn digest(p: &Path, len: u64) -> blake3::Hash {
    let f = File::open(p).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    blake3::hash(&buf)
}

#[test]
fn restore_onto_a_mounted_loop_device_is_refused_and_leaves_it_intact() {
    let test = "restore_onto_a_mounted_loop_device_is_refused_and_leaves_it_intact";
    let Some(dir) = scratch(test, &["losetup", "mkfs.ext4", "mount"]) else {
        return;
    };
    let (repo, _) = backed_up(dir.path());
    let lo = device(dir.path(), "dev.img", 32, true);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!("mount {} {}", lo.dev.display(), mnt.display()));
    let m = Mount(mnt.clone());
    std::fs::write(mnt.join("precious"), b"live data").unwrap();
    sh("sync");
    // Refused even with force: force never overrides a live filesystem.
    for force in [false, true] {
        let e = restore(&repo, &lo.dev, force).unwrap_err().to_string();
        assert!(
            e.contains("mounted at") && e.contains("umount"),
            "force={force}: {e}"
        );
    }
    assert_eq!(std::fs::read(mnt.join("precious")).unwrap(), b"live data");
    drop(m);
    // The filesystem is whole (unmounting updated its superblock, nothing else wrote).
    sh(&format!("e2fsck -n -f {}", lo.dev.display()));
    sh(&format!("mount {} {}", lo.dev.display(), mnt.display()));
    let _m = Mount(mnt.clone());
    assert_eq!(std::fs::read(mnt.join("precious")).unwrap(), b"live data");
}

#[test]
fn restore_onto_a_device_claimed_by_another_program_is_refused() {
    let test = "restore_onto_a_device_claimed_by_another_program_is_refused";
    let Some(dir) = scratch(test, &["losetup"]) else {
        return;
    };
    let (repo, _) = backed_up(dir.path());
    let lo = device(dir.path(), "dev.img", 32, false);
    // An exclusive opener (as mount, swapon, LVM and mdadm are): O_EXCL of a block device.
    use std::os::unix::fs::OpenOptionsExt;
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(bulwark_sys::open::EXCL)
        .open(&lo.dev)
        .unwrap();
    let e = restore(&repo, &lo.dev, true).unwrap_err().to_string();
    assert!(e.contains("in use"), "{e}");
    drop(holder);
    restore(&repo, &lo.dev, false).unwrap();
}

#[test]
fn a_device_holding_an_ext4_filesystem_needs_force() {
    let test = "a_device_holding_an_ext4_filesystem_needs_force";
    let Some(dir) = scratch(test, &["losetup", "mkfs.ext4"]) else {
        return;
    };
    let (repo, img) = backed_up(dir.path());
    let lo = device(dir.path(), "dev.img", 32, true);
    let before = digest(&lo.dev, 32 << 20);
    let e = restore(&repo, &lo.dev, false).unwrap_err().to_string();
    assert!(e.contains("ext2/3/4") && e.contains("--force"), "{e}");
    assert_eq!(digest(&lo.dev, 32 << 20), before, "written without --force");
    restore(&repo, &lo.dev, true).unwrap();
    assert_eq!(digest(&lo.dev, 16 << 20), digest(&img, 16 << 20));
    // A blank device needs no force.
    let blank = device(dir.path(), "blank.img", 16, false);
    restore(&repo, &blank.dev, false).unwrap();
    assert_eq!(digest(&blank.dev, 16 << 20), digest(&img, 16 << 20));
}

/// A pid that no process has now.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    pid
}

#[test]
fn a_stale_partial_file_of_a_killed_restore_is_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, img) = backed_up(dir.path());
    let target = dir.path().join("out.img");
    // What `kill -9` of a restore leaves: a full-size hidden partial file.
    let stale = dir
        .path()
        .join(format!(".out.img.bulwark-partial-{}", dead_pid()));
    File::create(&stale).unwrap().set_len(16 << 20).unwrap();
    // A restore still running (a live process holding its partial file locked) is left alone.
    let mut live = Command::new("sleep").arg("30").spawn().unwrap();
    let running = dir
        .path()
        .join(format!(".out.img.bulwark-partial-{}", live.id()));
    File::create(&running).unwrap();
    // Partial files of another target are not this run's business.
    let other = dir
        .path()
        .join(format!(".other.img.bulwark-partial-{}", dead_pid()));
    File::create(&other).unwrap();
    restore(&repo, &target, false).unwrap();
    let _ = live.kill();
    let _ = live.wait();
    assert!(!stale.exists(), "the stale partial file is still there");
    assert!(
        running.exists(),
        "the partial file of a live restore was removed"
    );
    assert!(other.exists());
    assert_eq!(digest(&target, 16 << 20), digest(&img, 16 << 20));
    // This run left no partial file of its own.
    let own = dir
        .path()
        .join(format!(".out.img.bulwark-partial-{}", std::process::id()));
    assert!(!own.exists());
}

#[test]
fn a_local_backup_of_a_disk_over_1_pib_is_refused() {
    let test = "a_local_backup_of_a_disk_over_1_pib_is_refused";
    let Some(dir) = scratch(test, &["mkfs.xfs", "mount"]) else {
        return;
    };
    // XFS holds sparse files up to 8 EiB (ext4 stops at 16 TiB).
    let fimg = dir.path().join("xfs.img");
    sh(&format!("truncate -s 320M {}", fimg.display()));
    sh(&format!("mkfs.xfs -q {}", fimg.display()));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!(
        "mount -o loop {} {}",
        fimg.display(),
        mnt.display()
    ));
    let _m = Mount(mnt.clone());
    let repo = Repository::init(&dir.path().join("repo"), 7).unwrap();
    // One block past the bound, and the 1 EiB all-zero full of issue 13.
    for size in [(1u64 << 50) + 4096, 1 << 60] {
        let src = mnt.join("huge.img");
        File::create(&src).unwrap().set_len(size).unwrap();
        let e = backup_local(&repo, "huge", &src, &BackupOptions::default(), &|_| {})
            .err()
            .unwrap_or_else(|| panic!("a {size}-byte disk was backed up"))
            .to_string();
        assert!(e.contains("1 PiB"), "{e}");
    }
    // Nothing was begun: no restore point, no partial file.
    let incoming: Vec<_> = std::fs::read_dir(dir.path().join("repo/incoming"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(incoming.is_empty(), "{incoming:?}");
}
