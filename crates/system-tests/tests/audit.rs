//! `bulwark-repo audit` on real hosts' states: a guarded repository passes the checks that
//! can fail; a public listener is named; a stopped immutability service and an unguarded
//! repository fail the audit (exit 1) with what to do. Root only (a real service user, a
//! loop-mounted filesystem and the real bulwark-immutd).

use bulwark_testkit::guarded::*;
use bulwark_testkit::system::user_dir;

/// The findings of `bulwark-repo --json audit DIR` run as `u`, with its exit code.
fn audit(u: &TestUser, bin: &std::path::Path, dir: &str) -> (i32, serde_json::Value) {
    let o = run_as(u, bin, &["--json", "audit", dir]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "audit printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

/// Level and detail of the finding named `check`.
fn finding(v: &serde_json::Value, check: &str) -> (String, String) {
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no finding {check:?} in {v}"));
    (
        f["level"].as_str().unwrap().to_string(),
        f["detail"].as_str().unwrap().to_string(),
    )
}

#[test]
fn audit_passes_a_guarded_repository_and_fails_unguarded_or_unattended_ones() {
    let name = "audit_passes_a_guarded_repository_and_fails_unguarded_or_unattended_ones";
    let Some(sys) = System::guarded(name, &["mkfs.ext4", "useradd", "chattr"], FsKind::Ext4) else {
        return;
    };
    let (rig, u, repo, repo_bin) = (&sys.rig, sys.user(), sys.repo.clone(), &sys.repo_bin);
    let svc = rig.start();
    let img = sys.image("d.img", &b"disk content ".repeat(50_000));
    let o = sys.backup(false, "a", &img);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A listener on every address, as a forgotten service would be.
    let open = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = open.local_addr().unwrap().port();

    let (code, v) = audit(u, repo_bin, &repo);
    for check in [
        "service user",
        "folder mode",
        "immutability",
        "sealed store",
        "store cannot be renamed",
    ] {
        assert_eq!(finding(&v, check).0, "PASS", "{check}: {v}");
    }
    assert!(
        finding(&v, "immutability").1.contains("files locked"),
        "{v}"
    );
    let (level, detail) = finding(&v, "open ports");
    assert_eq!(level, "WARN");
    assert!(
        detail.contains(&port.to_string()),
        "port {port} not named: {detail}"
    );
    assert_eq!((code, v["ok"].as_bool()), (0, Some(true)), "{v}");
    drop(open);

    // The immutability service stopped: the audit fails and says so.
    svc.stop();
    let (code, v) = audit(u, repo_bin, &repo);
    let (level, detail) = finding(&v, "immutability");
    assert_eq!(level, "FAIL");
    assert!(detail.contains("does not answer"), "{detail}");
    assert_eq!((code, v["ok"].as_bool()), (1, Some(false)));

    // A repository nobody guards, in a folder others can read: two failures, each with the fix.
    let loose = user_dir(u, rig.fs.mnt.join("loose"));
    let loose = loose.to_str().unwrap();
    assert!(run_as(u, repo_bin, &["init", loose]).status.success());
    u.sh(&format!("chmod 755 {loose}"));
    let (code, v) = audit(u, repo_bin, loose);
    let (level, detail) = finding(&v, "immutability");
    assert_eq!(level, "FAIL");
    assert!(detail.contains("NOT immutable"), "{detail}");
    let (level, detail) = finding(&v, "folder mode");
    assert_eq!(level, "FAIL");
    assert!(detail.contains("chmod 700"), "{detail}");
    assert_eq!(code, 1);
}
