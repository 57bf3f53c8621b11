//! The Network Block Device protocol as Bulwark speaks it.
//!
//! - [`proto`]: the wire constants and fixed-size headers of the NBD protocol
//!   (<https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>), shared by the
//!   client (live sources, issue 15) and the server (instant access, issue 16). Pure
//!   encode/decode, no I/O, every length bounded by the caller before it allocates.

pub mod proto;
