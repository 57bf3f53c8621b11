//! A package's normal dependency tree, for the tests that pin what a binary links.

use std::collections::BTreeSet;
use std::process::Command;

/// The names of every crate in `package`'s normal (non-dev, non-build) dependency tree, from
/// `cargo tree --offline` run in `manifest_dir`; panics when cargo tree fails.
pub fn normal_tree(package: &str, manifest_dir: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(manifest_dir)
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}
