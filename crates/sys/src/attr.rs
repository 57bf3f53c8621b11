//! Inode attributes (`chattr`/`lsattr`): immutable and append-only.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use crate::cvt;

/// `FS_IMMUTABLE_FL`: no change, rename, link or unlink, even by root, until cleared.
pub const FS_IMMUTABLE_FL: u32 = 0x0000_0010;
/// `FS_APPEND_FL`: a file can only be appended to; a directory's entries can be created but
/// not renamed or removed.
pub const FS_APPEND_FL: u32 = 0x0000_0020;

/// Reads the inode flags (`FS_IOC_GETFLAGS`).
pub fn get_flags(f: &impl AsFd) -> io::Result<u32> {
    // The ioctl number says `long`, but every filesystem reads and writes an `int`.
    let mut v: libc::c_int = 0;
    // SAFETY: the fd is borrowed for the call; the kernel writes one c_int to `v`, which is
    // live and properly aligned.
    cvt(unsafe { libc::ioctl(f.as_fd().as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut v) })?;
    Ok(v as u32)
}

/// Writes the inode flags (`FS_IOC_SETFLAGS`). Needs `CAP_LINUX_IMMUTABLE` for the immutable
/// and append-only flags.
pub fn set_flags(f: &impl AsFd, flags: u32) -> io::Result<()> {
    let v = flags as libc::c_int;
    // SAFETY: the fd is borrowed for the call; the kernel reads one c_int from `v`.
    cvt(unsafe { libc::ioctl(f.as_fd().as_raw_fd(), libc::FS_IOC_SETFLAGS, &v) })?;
    Ok(())
}

/// True when `flag` is set on the inode.
pub fn has_flag(f: &impl AsFd, flag: u32) -> io::Result<bool> {
    Ok(get_flags(f)? & flag != 0)
}

/// Sets or clears one flag, leaving the others as they are. Does nothing when already so.
pub fn set_flag(f: &impl AsFd, flag: u32, on: bool) -> io::Result<()> {
    let old = get_flags(f)?;
    let new = if on { old | flag } else { old & !flag };
    if new != old {
        set_flags(f, new)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_flag_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("x")).unwrap();
        let flags = match get_flags(&f) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("SKIP immutable_flag_round_trip: FS_IOC_GETFLAGS unsupported here: {e}");
                return;
            }
        };
        assert_eq!(flags & FS_IMMUTABLE_FL, 0);
        if crate::effective_uid() != 0 {
            eprintln!("SKIP immutable_flag_round_trip: setting the flag needs root");
            assert!(set_flag(&f, FS_IMMUTABLE_FL, true).is_err());
            return;
        }
        set_flag(&f, FS_IMMUTABLE_FL, true).unwrap();
        assert!(has_flag(&f, FS_IMMUTABLE_FL).unwrap());
        let err = std::fs::remove_file(dir.path().join("x")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        set_flag(&f, FS_IMMUTABLE_FL, false).unwrap();
        assert!(!has_flag(&f, FS_IMMUTABLE_FL).unwrap());
        set_flag(&f, FS_APPEND_FL, true).unwrap();
        assert!(has_flag(&f, FS_APPEND_FL).unwrap());
        set_flag(&f, FS_APPEND_FL, false).unwrap();
        std::fs::remove_file(dir.path().join("x")).unwrap();
    }
}
