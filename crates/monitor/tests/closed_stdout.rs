//! `bulwark-monitor check` whose standard output is gone (`bulwark-monitor check … | head -1`
//! after `head` exits) or fails (`/dev/full`) does not panic: a closed pipe drops the rest of
//! the output and keeps the check's exit code (0 nothing to report, 1 a condition); any other
//! write error is one line on stderr and exit 2 (an operational error). The state is still
//! written either way.

mod common;

use bulwark_testkit::cmd::{
    assert_cut_off_quietly, assert_output_failure_said_once, output_into_closed_pipe,
    output_onto_full_device,
};
use common::Staged;

/// An unguarded repository with no notification channel; with `left`, a `not_sealed`
/// condition.
fn stage(left: bool) -> Staged {
    Staged::new(left, "# no channel\n")
}

#[test]
fn check_into_a_closed_pipe_keeps_its_exit_code_without_panicking() {
    for (left, code) in [(false, 0), (true, 1)] {
        for json in [false, true] {
            let s = stage(left);
            let o = output_into_closed_pipe(&mut s.check(json));
            assert_cut_off_quietly(&format!("left={left} json={json}"), &o, code);
            assert!(
                s.dir.path().join("state").join("sent.json").exists(),
                "the state is written after the output"
            );
        }
    }
}

#[test]
fn check_onto_a_full_device_says_so_on_stderr_and_exits_2() {
    for left in [false, true] {
        let s = stage(left);
        let o = output_onto_full_device(&mut s.check(false));
        assert_output_failure_said_once(&format!("left={left}"), &o, "bulwark-monitor");
        assert!(
            s.dir.path().join("state").join("sent.json").exists(),
            "the state is written although the output failed"
        );
    }
}
