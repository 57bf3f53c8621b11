//! Bulwark's Debian packages. This crate holds no code: its manifest describes the two
//! packages for `cargo deb` (`[package.metadata.deb]`, the `repository` variant), and its
//! tests build them, check their contents and units, and install, upgrade and purge them in a
//! throw-away Debian root (docs/install.md).
