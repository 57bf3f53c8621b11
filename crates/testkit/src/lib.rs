//! Shared helpers for Bulwark's tests and for `bulwark demo`. Never linked by a service.
//!
//! - [`immutd`]: a real `bulwark-immutd` child process for a repository (root only).

pub mod immutd;
