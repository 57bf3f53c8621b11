//! Issue 13 item 5: a local block-device backup on a guarded host, as the README sets it up
//! (a service user owns the repository, a real `bulwark-immutd` guards it, a loop device is
//! the disk). Root's `bulwark backup` opens the device, then continues as the repository's
//! owner: the point is sealed and nothing root-owned is left in `incoming/` or `locks/`.
//! Without root these tests print why they skip.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bulwark_testkit::immutd::{find_binary, ImmutdSetup};

fn is_root() -> bool {
    bulwark_sys::effective_uid() == 0
}

macro_rules! need_root {
    ($name:literal) => {
        if !is_root() {
            eprintln!(concat!(
                "SKIPPED ",
                $name,
                ": needs root for a loop device, a service user and bulwark-immutd (CI runs as root)"
            ));
            return;
        }
    };
}

fn bin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_bulwark")).with_file_name(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo test --workspace`",
        p.display()
    );
    p
}

fn show(what: &str, o: &Output) {
    eprintln!(
        "$ {what} → {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A system user for one test, removed on drop.
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

impl User {
    fn create(tag: &str) -> User {
        let name = format!("bwb{}{tag}", std::process::id() % 100_000);
        let st = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "useradd {name}");
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        User { name, uid, gid }
    }
    fn run(&self, prog: &Path, args: &[&str]) -> Output {
        let o = Command::new(prog)
            .args(args)
            .uid(self.uid)
            .gid(self.gid)
            .output()
            .unwrap();
        show(
            &format!("[{}] {} {}", self.name, prog.display(), args.join(" ")),
            &o,
        );
        o
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// A loop device over an image file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(image: &Path) -> Loop {
        let o = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Loop(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A folder whose immutable and append-only attributes are cleared before it is removed.
struct Scratch(tempfile::TempDir);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .arg("-R")
            .arg("-i")
            .arg("-a")
            .arg(self.0.path())
            .output();
    }
}

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

fn root(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn root_backs_up_a_block_device_into_a_guarded_repository_as_its_service_user() {
    need_root!("root_backs_up_a_block_device_into_a_guarded_repository_as_its_service_user");
    let immutd_bin = match find_binary() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIPPED root_backs_up_a_block_device_into_a_guarded_repository_as_its_service_user: {e}");
            return;
        }
    };
    let user = User::create("g");
    let scratch = Scratch(tempfile::tempdir().unwrap());
    let dir = scratch.0.path();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
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
    let dev = Loop::attach(&img);
    // The service user alone cannot read the device, and is told what to do.
    let o = user.run(
        &bin("bulwark"),
        &[
            "backup",
            "--repo",
            repo.to_str().unwrap(),
            "--job",
            "disk1",
            &dev.0,
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(root(&o).contains("needs root"), "{}", root(&o));
    // Root, as the README says: opens the device, continues as the service user.
    let o = Command::new(bin("bulwark"))
        .args([
            "--json",
            "backup",
            "--repo",
            repo.to_str().unwrap(),
            "--job",
            "disk1",
            &dev.0,
        ])
        .output()
        .unwrap();
    show("[root] bulwark backup", &o);
    assert!(
        o.status.success(),
        "root's backup of the device failed: {}\n{}",
        root(&o),
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
    let o = user.run(
        &bin("bulwark"),
        &[
            "backup",
            "--repo",
            repo.to_str().unwrap(),
            "--job",
            "disk1",
            copy.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    assert!(root(&o).contains("incremental"), "{}", root(&o));
    daemon.stop();
}

#[test]
fn root_backup_into_a_guarded_repository_owned_by_root_is_refused_early_leaving_nothing() {
    need_root!(
        "root_backup_into_a_guarded_repository_owned_by_root_is_refused_early_leaving_nothing"
    );
    let scratch = Scratch(tempfile::tempdir().unwrap());
    let dir = scratch.0.path();
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
        eprintln!("SKIPPED root_backup_into_a_guarded_repository_owned_by_root_is_refused_early_leaving_nothing: init as root refused");
        return;
    }
    let img = dir.join("disk.img");
    std::fs::write(&img, vec![5u8; 1 << 20]).unwrap();
    let dev = Loop::attach(&img);
    let o = Command::new(bin("bulwark"))
        .args([
            "backup",
            "--repo",
            repo.to_str().unwrap(),
            "--job",
            "disk1",
            &dev.0,
        ])
        .output()
        .unwrap();
    show("[root] bulwark backup", &o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        root(&o).contains("owned by root") && root(&o).contains("service user"),
        "{}",
        root(&o)
    );
    for sub in ["incoming", "locks"] {
        let left: Vec<_> = std::fs::read_dir(repo.join(sub)).unwrap().collect();
        assert!(left.is_empty(), "{sub}/ not empty: {left:?}");
    }
}
