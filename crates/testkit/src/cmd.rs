//! Running commands as root: a fixed PATH, output that is shown when a test fails.

use std::io::Read;
use std::process::{Child, Command, Output};

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
