//! The private folder of a running disk's backup (the fleecing overlay, Bulwark's NBD
//! socket): `TMPDIR/bulwark-live-PID-JOB+XXXXXX`, 0700, and locked (`flock` on the folder)
//! for as long as the run lasts.
//!
//! A run killed with SIGKILL, or ended with its machine, cannot remove its folder, and the
//! overlay in it can hold a whole disk's worth of the guest's data. So each backup of a
//! running disk first removes the folders of runs that are gone ([`remove_stale`]). A folder
//! is removed only when all of these hold: its name is one a run makes, the process its name
//! names is not running, it is a directory (not a link) that the invoking user owns with mode
//! 0700, and nobody holds its lock. Anything else is left alone, so a running backup's
//! folder (of any job, also in another PID namespace: it holds the lock) is never touched.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How every run's folder name starts.
const PREFIX: &str = "bulwark-live-";

/// A run's private folder, removed (then unlocked) when dropped.
pub(super) struct PrivateDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl PrivateDir {
    /// Creates and locks the folder of this process's run of `job` under `base`.
    pub(super) fn create(base: &Path, job: &str) -> io::Result<PrivateDir> {
        // 0700 (tempfile would use the umask's mode): the fleecing overlay holds the guest's
        // data as it was before each write during the backup — plaintext, also of an
        // encrypted job.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-{job}+", std::process::id()))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(base)?;
        let lock = File::open(dir.path())?;
        if !bulwark_sys::try_lock_exclusive(&lock)? {
            return Err(io::Error::other(format!(
                "{} is locked by another process",
                dir.path().display()
            )));
        }
        Ok(PrivateDir { dir, _lock: lock })
    }

    /// The folder.
    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The process and job a run's folder name `name` names, or `None` for any other name.
fn owner_of(name: &str) -> Option<(u32, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (job, random) = rest.rsplit_once('+')?;
    if job.is_empty() || random.is_empty() {
        return None;
    }
    Some((pid.parse().ok()?, job))
}

/// True when the folder name `name` is in the form a run before this one made, which named
/// no process (`bulwark-live-XXXXXX`).
pub(super) fn is_unowned_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Removes the folders under `base` of runs whose process is gone (see the module doc),
/// each with a warning on stderr; returns them.
pub(super) fn remove_stale(base: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    // Without /proc no process can be seen running: remove nothing.
    if !Path::new("/proc/self").exists() {
        return removed;
    }
    let (Ok(entries), Ok(parent)) = (std::fs::read_dir(base), File::open(base)) else {
        return removed;
    };
    let me = bulwark_sys::effective_uid();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some((pid, job)) = name.to_str().and_then(owner_of) else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        use bulwark_sys::open::{DIRECTORY, NOFOLLOW, RDONLY};
        // Opened without following a link, then checked as opened.
        let Ok(dir) = bulwark_sys::openat(&parent, &name, RDONLY | NOFOLLOW | DIRECTORY, 0) else {
            continue;
        };
        let ours = dir
            .metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o7777 == 0o700);
        if !ours || !matches!(bulwark_sys::try_lock_exclusive(&dir), Ok(true)) {
            continue;
        }
        let path = base.join(&name);
        // remove_dir_all follows no link inside the folder.
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::warn!(
                    path = %path.display(),
                    job,
                    pid,
                    "removed the private folder (fleecing overlay, NBD socket) of an interrupted backup of a running disk: its process is gone"
                );
                removed.push(path);
            }
            Err(err) => tracing::warn!(
                path = %path.display(),
                "cannot remove the private folder of an interrupted backup of a running disk: {err}"
            ),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_names_a_run_makes_name_an_owner() {
        assert_eq!(owner_of("bulwark-live-42-vm+Ab3xYz"), Some((42, "vm")));
        assert_eq!(
            owner_of("bulwark-live-7-my-vm.disk_0+q"),
            Some((7, "my-vm.disk_0"))
        );
        for other in [
            "bulwark-live-Ab3xYz",
            "bulwark-live--vm+x",
            "bulwark-live-4x2-vm+x",
            "bulwark-live-42-+x",
            "bulwark-live-42-vm+",
            "bulwark-live-42-vm",
            "bulwark-live-99999999999-vm+x",
            "other-42-vm+x",
        ] {
            assert_eq!(owner_of(other), None, "{other}");
        }
        assert!(is_unowned_name("bulwark-live-Ab3xYz"));
        assert!(!is_unowned_name("bulwark-live-42-vm+Ab3xYz"));
    }

    /// The pid of a process that ran and is gone.
    fn gone_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn only_the_users_own_unlocked_0700_folders_of_gone_processes_are_removed() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        let gone = gone_pid();
        let mk = |name: &str, mode: u32| {
            let p = b.join(name);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("fleece.qcow2"), b"overlay").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let stale = mk(&format!("bulwark-live-{gone}-vm+aaaaaa"), 0o700);
        let open_mode = mk(&format!("bulwark-live-{gone}-vm+bbbbbb"), 0o755);
        let legacy = mk("bulwark-live-cccccc", 0o700);
        let running = mk(
            &format!("bulwark-live-{}-vm+dddddd", std::process::id()),
            0o700,
        );
        // Locked by a run in a process this one cannot see (another PID namespace).
        let locked = mk(&format!("bulwark-live-{gone}-other+eeeeee"), 0o700);
        let held = File::open(&locked).unwrap();
        assert!(bulwark_sys::try_lock_exclusive(&held).unwrap());
        // A link with a run's name, to a folder of the user's.
        let target = mk("elsewhere", 0o700);
        let link = b.join(format!("bulwark-live-{gone}-vm+ffffff"));
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let removed = remove_stale(b);
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        for kept in [&open_mode, &legacy, &running, &locked, &target] {
            assert!(kept.join("fleece.qcow2").exists(), "{}", kept.display());
        }
        assert!(link.symlink_metadata().is_ok());
        drop(held);
        assert_eq!(remove_stale(b), vec![locked]);
    }

    #[test]
    fn a_created_folder_is_0700_locked_named_for_its_run_and_gone_when_dropped() {
        let base = tempfile::tempdir().unwrap();
        let d = PrivateDir::create(base.path(), "vm").unwrap();
        let name = d.path().file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(owner_of(&name), Some((std::process::id(), "vm")));
        let m = std::fs::metadata(d.path()).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o700);
        let other = File::open(d.path()).unwrap();
        assert!(!bulwark_sys::try_lock_exclusive(&other).unwrap());
        assert!(remove_stale(base.path()).is_empty());
        let p = d.path().to_path_buf();
        drop(d);
        assert!(!p.exists());
    }
}
