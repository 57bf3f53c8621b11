//! The Network Block Device protocol as Bulwark speaks it.
//!
//! - [`proto`]: the wire constants and fixed-size headers of the NBD protocol
//!   (<https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>), shared by the
//!   client (live sources, issue 15) and the server (instant access, issue 16). Pure
//!   encode/decode, no I/O, every length bounded by the caller before it allocates.
//! - [`uri`]: NBD URIs (`nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=PATH`).
//! - [`client`]: the client that reads live disks (structured replies, block status,
//!   several requests in flight, timeouts).
//! - [`server`]: the server that exports restore points (issue 16).
//! - [`overlay`]: a copy-on-write overlay file that makes a read-only export writable.

pub mod client;
pub mod overlay;
pub mod proto;
pub mod server;
mod stream;
pub mod uri;

pub use client::{Client, ClientOptions, MappedExtent, NbdError, Ticket};
pub use uri::{is_nbd_uri, Endpoint, NbdUri, UriError};
