//! `bulwark-repo install` on a fresh XFS volume (a loop device), as root: the service user's
//! guarded repository, the immutability service's configuration, the firewall snippet; the
//! service started from that configuration exactly as its unit does; `bulwark-repo audit`
//! passes; then a deliberately weakened host (the folder opened to others, the service
//! stopped) is named by audit finding by finding. Without root it skips.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use bulwark_testkit::guarded::{immutd_bin, wait_for};
use bulwark_testkit::{require_root, sh, show, FsKind, LoopFs, TestUser};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bulwark-repo"))
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn audit(user: &TestUser, repo: &Path) -> (Option<i32>, serde_json::Value) {
    let o = user.run(&bin(), &["--json", "audit", repo.to_str().unwrap()]);
    (o.status.code(), serde_json::from_slice(&o.stdout).unwrap())
}

fn level_of(v: &serde_json::Value, check: &str) -> String {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .map(|f| f["level"].as_str().unwrap().to_string())
        .next()
        .unwrap_or_else(|| panic!("no finding {check}: {v}"))
}

#[test]
fn install_takes_a_fresh_xfs_volume_to_an_audited_repository_and_audit_names_each_weakening() {
    let test =
        "install_takes_a_fresh_xfs_volume_to_an_audited_repository_and_audit_names_each_weakening";
    if !require_root(
        test,
        "a loop-mounted XFS volume, a system user and bulwark-immutd",
    ) {
        return;
    }
    if !bulwark_testkit::can_run(test, "XFS on a loop device", &["mkfs.xfs", "chattr"]) {
        return;
    }
    let user = TestUser::create();
    let fs = LoopFs::new(FsKind::Xfs);
    let etc = tempfile::tempdir().unwrap();
    std::fs::set_permissions(etc.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = etc.path().join("run");
    let repo = fs.mnt.join("srv/repo");
    let socket = run.join("immutd.sock");
    let state = etc.path().join("state");
    let args = [
        "--json",
        "install",
        "--repo",
        repo.to_str().unwrap(),
        "--user",
        &user.name,
        "--etc",
        etc.path().to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--immutable-days",
        "7",
        "--no-start",
    ];
    let o = Command::new(bin()).args(args).output().unwrap();
    show("bulwark-repo install", &o);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["uid"].as_u64(), Some(u64::from(user.uid)));
    assert!(
        v["fingerprint"].as_str().is_some_and(|f| f.len() >= 32),
        "{v}"
    );
    let nft = std::fs::read_to_string(etc.path().join("nftables-bulwark.nft")).unwrap();
    assert!(nft.contains("tcp dport 6162 ct state new accept") && nft.contains("policy drop"));
    if bulwark_testkit::skip::has_tool("nft") {
        let o = Command::new("nft")
            .arg("-c")
            .arg("-f")
            .arg(etc.path().join("nftables-bulwark.nft"))
            .output()
            .unwrap();
        show("nft -c -f", &o);
        assert!(o.status.success(), "nft refused the snippet");
    } else {
        eprintln!("SKIP {test} (nft -c part): nft is not installed (apt-get install nftables)");
    }
    let meta = std::fs::metadata(&repo).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), user.uid);
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);

    // The immutability service from the written configuration, as bulwark-immutd.service runs it.
    std::fs::create_dir_all(&run).unwrap();
    let cfg = etc.path().join("immutd.toml");
    let child = Command::new(immutd_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(etc.path().join("immutd.log")).unwrap())
        .spawn()
        .unwrap();
    let svc = Service(child);
    assert!(
        wait_for(15, || bulwark_immut_msg::ImmutClient::connect(&socket)
            .is_ok()),
        "bulwark-immutd did not start from the installed configuration: {}",
        std::fs::read_to_string(etc.path().join("immutd.log")).unwrap_or_default()
    );
    // It locks repository.toml at start; give it a moment.
    assert!(
        wait_for(10, || audit(&user, &repo).0 == Some(0)),
        "audit fails on a fresh install: {}",
        audit(&user, &repo).1
    );
    let (_, v) = audit(&user, &repo);
    for check in [
        "service user",
        "folder mode",
        "immutability",
        "trusted clock",
        "settings",
        "block cloning",
    ] {
        assert_eq!(level_of(&v, check), "PASS", "{check}: {v}");
    }
    // Installing again changes nothing and keeps root's configuration.
    let before = std::fs::read(&cfg).unwrap();
    let o = Command::new(bin()).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&cfg).unwrap(), before);

    // Weakened: the repository folder opened to others (root clears append-only to do it).
    sh(&format!(
        "chattr -a '{}' && chmod 0755 '{}'",
        repo.display(),
        repo.display()
    ));
    let (code, v) = audit(&user, &repo);
    assert_eq!(code, Some(1));
    assert_eq!(level_of(&v, "folder mode"), "FAIL", "{v}");
    assert_eq!(level_of(&v, "store cannot be renamed"), "WARN", "{v}");
    // And the immutability service stopped.
    drop(svc);
    let (code, v) = audit(&user, &repo);
    assert_eq!(code, Some(1));
    assert_eq!(level_of(&v, "folder mode"), "FAIL");
    assert_eq!(level_of(&v, "immutability"), "FAIL", "{v}");
    sh(&format!(
        "chattr -R -i -a '{}' 2>/dev/null; true",
        state.display()
    ));
    sh(&format!(
        "chattr -R -i -a '{}' 2>/dev/null; true",
        fs.mnt.display()
    ));
}
