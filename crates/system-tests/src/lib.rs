//! Bulwark's system tests live in `tests/`: each starts several of the workspace's binaries
//! (`bulwark`, `bulwark-repo`, `bulwark-tier`, `bulwark-immutd`, `bulwark-immutctl`) on a
//! guarded repository, found next to the test executable (`cargo test --workspace` builds
//! them). Shared helpers are in `bulwark-testkit`. This library is empty.
