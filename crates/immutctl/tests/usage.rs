//! `bulwark-immutctl` answers bad usage with its usage text and exit 2, and a missing socket
//! with an operational error (exit 2), without a request. (This test also makes
//! `cargo test --workspace` build the binary, which the immutability service's tests run as a
//! real unprivileged user.)

use std::process::Command;

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark-immutctl"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bad_usage_prints_the_usage_and_exits_2() {
    for args in [&[][..], &["status"], &["status", "--socket"]] {
        let o = ctl(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("usage: bulwark-immutctl"), "{args:?}: {err}");
    }
}

#[test]
fn a_missing_socket_is_an_operational_error() {
    let o = ctl(&["--socket", "/nonexistent/immutd.sock", "status"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&o.stderr).is_empty());
}
