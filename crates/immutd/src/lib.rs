//! The Bulwark immutability service: a small root-only process with no network that seals
//! restore points with the immutable attribute, keeps a root-owned ledger of their expiries,
//! and unlocks them only when its own trusted clock says the period is over.
//!
//! The pure cores ([`expiry`], [`clock`]) hold the decisions; [`repo`] does the filesystem
//! side of sealing; [`service`] applies the policy to requests; [`server`] is the socket.

pub mod atomic;
pub mod audit;
pub mod clock;
pub mod config;
pub mod error;
pub mod expiry;
pub mod ledger;
pub mod repo;
pub mod server;
pub mod service;
mod toml_lite;

pub use config::Config;
pub use error::{ImmutdError, ReqError};
pub use service::Service;
