//! File operations relative to an open directory, so that a path component cannot be
//! swapped for a symlink between a check and a use.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;

use crate::cvt;

/// Checks that `name` is one path component (no `/`, not `.` or `..`, no NUL).
fn component(name: &OsStr) -> io::Result<CString> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single file name"),
        ));
    }
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in file name"))
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`. Add `O_NOFOLLOW` to refuse a symlink.
pub fn openat(dir: &File, name: &OsStr, flags: i32, mode: u32) -> io::Result<File> {
    let c = component(name)?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the dir fd is borrowed.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Moves `from_dir/from` to `to_dir/to`, failing with `EEXIST` instead of replacing.
pub fn renameat_noreplace(
    from_dir: &File,
    from: &OsStr,
    to_dir: &File,
    to: &OsStr,
) -> io::Result<()> {
    let a = component(from)?;
    let b = component(to)?;
    // SAFETY: both names are NUL-terminated and outlive the call; both fds are borrowed.
    cvt(unsafe {
        libc::renameat2(
            from_dir.as_raw_fd(),
            a.as_ptr(),
            to_dir.as_raw_fd(),
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })?;
    Ok(())
}

/// Removes `dir/name` (a directory when `is_dir`).
pub fn unlinkat(dir: &File, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let c = component(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `c` is NUL-terminated and outlives the call; the fd is borrowed.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    Ok(())
}

/// Creates the directory `dir/name` with `mode` (minus the umask).
pub fn mkdirat(dir: &File, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = component(name)?;
    // SAFETY: `c` is NUL-terminated and outlives the call; the fd is borrowed.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_operations() {
        let t = tempfile::tempdir().unwrap();
        let d = File::open(t.path()).unwrap();
        mkdirat(&d, OsStr::new("sub"), 0o755).unwrap();
        let f = openat(
            &d,
            OsStr::new("a"),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )
        .unwrap();
        drop(f);
        std::os::unix::fs::symlink("a", t.path().join("link")).unwrap();
        let e = openat(&d, OsStr::new("link"), libc::O_RDONLY | libc::O_NOFOLLOW, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        assert!(openat(&d, OsStr::new("../x"), libc::O_RDONLY, 0).is_err());
        assert!(openat(&d, OsStr::new(".."), libc::O_RDONLY, 0).is_err());
        let sub = File::open(t.path().join("sub")).unwrap();
        std::fs::write(t.path().join("sub/a"), b"x").unwrap();
        let e = renameat_noreplace(&d, OsStr::new("a"), &sub, OsStr::new("a")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        renameat_noreplace(&d, OsStr::new("a"), &sub, OsStr::new("b")).unwrap();
        unlinkat(&sub, OsStr::new("b"), false).unwrap();
        unlinkat(&sub, OsStr::new("a"), false).unwrap();
        drop(sub);
        unlinkat(&d, OsStr::new("sub"), true).unwrap();
    }
}
