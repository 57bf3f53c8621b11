//! Rigs shared by the system tests that start several binaries (filled in by the test
//! re-layout).
