//! Advisory whole-file locks, to keep two service instances off one state folder.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes an exclusive `flock` without waiting; `Ok(false)` when another holder has it.
/// The lock lasts until the file is closed (also when the process dies).
pub fn try_lock_exclusive(f: &File) -> io::Result<bool> {
    // SAFETY: flock with integer arguments on an fd borrowed for the call.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("lock");
        let a = File::create(&p).unwrap();
        let b = File::open(&p).unwrap();
        assert!(try_lock_exclusive(&a).unwrap());
        assert!(!try_lock_exclusive(&b).unwrap());
        drop(a);
        assert!(try_lock_exclusive(&b).unwrap());
    }
}
