//! Finding the workspace's binaries from a test: `CARGO_BIN_EXE_<name>` when cargo set it,
//! else next to the test executable's folder (`cargo test --workspace` builds every
//! package's binaries into `target/<profile>/`, test executables into `target/<profile>/deps/`).

use std::path::PathBuf;

/// The binary `name`, when it is built.
pub fn binary(name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The binary `name`, or `None` after a printed SKIP saying how to build it.
pub fn require_binary(test: &str, name: &str) -> Option<PathBuf> {
    let b = binary(name);
    if b.is_none() {
        crate::skip::skip(
            test,
            format_args!("{name} is not built (run cargo test --workspace)"),
        );
    }
    b
}

/// The binary `name`, panicking with how to build it when it is missing.
pub fn expect_binary(name: &str) -> PathBuf {
    binary(name).unwrap_or_else(|| {
        panic!("{name} is not built next to this test: run `cargo test --workspace`")
    })
}
