//! Shared helpers for Bulwark's tests and for `bulwark demo`. Never linked by a service.
//!
//! - [`immutd`]: a real `bulwark-immutd` child process for a repository (root only).
//! - [`skip`]: the one way a test skips, `SKIP <test>: <reason>` ([`skip!`]).
//! - [`user`]: a throw-away service user and running programs as it (root only).
//! - [`fs`]: scratch folders, loop devices, mounts, loop-mounted ext4/XFS.
//! - [`bins`]: the workspace's binaries, found via `CARGO_BIN_EXE_*` or next to the test.
//! - [`cmd`]: running tools with a fixed PATH, showing their output.
//! - [`guarded`]: a guarded repository rig (user, filesystem, service setup) for root tests.
//! - [`rng`]: a deterministic random generator.
//! - [`chromium`]: headless Chromium: a page's DOM, its network log, screenshots.
//! - [`serve`]: the transport service and enrolled clients, as the network tests start them.
//! - [`system`]: rigs shared by the system tests.
//! - [`images`]: test images and the checks run on them.
//! - [`deps`]: a package's normal dependency tree (for the tests that pin it).
//! - [`vm`]: a running disk under qemu-storage-daemon, its writing guest, and qemu-nbd.

pub mod bins;
pub mod chromium;
pub mod cmd;
pub mod deps;
pub mod fs;
pub mod guarded;
pub mod images;
pub mod immutd;
pub mod keys;
pub mod rng;
pub mod serve;
pub mod skip;
pub mod system;
pub mod user;
pub mod vm;
pub mod webhook;

pub use bins::{binary, expect_binary, require_binary};
pub use cmd::{run_ok, sh, show, text};
pub use fs::{FsKind, LoopDev, LoopFs, Mount, Scratch};
pub use rng::Rng;
pub use skip::{can_run, is_root, require_root, require_tools};
pub use user::{run_as, TestUser};
