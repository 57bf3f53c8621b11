//! `bulwark-monitor` usage: unknown events and a missing repository are operational errors
//! (exit 2) that say what to do; `send` with no channel still writes the journal line. (The
//! staged events are in crates/system-tests/tests/operations.rs.)

use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bulwark-monitor")
}

#[test]
fn an_unknown_event_is_refused_with_the_list_of_events() {
    let o = Command::new(bin())
        .args(["send", "disk_on_fire", "x", "y"])
        .env("BULWARK_NOTIFY_CONFIG", "/nonexistent/notify.toml")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown event") && err.contains("tier_sync_failed"),
        "{err}"
    );
}

#[test]
fn send_without_channels_writes_the_structured_journal_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("notify.toml");
    std::fs::write(&cfg, "# no channel\n").unwrap();
    let o = Command::new(bin())
        .args([
            "send",
            "tier_sync_failed",
            "bulwark-tier-sync.service",
            "sync failed",
        ])
        .arg("--notify-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "<4>bulwark-event event=tier_sync_failed subject=\"bulwark-tier-sync.service\""
        ) && err.contains("message=\"sync failed\""),
        "{err}"
    );
}

#[test]
fn check_of_a_missing_repository_says_which_folder() {
    let o = Command::new(bin())
        .args(["check", "/nonexistent/repo", "--state-dir", "/tmp"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/repo"), "{err}");
}
