//! `bulwark-immutd` prints by the rule of every Bulwark program (`bulwark_stdout`): into a
//! pipe whose reader has gone (`bulwark-immutd status | head -1`) it neither panics (exit 101)
//! nor says anything, and keeps its code; onto a failing device (`/dev/full`) it says so once
//! on stderr and exits 2. `--help` prints without root or a configuration.

use std::process::Command;

use bulwark_testkit::cmd::{
    assert_cut_off_quietly, assert_output_failure_said_once, output_into_closed_pipe,
    output_onto_full_device,
};

#[test]
fn immutd_output_into_a_closed_pipe_or_onto_a_full_device() {
    let help = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulwark-immutd"));
        cmd.arg("--help");
        cmd
    };
    let o = output_into_closed_pipe(&mut help());
    assert_cut_off_quietly("--help | head -0", &o, 0);
    let o = output_onto_full_device(&mut help());
    assert_output_failure_said_once("--help > /dev/full", &o, "bulwark-immutd");
    assert_eq!(o.stderr.iter().filter(|&&b| b == b'\n').count(), 1);
}
