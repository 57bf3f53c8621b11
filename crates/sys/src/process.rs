//! Child processes that must not outlive Bulwark (qemu-nbd, qemu-storage-daemon), signals to
//! them, and an interrupt flag so that Ctrl-C unwinds through the code that stops them.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// Makes the child started by `cmd` receive SIGTERM when the thread that starts it ends
/// (`PR_SET_PDEATHSIG`): a Bulwark killed with SIGKILL leaves no QEMU helper behind. Start
/// such children from a thread that lives as long as they should (the main thread).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and calls only prctl and
    // getppid, which are async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() == 1 {
                return Err(io::Error::other("parent ended before the child started"));
            }
            Ok(())
        });
    }
}

/// Sends SIGTERM to process `pid` (a polite stop: QEMU writes its persistent bitmaps).
pub fn terminate(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill has no memory effects; a wrong pid at worst signals another process of
    // ours, and callers pass the pid of a child they have not reaped yet.
    crate::cvt(unsafe { libc::kill(pid, libc::SIGTERM) }).map(|_| ())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

extern "C" fn on_interrupt(sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // SAFETY: signal is async-signal-safe; a second signal ends the process as usual.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// From now on the first SIGINT or SIGTERM only sets a flag ([`interrupted`]) that long work
/// checks, so it can stop its helpers and remove what it made; a second one ends the process.
pub fn catch_interrupts() {
    INSTALL.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // `on_interrupt` only stores an atomic and calls signal, both async-signal-safe.
            crate::signal::handle_unless_ignored(sig, on_interrupt);
        }
    });
}

/// True once SIGINT or SIGTERM arrived after [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_started_with_die_with_parent_runs_and_can_be_terminated() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        terminate(child.id()).unwrap();
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGTERM));
    }
}
