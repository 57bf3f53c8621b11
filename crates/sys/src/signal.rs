//! Removing a partial file when the process is interrupted: a restore killed by Ctrl-C or
//! `kill` must not leave a full-size hidden file behind.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

/// The path to remove, as a leaked C string (a handler may read it at any moment).
static PATH: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());
static INSTALL: Once = Once::new();
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    let p = PATH.swap(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: unlink, signal and raise are async-signal-safe; `p` is null or a C string
    // leaked by `unlink_on_signal`, never freed.
    unsafe {
        if !p.is_null() {
            libc::unlink(p);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Makes `handler` handle `sig`, unless the process ignores `sig` (then it stays ignored).
/// `handler` must make only async-signal-safe calls.
pub(crate) fn handle_unless_ignored(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction is valid; we only read the old disposition and install
    // `handler`, which the caller promises makes only async-signal-safe calls.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
            || old.sa_sigaction == libc::SIG_IGN
        {
            return;
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// From now on, SIGINT, SIGTERM or SIGHUP first remove `path` (one path at a time; `None`
/// forgets it), then end the process as the signal would have. Signals the process
/// ignored stay ignored.
pub fn unlink_on_signal(path: Option<&Path>) {
    INSTALL.call_once(|| {
        for sig in SIGNALS {
            // `on_signal` does nothing but async-signal-safe calls.
            handle_unless_ignored(sig, on_signal);
        }
    });
    let new = path
        .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok())
        .map_or(std::ptr::null_mut(), CString::into_raw);
    // The old string is leaked on purpose: a handler running now may still read it.
    PATH.swap(new, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// Runs only as the child of the test below: registers the file, then is interrupted.
    #[test]
    fn child_interrupted_with_a_registered_file() {
        let Some(p) = std::env::var_os("BULWARK_SIGNAL_CHILD_FILE") else {
            return;
        };
        std::fs::write(&p, b"partial").unwrap();
        unlink_on_signal(Some(Path::new(&p)));
        // SAFETY: raise has no memory effects; the handler ends the process.
        unsafe { libc::raise(libc::SIGINT) };
        unreachable!("SIGINT did not end the process");
    }

    #[test]
    fn an_interrupted_process_removes_its_registered_file_and_dies_of_the_signal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".x.bulwark-partial-1");
        let st = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "signal::tests::child_interrupted_with_a_registered_file",
                "--test-threads=1",
            ])
            .env("BULWARK_SIGNAL_CHILD_FILE", &file)
            .output()
            .unwrap()
            .status;
        assert_eq!(st.signal(), Some(libc::SIGINT), "{st:?}");
        assert!(!file.exists(), "the registered file survived SIGINT");
    }
}
