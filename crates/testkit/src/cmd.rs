//! Running commands as root: a fixed PATH, output that is shown when a test fails.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};

/// The PATH every helper runs tools with (tests may run with a minimal environment).
pub const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `sh -c cmd` as the current user, panicking with its output when it fails; returns
/// its standard output.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PATH", PATH_ENV)
        .output()
        .unwrap();
    assert!(o.status.success(), "`{cmd}` failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `sh -c cmd`; its standard output when it succeeded.
pub fn sh_ok(cmd: &str) -> Option<String> {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PATH", PATH_ENV)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs `sh -c cmd`, ignoring the result (for cleanup in `Drop`).
pub fn sh_quiet(cmd: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PATH", PATH_ENV)
        .output();
}

/// A command's standard output followed by its standard error.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A command's standard error.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Everything a running `child` writes to its piped standard error, read until it closes.
pub fn read_stderr(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("the child's standard error is piped")
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// Prints what ran and what it printed (shown by the test harness when a test fails).
pub fn show(what: &str, o: &Output) {
    eprintln!("$ {what} → {}\n{}", o.status, text(o));
}

/// Runs `prog args` and echoes it with [`show`].
pub fn run(prog: &std::path::Path, args: &[&str]) -> Output {
    let o = Command::new(prog).args(args).output().unwrap();
    show(&format!("{} {}", prog.display(), args.join(" ")), &o);
    o
}

/// Runs `cmd`, which must succeed (else the test fails showing what it printed); its
/// standard output.
pub fn run_ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&output_ok(cmd).stdout).into_owned()
}

/// Runs `cmd`, which must succeed (else the test fails showing what it printed); its output.
pub fn output_ok(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    o
}

/// Runs `cmd` with its standard output a pipe whose reading end is closed before the program
/// writes (`cmd | head -0`), standard error piped; its output (stdout empty).
pub fn output_into_closed_pipe(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

/// Runs `cmd` with its standard output `/dev/full` (every write fails with `ENOSPC`),
/// standard error piped; its output.
pub fn output_onto_full_device(cmd: &mut Command) -> Output {
    let full = std::fs::File::create("/dev/full").expect("/dev/full opens for writing");
    cmd.stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"))
}

/// Checks `o`, a run of `what` into a closed pipe ([`output_into_closed_pipe`]), by the rule
/// of `bulwark_stdout`: no panic, the command's own `code`, nothing said about the output.
pub fn assert_cut_off_quietly(what: &str, o: &Output, code: i32) {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_eq!(o.status.code(), Some(code), "{what}: {err}");
    assert!(
        !err.contains("standard output"),
        "{what}: a closed pipe is not reported: {err}"
    );
}

/// Checks `o`, a run of `what` onto a failing device ([`output_onto_full_device`]), by the
/// rule of `bulwark_stdout`: no panic, exit 2, one stderr line naming `program` and what failed.
pub fn assert_output_failure_said_once(what: &str, o: &Output, program: &str) {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
    let said: Vec<_> = err
        .lines()
        .filter(|l| l.contains("cannot write to standard output"))
        .collect();
    assert_eq!(said.len(), 1, "{what}: said once: {err}");
    assert!(
        said[0].starts_with(&format!("{program}: ")),
        "{what}: names the program: {err}"
    );
}

/// Parses a command's standard output as JSON, panicking with its output when it is not.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// The text `field` of every element of the JSON array `array` (a report's list of jobs,
/// partitions, …).
pub fn strings(array: &serde_json::Value, field: &str) -> Vec<String> {
    array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"))
        .iter()
        .map(|e| {
            e[field]
                .as_str()
                .unwrap_or_else(|| panic!("no text {field} in {e}"))
                .to_string()
        })
        .collect()
}

/// The element of the JSON array `array` whose `field` is `value`.
pub fn element<'a>(
    array: &'a serde_json::Value,
    field: &str,
    value: &str,
) -> &'a serde_json::Value {
    array
        .as_array()
        .and_then(|a| a.iter().find(|e| e[field] == value))
        .unwrap_or_else(|| panic!("no element with {field} = {value:?} in {array}"))
}
