//! What Bulwark's command-line programs share: their top-level arguments ([`cli_args!`]),
//! logging to stderr, text or JSON output, progress bars, and the one mapping of errors to
//! exit codes.
//!
//! Exit codes (documented for scripts; tests rely on them):
//! - [`EXIT_OK`] 0: everything is fine;
//! - [`EXIT_DAMAGE`] 1: stored data is damaged — a restore point, block or chain a
//!   repository error reports as damage ([`bulwark_repository::RepoError::is_damage`]), the
//!   same reached through a backup or restore ([`bulwark_engine::EngineError::is_damage`]), or
//!   damaged data and `Damaged` refusals from a repository service
//!   ([`bulwark_remote::RemoteError::is_damage`]);
//! - [`EXIT_ERROR`] 2: any other error (bad arguments, unreadable source, full disk, network).
//!
//! A command that finds damage without failing (verify) returns 1 itself. A command whose
//! standard output failed with anything but a closed pipe (a full disk) exits 2: its answer
//! did not arrive ([`bulwark_stdout`]; a closed pipe, as in `… | head -1`, keeps the code).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub mod owner;

pub use bulwark_repository::human;
pub use bulwark_time::utc;

/// Exit code: everything is fine.
pub const EXIT_OK: i32 = 0;
/// Exit code: damage was found.
pub const EXIT_DAMAGE: i32 = 1;
/// Exit code: operational error.
pub const EXIT_ERROR: i32 = 2;

/// How results are printed.
pub struct Output {
    pub json: bool,
}

impl Output {
    /// A byte progress bar on stderr; hidden for JSON output or when stderr is not a terminal.
    pub fn progress(&self, total: u64, what: &str) -> ProgressBar {
        let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if self.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            pb.set_draw_target(ProgressDrawTarget::hidden());
        }
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        pb
    }

    /// Prints a JSON value (or any report that serializes) on stdout.
    pub fn json<T: serde::Serialize + ?Sized>(&self, v: &T) {
        outln!("{}", serde_json::to_string_pretty(v).expect("serializable"));
    }
}

/// `outln!` / `out!`: printing that never panics on a closed or failing standard output, by
/// the one rule of [`bulwark_stdout`] (which [`exit_with`] applies to the exit code).
pub use bulwark_stdout::{out, outln};

/// Declares a program's top-level arguments: `struct Cli` with the global `--json`, the
/// further global options written inside the braces, and `command: Command` (the program's
/// subcommand enum). A macro rather than a generic struct, so that clap takes the program's
/// name, version and about text from the crate and doc comment that use it.
#[macro_export]
macro_rules! cli_args {
    ($(#[$attr:meta])* struct Cli { $($field:tt)* }) => {
        $(#[$attr])*
        #[derive(::clap::Parser)]
        #[command(version, about, long_about = None)]
        struct Cli {
            /// Print machine-readable JSON instead of text.
            #[arg(long, global = true)]
            json: bool,
            $($field)*
            #[command(subcommand)]
            command: Command,
        }
    };
}

/// Sends `tracing` events to stderr at the level `$BULWARK_LOG` names (default
/// `default_level`), in colour only when stderr is a terminal.
pub fn log_to_stderr(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BULWARK_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Exit code for an error: 1 when any cause in its chain reports damaged data, else 2.
pub fn exit_code_of(e: &anyhow::Error) -> i32 {
    let damage = e.chain().any(|cause| {
        cause
            .downcast_ref::<bulwark_repository::RepoError>()
            .is_some_and(|x| x.is_damage())
            || cause
                .downcast_ref::<bulwark_engine::EngineError>()
                .is_some_and(|x| x.is_damage())
            || cause
                .downcast_ref::<bulwark_remote::RemoteError>()
                .is_some_and(|x| x.is_damage())
    });
    if damage {
        EXIT_DAMAGE
    } else {
        EXIT_ERROR
    }
}

/// Ends a command-line program: exits with the command's code, or prints the error with its
/// causes (`error: what: why`) on stderr and exits with [`exit_code_of`] it; either becomes 2
/// once standard output failed with anything but a closed pipe ([`bulwark_stdout::exit_code`]).
pub fn exit_with(res: anyhow::Result<i32>) -> ! {
    match res {
        Ok(code) => bulwark_stdout::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            bulwark_stdout::exit(exit_code_of(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_protocol::ErrorCode;
    use bulwark_remote::RemoteError;
    use bulwark_repository::RepoError;

    fn broken_chain() -> RepoError {
        RepoError::BrokenChain {
            point: "p".into(),
            missing: "m".into(),
            why: "parent missing".into(),
        }
    }

    /// A repository service's refusal with `code`.
    fn refused(code: ErrorCode) -> anyhow::Error {
        anyhow::Error::new(RemoteError::Refused {
            code,
            message: "m".into(),
        })
    }

    #[test]
    fn damage_anywhere_in_the_chain_is_exit_1() {
        let e = anyhow::Error::new(broken_chain()).context("verifying");
        assert_eq!(exit_code_of(&e), EXIT_DAMAGE);
        let e = anyhow::Error::new(bulwark_engine::EngineError::Repo(broken_chain()));
        assert_eq!(exit_code_of(&e), EXIT_DAMAGE);
        let e = anyhow::Error::new(RemoteError::Damaged("block 7".into())).context("restoring");
        assert_eq!(exit_code_of(&e), EXIT_DAMAGE);
        assert_eq!(exit_code_of(&refused(ErrorCode::Damaged)), EXIT_DAMAGE);
    }

    #[test]
    fn every_other_error_is_exit_2() {
        assert_eq!(exit_code_of(&anyhow::anyhow!("bad argument")), EXIT_ERROR);
        let io = std::io::Error::other("disk full");
        assert_eq!(exit_code_of(&anyhow::Error::new(io)), EXIT_ERROR);
        assert_eq!(exit_code_of(&refused(ErrorCode::Limit)), EXIT_ERROR);
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40 UTC");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 << 30), "5.0 GiB");
    }
}
