//! The shipped systemd unit of the service (issue 13 item 3): systemd creates the socket
//! and state folders the default configuration names, and the unit still parses.

use std::path::Path;
use std::process::Command;

fn unit() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/systemd/bulwark-immutd.service");
    std::fs::read_to_string(p).unwrap()
}

fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .flat_map(str::split_whitespace)
        .collect()
}

#[test]
fn the_immutd_unit_creates_its_socket_and_state_folders() {
    let u = unit();
    // The defaults of the configuration (and of the README's host set-up).
    assert_eq!(values(&u, "RuntimeDirectory"), ["bulwark"], "/run/bulwark");
    assert_eq!(values(&u, "RuntimeDirectoryMode"), ["0755"]);
    assert_eq!(
        values(&u, "StateDirectory"),
        ["bulwark-immutd"],
        "/var/lib/bulwark-immutd"
    );
    assert_eq!(values(&u, "StateDirectoryMode"), ["0700"]);
    // Listing a folder nothing creates in ReadWritePaths makes the unit fail to start.
    for p in values(&u, "ReadWritePaths") {
        assert!(
            !p.starts_with("/run/") && !p.starts_with("/var/lib/"),
            "{p} in ReadWritePaths: let systemd create it"
        );
    }

    let Ok(o) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIP the_immutd_unit_creates_its_socket_and_state_folders (systemd-analyze verify part): systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    assert!(o.status.success());
    // Verify a copy whose ExecStart is the binary just built (verify checks it exists).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("bulwark-immutd.service");
    let text = u.replace(
        "/usr/sbin/bulwark-immutd",
        env!("CARGO_BIN_EXE_bulwark-immutd"),
    );
    std::fs::write(&copy, text).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && !err.contains("bulwark-immutd.service"),
        "systemd-analyze verify: {err}"
    );
}
