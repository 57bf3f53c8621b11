//! A repository created without a network identity (before the transport service existed)
//! gets one with `bulwark-repo init DIR --add-network`, keeps its restore points, and is then
//! enrollable; a second `--add-network` is refused and changes nothing.

use std::process::{Command, Output};

fn repo_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark-repo"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn add_network_gives_an_old_repository_its_identity_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let d = dir.to_str().unwrap();
    // A repository as the foundation created it: the layout, no `net/`.
    let repo = bulwark_repository::Repository::init(&dir, 7).unwrap();
    let id = repo.config().id.clone();
    assert!(!dir.join("net").exists());

    let o = repo_cli(&["enroll", d, "--client", "alice"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--add-network"),
        "the refusal does not say what to do: {}",
        text(&o.stderr)
    );

    let o = repo_cli(&["--json", "init", d, "--add-network"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["id"], id.as_str());
    let fp = v["fingerprint"].as_str().unwrap().to_string();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    // The same repository (its id) and now enrollable, with the fingerprint just printed.
    assert_eq!(
        bulwark_repository::Repository::open(&dir)
            .unwrap()
            .config()
            .id,
        id
    );
    let o = repo_cli(&["--json", "enroll", d, "--client", "alice"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fingerprint"], fp.as_str());

    // Twice is refused, and the CA stays the one clients pinned.
    let ca = std::fs::read(dir.join("net/ca.crt")).unwrap();
    let o = repo_cli(&["init", d, "--add-network"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("already has a network identity"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read(dir.join("net/ca.crt")).unwrap(), ca);

    // Run by someone other than the repository's owner (root, say): refused, since the keys
    // would be unreadable to the service.
    let other = tmp.path().join("other");
    bulwark_repository::Repository::init(&other, 7).unwrap();
    if std::os::unix::fs::chown(&other, Some(65534), Some(65534)).is_ok() {
        let o = repo_cli(&["init", other.to_str().unwrap(), "--add-network"]);
        assert!(!o.status.success());
        assert!(
            text(&o.stderr).contains("run it as the repository's owner"),
            "{}",
            text(&o.stderr)
        );
        assert!(!other.join("net").exists());
    } else {
        eprintln!(
            "note: not root, so the refusal of a repository owned by someone else is not checked"
        );
    }

    // Not a repository: refused, nothing created.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = repo_cli(&["init", empty.to_str().unwrap(), "--add-network"]);
    assert!(!o.status.success());
    assert!(!empty.join("net").exists());
}
