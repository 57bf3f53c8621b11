//! Safe wrappers over the Linux calls Bulwark needs and std does not offer. This is the only
//! crate of the workspace allowed `unsafe`; every block says why it is sound.
//!
//! Every function returns `std::io::Error` with the OS error code, so callers can tell
//! "not supported by this filesystem" (`EOPNOTSUPP`, `ENOTTY`, `EINVAL`) from real failures.
#![deny(unsafe_op_in_unsafe_fn)]

mod at;
mod attr;
mod clock;
mod clone;
mod cred;
mod flags;
mod fs;
mod lease;
mod lock;
mod process;
mod signal;

pub use at::{mkdirat, openat, renameat_noreplace, unlinkat};
pub use attr::{get_flags, has_flag, set_flag, set_flags, FS_APPEND_FL, FS_IMMUTABLE_FL};
pub use clock::{boottime, read_boot_id};
pub use clone::{
    ficlone_range, fiemap, Extent, FIEMAP_EXTENT_LAST, FIEMAP_EXTENT_SHARED, FIEMAP_EXTENT_UNKNOWN,
    FIEMAP_EXTENT_UNWRITTEN,
};
pub use cred::{drop_privileges, effective_uid, peer_cred, PeerCred};
pub use flags::{errno, open};
pub use fs::{
    fadvise, filesystem_type, major, minor, parts_within, seek_data, seek_hole, statvfs,
    will_need_within, Advice, FsStats,
};
pub use lease::{ignore_lease_break_signal, no_writer};
pub use lock::try_lock_exclusive;
pub use process::{catch_interrupts, die_with_parent, interrupted, terminate};
pub use signal::unlink_on_signal;

use std::io;

/// Turns a `-1` return into the thread's `errno`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// True when an error means "this filesystem or kernel does not support the operation".
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::ENOSYS) | Some(libc::EXDEV)
    ) || (e.raw_os_error() == Some(libc::EINVAL))
}
