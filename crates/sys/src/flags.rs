//! Open flags and error numbers other crates pass to std (`OpenOptionsExt::custom_flags`,
//! `raw_os_error`), so that no crate but this one names libc.

/// Open flags, as `custom_flags` and [`crate::openat`] take them.
pub mod open {
    /// Open for reading only.
    pub const RDONLY: i32 = libc::O_RDONLY;
    /// Fail with `ELOOP` when the last component is a symbolic link.
    pub const NOFOLLOW: i32 = libc::O_NOFOLLOW;
    /// Fail unless the path is a directory.
    pub const DIRECTORY: i32 = libc::O_DIRECTORY;
    /// Do not block (on a FIFO or a leased file).
    pub const NONBLOCK: i32 = libc::O_NONBLOCK;
    /// Never become the controlling terminal.
    pub const NOCTTY: i32 = libc::O_NOCTTY;
    /// A handle to the path itself, for fstat and *at calls; no read or write.
    pub const PATH: i32 = libc::O_PATH;
    /// Bypass the page cache.
    pub const DIRECT: i32 = libc::O_DIRECT;
    /// With create: fail when the file exists; on a block device: fail when it is in use.
    pub const EXCL: i32 = libc::O_EXCL;
    /// An unnamed file in the given directory, gone when closed (with read-write access).
    pub const TMPFILE: i32 = libc::O_TMPFILE;
}

/// Error numbers, as `std::io::Error::raw_os_error` returns them.
pub mod errno {
    /// Too many symbolic links: an `O_NOFOLLOW` open met a link.
    pub const ELOOP: i32 = libc::ELOOP;
    /// No space left on the device.
    pub const ENOSPC: i32 = libc::ENOSPC;
    /// Disk quota exceeded.
    pub const EDQUOT: i32 = libc::EDQUOT;

    /// Whether `code` says the filesystem has no room for what was written: full
    /// (`ENOSPC`) or over the writer's quota (`EDQUOT`).
    pub fn is_no_space(code: Option<i32>) -> bool {
        matches!(code, Some(ENOSPC | EDQUOT))
    }
    /// Device or resource busy.
    pub const EBUSY: i32 = libc::EBUSY;
    /// No such device or address.
    pub const ENXIO: i32 = libc::ENXIO;
    /// The operation would block.
    pub const EWOULDBLOCK: i32 = libc::EWOULDBLOCK;
}
