//! Standard output for every Bulwark program, by one rule.
//!
//! `println!` panics (exit 101) when standard output is a pipe whose reader has gone, as in
//! `bulwark list | head -1`, or a device that fails, as `/dev/full`. Every Bulwark program
//! prints through [`outln!`] and [`out!`] instead, which never panic:
//!
//! - **A closed pipe** (`EPIPE`): the rest of the output is dropped silently and the program
//!   carries on, so a backup still finishes and a check still writes its state, and the exit
//!   code is the command's own. The reader chose to stop reading; nothing went wrong.
//! - **Any other write error** (a full disk, an I/O error): the rest of the output is dropped,
//!   one line on stderr names the error, and [`exit_code`] turns the command's code into 2
//!   (an operational error): the answer did not reach whoever asked for it. The work itself
//!   stands, and the stderr line says so.
//!
//! No dependencies, so the immutability service's own client may link it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once standard output is found closed or failing: the rest of the output is dropped.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// Set when that was a write error other than a closed pipe.
static FAILED: AtomicBool = AtomicBool::new(false);

/// Exit code of a command whose output did not arrive (see [`exit_code`]).
pub const EXIT_OUTPUT_FAILED: i32 = 2;

/// Writes `args` to standard output and flushes it, never panicking (see the crate doc).
pub fn print(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if CLOSED.swap(true, Ordering::Relaxed) {
            return;
        }
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            FAILED.store(true, Ordering::Relaxed);
            eprintln!(
                "{}: cannot write to standard output ({e}); the rest of the output is \
                 dropped (check where standard output goes)",
                program_name()
            );
        }
    }
}

/// True once a write to standard output failed with anything but a closed pipe.
pub fn failed() -> bool {
    FAILED.load(Ordering::Relaxed)
}

/// The exit code a program ends with: `code`, or [`EXIT_OUTPUT_FAILED`] (2) once standard
/// output failed with anything but a closed pipe.
pub fn exit_code(code: i32) -> i32 {
    if failed() {
        EXIT_OUTPUT_FAILED
    } else {
        code
    }
}

/// Ends the program with [`exit_code`]`(code)`.
pub fn exit(code: i32) -> ! {
    std::process::exit(exit_code(code))
}

/// The name the stderr line uses for this program: the file name it was started as.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bulwark".into())
}

/// `println!` that never panics: see [`print`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that never panics: see [`print`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::print(format_args!($($arg)*))
    };
}
