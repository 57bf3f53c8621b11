//! Proving that nobody holds a file open for writing, with a read lease.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::cvt;

/// True when no process (this one included) holds `file` open for writing. `file` must be
/// opened read-only and be a regular file; the caller must own it or have `CAP_LEASE`.
///
/// A read lease (`F_SETLEASE`, `F_RDLCK`) is refused with `EAGAIN` while a writer exists. The
/// lease is released at once. Call [`ignore_lease_break_signal`] first: if a writer opened
/// the file during the microseconds the lease is held, the kernel would signal us (`SIGIO`).
pub fn no_writer(file: &File) -> io::Result<bool> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with integer arguments on an fd borrowed for the call.
    let r = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
    if r == -1 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(false),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) })?;
    Ok(true)
}

/// Ignores `SIGIO`, the signal a lease break would send (its default action ends the
/// process).
pub fn ignore_lease_break_signal() -> io::Result<()> {
    // SAFETY: installs the SIG_IGN disposition; no handler code runs.
    let old = unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    if old == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn lease_sees_a_writer() {
        ignore_lease_break_signal().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let r = File::open(&p).unwrap();
        match no_writer(&r) {
            Ok(true) => {}
            Ok(false) => panic!("no writer exists, yet the lease was refused"),
            Err(e) => {
                eprintln!("SKIP lease_sees_a_writer: leases unsupported here: {e}");
                return;
            }
        }
        let w = OpenOptions::new().write(true).open(&p).unwrap();
        assert!(
            !no_writer(&r).unwrap(),
            "a writer is open, the lease must be refused"
        );
        drop(w);
        assert!(no_writer(&r).unwrap());
    }
}
