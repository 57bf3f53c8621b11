//! Who is on the other end of a Unix socket, and who we are.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use crate::cvt;

/// Credentials of a Unix socket's peer, as the kernel recorded them at `connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// `SO_PEERCRED` of a connected Unix socket (std's `peer_cred` is not stable).
pub fn peer_cred(sock: &impl AsFd) -> io::Result<PeerCred> {
    let mut c = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `c` is a live ucred and `len` its size; the kernel writes at most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short SO_PEERCRED answer",
        ));
    }
    Ok(PeerCred {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Gives up root for good: no supplementary groups, then real, effective and saved gid and
/// uid set to `gid` and `uid`. glibc applies each change to every thread of the process.
/// Fails unless root can no longer be regained afterwards.
pub fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    if uid == 0 || gid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to \"drop\" to uid or gid 0",
        ));
    }
    // SAFETY: an empty list (length 0, null pointer) is valid for setgroups.
    cvt(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: plain system calls on integers; the group is changed while still root.
    cvt(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: as above; after this call the process is no longer root.
    cvt(unsafe { libc::setresuid(uid, uid, uid) })?;
    // SAFETY: getters without arguments.
    let (ru, eu, rg, eg) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    // SAFETY: plain system call; it must fail now.
    let regained = unsafe { libc::setuid(0) } == 0;
    if (ru, eu, rg, eg) != (uid, uid, gid, gid) || regained {
        return Err(io::Error::other("privileges were not dropped completely"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peer_of_a_socketpair_is_us() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.uid, effective_uid());
        assert_eq!(c.pid, std::process::id() as i32);
    }
}
