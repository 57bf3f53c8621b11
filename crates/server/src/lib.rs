//! Bulwark's transport service: the only network listener of the system.
//!
//! TLS 1.3 only (rustls), mutual certificates issued by the repository's own CA. A client is
//! its certificate; it can back up, list, restore and verify its own jobs and nothing else.
//! There is no request that deletes or shortens anything. One thread per connection, a bounded
//! number of connections, a deadline on every frame.

mod clients;
mod conn;
mod copy;
mod error;
mod export;
mod files;
mod handlers;
mod limits;
mod locks;
mod pki;
mod receive;
mod serve;
mod tls;
mod tokens;

pub use clients::{Claim, ClientRecord, Registry};
pub use error::ServerError;
pub use files::{read_bounded, write_private};
pub use pki::{ca_fingerprint, init_pki, NetPaths};
pub use serve::{serve, ServeOptions, Server, DRAIN};
pub use tokens::{create_token, parse_duration, TokenInfo};

/// Result type of this crate.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

/// Current time by the repository host's clock, in unix seconds.
pub fn now_unix() -> i64 {
    bulwark_time::UnixTime::now().secs()
}
