//! Output helpers: text or JSON, progress bars, exit codes.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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

    /// Prints a JSON value on stdout.
    pub fn json(&self, v: &serde_json::Value) {
        println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
    }
}

/// Exit code for an error: 1 when it reports damaged data, else 2.
pub fn exit_code_of(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(x) = cause.downcast_ref::<bulwark_engine::EngineError>() {
            if x.is_damage() {
                return EXIT_DAMAGE;
            }
        }
        if let Some(x) = cause.downcast_ref::<bulwark_remote::RemoteError>() {
            if x.is_damage() {
                return EXIT_DAMAGE;
            }
        }
        if let Some(x) = cause.downcast_ref::<bulwark_repository::RepoError>() {
            if x.is_damage() {
                return EXIT_DAMAGE;
            }
        }
    }
    EXIT_ERROR
}

pub use bulwark_repository::{human, utc};

#[cfg(test)]
mod tests {
    use super::*;

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
