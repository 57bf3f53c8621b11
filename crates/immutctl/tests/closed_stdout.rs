//! `bulwark-immutctl` whose standard output is gone (`bulwark-immutctl … status | head -1`
//! after `head` exits) or fails (`/dev/full`) does not panic: a closed pipe drops the rest of
//! the answer and keeps the request's exit code (0 ok, 3 refused); any other write error is
//! one line on stderr and exit 2. The service is a stand-in on a Unix socket that answers the
//! one request with a canned frame, so no root and no running service are needed.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Command;
use std::thread::JoinHandle;

use bulwark_immut_msg::{read_frame, write_frame, ErrorCode, Response, StatusInfo};
use bulwark_testkit::cmd::{
    assert_cut_off_quietly, assert_output_failure_said_once, output_into_closed_pipe,
    output_onto_full_device, stderr,
};

/// A socket in its own temporary folder that answers one request with `answer`.
struct FakeService {
    dir: PathBuf,
    socket: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl FakeService {
    fn answering(name: &str, answer: Response) -> FakeService {
        let dir =
            std::env::temp_dir().join(format!("bulwark-immutctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("immutd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let thread = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            read_frame(&mut s).unwrap();
            write_frame(&mut s, &answer.encode()).unwrap();
        });
        FakeService {
            dir,
            socket,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeService {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let joined = t.join();
            if !std::thread::panicking() {
                joined.expect("the stand-in service got its request and answered");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A status with enough alerts that the answer is many lines.
fn status() -> Response {
    Response::Status(StatusInfo {
        trusted_unix: 1_795_000_000,
        wall_unix: 1_795_000_000,
        protection_alerts: (0..50).map(|n| format!("alert {n}")).collect(),
        ..StatusInfo::default()
    })
}

fn refusal() -> Response {
    Response::Error {
        code: ErrorCode::NotPermitted,
        message: "only root may ask this".into(),
    }
}

/// `bulwark-immutctl --socket S status`.
fn status_of(svc: &FakeService) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulwark-immutctl"));
    cmd.arg("--socket").arg(&svc.socket).arg("status");
    cmd
}

#[test]
fn status_into_a_closed_pipe_exits_0_quietly_without_panicking() {
    let svc = FakeService::answering("pipe-ok", status());
    let o = output_into_closed_pipe(&mut status_of(&svc));
    assert_cut_off_quietly("status | head -0", &o, 0);
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn a_refusal_into_a_closed_pipe_still_exits_3() {
    let svc = FakeService::answering("pipe-refused", refusal());
    let o = output_into_closed_pipe(&mut status_of(&svc));
    assert_cut_off_quietly("refused status | head -0", &o, 3);
}

#[test]
fn status_onto_a_full_device_says_so_on_stderr_and_exits_2() {
    let svc = FakeService::answering("full", status());
    let o = output_onto_full_device(&mut status_of(&svc));
    assert_output_failure_said_once("status > /dev/full", &o, "bulwark-immutctl");
    assert_eq!(stderr(&o).lines().count(), 1, "nothing else said");
}
