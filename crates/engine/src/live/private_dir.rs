//! The private folder of a running disk's backup (the fleecing overlay, Bulwark's NBD
//! socket): `TMPDIR/bulwark-live-PID-JOB+XXXXXX`, 0700, and locked (`flock` on the folder)
//! for as long as the run lasts.
//!
//! A run killed with SIGKILL, or ended with its machine, cannot remove its folder, and the
//! overlay in it can hold a whole disk's worth of the guest's data. So each backup of a
//! running disk first removes the folders of runs that are gone ([`remove_stale`]).
//!
//! The lock alone says whether a run is gone: `flock` is released when its holder dies, in
//! every PID namespace and after a reboot, whereas a PID may be another namespace's or
//! reused (a persistent TMPDIR such as `/var/tmp` would otherwise keep a killed run's
//! overlay for as long as some process has its old PID). The PID in the name is only for
//! the message. So that a folder is never findable unlocked, a run creates it as
//! `.bulwark-live-new-PID-JOB+XXXXXX` (a name the sweep ignores), locks it, and only then
//! renames it, without replacing anything, to its final name.
//!
//! A folder is removed only when all of these hold: its name is one a run makes, it is a
//! directory (not a link, opened without following one) on TMPDIR's own filesystem that the
//! invoking user owns with mode 0700, nobody holds its lock, and the name still leads to
//! the folder that was opened and locked (same device and inode). Its content is removed
//! through the open folder, without following links or entering another filesystem.
//! Anything else is left alone. A run killed between creating its folder and renaming it
//! leaves an empty `.bulwark-live-new-…` folder, which holds no data and is left alone.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bulwark_sys::open::{DIRECTORY, NOFOLLOW, NONBLOCK, RDONLY};

/// How every run's folder name starts.
const PREFIX: &str = "bulwark-live-";

/// How a folder's name starts until it is locked (the sweep ignores it).
const NEW_PREFIX: &str = ".bulwark-live-new-";

/// A run's private folder, removed (then unlocked) when dropped.
pub(super) struct PrivateDir {
    base: File,
    name: OsString,
    path: PathBuf,
    lock: File,
}

impl PrivateDir {
    /// Creates and locks the folder of this process's run of `job` under `base`.
    pub(super) fn create(base: &Path, job: &str) -> io::Result<PrivateDir> {
        let base_dir = File::open(base)?;
        let stem = format!("{}-{job}+", std::process::id());
        for _ in 0..16 {
            // 0700 (tempfile would use the umask's mode): the fleecing overlay holds the
            // guest's data as it was before each write during the backup — plaintext, also
            // of an encrypted job.
            let new = tempfile::Builder::new()
                .prefix(&format!("{NEW_PREFIX}{stem}"))
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(base)?
                .keep();
            let new_name = new
                .file_name()
                .expect("a tempdir has a name")
                .to_os_string();
            let random = new_name
                .to_str()
                .and_then(|n| n.strip_prefix(NEW_PREFIX))
                .and_then(|n| n.strip_prefix(stem.as_str()))
                .expect("the name tempfile was given")
                .to_string();
            let created = (|| {
                let lock =
                    bulwark_sys::openat(&base_dir, &new_name, RDONLY | NOFOLLOW | DIRECTORY, 0)?;
                if !bulwark_sys::try_lock_exclusive(&lock)? {
                    return Err(io::Error::other(format!(
                        "{} is locked by another process",
                        new.display()
                    )));
                }
                lock.set_permissions(std::fs::Permissions::from_mode(0o700))?;
                Ok(lock)
            })();
            let lock = match created {
                Ok(l) => l,
                Err(e) => {
                    let _ = bulwark_sys::unlinkat(&base_dir, &new_name, true);
                    return Err(e);
                }
            };
            let name = OsString::from(format!("{PREFIX}{stem}{random}"));
            match bulwark_sys::renameat_noreplace(&base_dir, &new_name, &base_dir, &name) {
                Ok(()) => {
                    return Ok(PrivateDir {
                        base: base_dir,
                        path: base.join(&name),
                        name,
                        lock,
                    })
                }
                Err(e) => {
                    let _ = bulwark_sys::unlinkat(&base_dir, &new_name, true);
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
            }
        }
        Err(io::Error::other(format!(
            "no free folder name {PREFIX}{stem}… in {}",
            base.display()
        )))
    }

    /// The folder.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // Removed while still locked, so no sweep of another run races this one.
        if let Err(e) = remove_locked(&self.base, &self.name, &self.lock) {
            tracing::warn!(path = %self.path.display(), "cannot remove the private folder of this backup of a running disk: {e}");
        }
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

/// Removes the folder `name` in `base`, which `dir` (opened and locked by the caller) is:
/// only while the name still leads to `dir` (same device and inode, not a link), its
/// content through `dir`, never following a link or entering another filesystem.
fn remove_locked(base: &File, name: &OsStr, dir: &File) -> io::Result<()> {
    let st = dir.metadata()?;
    let now =
        bulwark_sys::openat(base, name, RDONLY | NOFOLLOW | DIRECTORY | NONBLOCK, 0)?.metadata()?;
    if (now.dev(), now.ino()) != (st.dev(), st.ino()) {
        return Err(io::Error::other(
            "its name leads to another folder than the one that was checked",
        ));
    }
    empty(dir, st.dev())?;
    bulwark_sys::unlinkat(base, name, true)
}

/// Removes everything in the open folder `dir` on device `dev`: entries are opened relative
/// to it without following links, and a folder on another filesystem is left (its removal
/// then fails).
fn empty(dir: &File, dev: u64) -> io::Result<()> {
    // The folder's entries, listed through the open folder itself.
    let listing = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
    for e in listing {
        let name = e?.file_name();
        match bulwark_sys::openat(dir, &name, RDONLY | NOFOLLOW | DIRECTORY | NONBLOCK, 0) {
            Ok(sub) => {
                if sub.metadata()?.dev() != dev {
                    return Err(io::Error::other(format!(
                        "{name:?} is on another filesystem"
                    )));
                }
                empty(&sub, dev)?;
                bulwark_sys::unlinkat(dir, &name, true)?;
            }
            // Not a folder (a file, a socket, a link, which is removed itself).
            Err(e)
                if e.kind() == io::ErrorKind::NotADirectory
                    || e.raw_os_error() == Some(bulwark_sys::errno::ELOOP) =>
            {
                bulwark_sys::unlinkat(dir, &name, false)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the folders under `base` of runs that are gone (see the module doc), each with a
/// warning on stderr; returns them.
pub(super) fn remove_stale(base: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let (Ok(entries), Ok(parent)) = (std::fs::read_dir(base), File::open(base)) else {
        return removed;
    };
    let Ok(base_dev) = parent.metadata().map(|m| m.dev()) else {
        return removed;
    };
    let me = bulwark_sys::effective_uid();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some((pid, job)) = name.to_str().and_then(owner_of) else {
            continue;
        };
        // Opened without following a link, then checked as opened.
        let Ok(dir) =
            bulwark_sys::openat(&parent, &name, RDONLY | NOFOLLOW | DIRECTORY | NONBLOCK, 0)
        else {
            continue;
        };
        let ours = dir.metadata().is_ok_and(|m| {
            m.is_dir() && m.dev() == base_dev && m.uid() == me && m.mode() & 0o7777 == 0o700
        });
        if !ours || !matches!(bulwark_sys::try_lock_exclusive(&dir), Ok(true)) {
            continue;
        }
        let path = base.join(&name);
        match remove_locked(&parent, &name, &dir) {
            Ok(()) => {
                tracing::warn!(
                    path = %path.display(),
                    job,
                    pid,
                    "removed the private folder (fleecing overlay, NBD socket) of an interrupted backup of a running disk: nobody holds its lock, its process is gone"
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
            ".bulwark-live-new-42-vm+x",
        ] {
            assert_eq!(owner_of(other), None, "{other}");
        }
        assert!(is_unowned_name("bulwark-live-Ab3xYz"));
        assert!(!is_unowned_name("bulwark-live-42-vm+Ab3xYz"));
    }

    /// A folder `name` in `b` with mode `mode` holding an overlay file.
    fn mk(b: &Path, name: &str, mode: u32) -> PathBuf {
        let p = b.join(name);
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("fleece.qcow2"), b"overlay").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn locked(p: &Path) -> File {
        let f = File::open(p).unwrap();
        assert!(bulwark_sys::try_lock_exclusive(&f).unwrap());
        f
    }

    #[test]
    fn only_the_users_own_unlocked_0700_folders_are_removed_whatever_pid_they_name() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        // A run killed before a reboot whose PID is now this process's, or init's: its
        // process seems to run, but nobody holds its lock.
        let me = std::process::id();
        let reused = mk(b, &format!("bulwark-live-{me}-vm+aaaaaa"), 0o700);
        let init = mk(b, "bulwark-live-1-vm+gggggg", 0o700);
        let nested = mk(b, "bulwark-live-1-vm+hhhhhh", 0o700);
        std::fs::create_dir_all(nested.join("a/b")).unwrap();
        std::fs::write(nested.join("a/b/c"), b"x").unwrap();
        std::os::unix::net::UnixListener::bind(nested.join("nbd.sock")).unwrap();
        let open_mode = mk(b, "bulwark-live-1-vm+bbbbbb", 0o755);
        let legacy = mk(b, "bulwark-live-cccccc", 0o700);
        let new = mk(b, &format!(".bulwark-live-new-{me}-vm+dddddd"), 0o700);
        // Locked by a run in a process this one may not see (another PID namespace).
        let running = mk(b, "bulwark-live-1-other+eeeeee", 0o700);
        let held = locked(&running);
        // A link with a run's name, to a folder of the user's; a link inside a stale folder.
        let target = mk(b, "elsewhere", 0o700);
        let link = b.join("bulwark-live-1-vm+ffffff");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::os::unix::fs::symlink(&target, nested.join("a/to-elsewhere")).unwrap();

        let mut removed = remove_stale(b);
        removed.sort();
        let mut want = vec![reused.clone(), init.clone(), nested.clone()];
        want.sort();
        assert_eq!(removed, want);
        for gone in &want {
            assert!(gone.symlink_metadata().is_err(), "{}", gone.display());
        }
        for kept in [&open_mode, &legacy, &new, &running, &target] {
            assert!(kept.join("fleece.qcow2").exists(), "{}", kept.display());
        }
        assert!(link.symlink_metadata().is_ok());
        drop(held);
        assert_eq!(remove_stale(b), vec![running]);
    }

    #[test]
    fn a_folder_whose_name_is_swapped_after_the_check_is_not_removed() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path();
        let parent = File::open(b).unwrap();
        let name = OsStr::new("bulwark-live-1-vm+aaaaaa");
        let checked = mk(b, "bulwark-live-1-vm+aaaaaa", 0o700);
        let dir = locked(&checked);
        // Between the checks and the removal the name comes to lead elsewhere.
        std::fs::rename(&checked, b.join("moved")).unwrap();
        let other = mk(b, "bulwark-live-1-vm+aaaaaa", 0o700);
        assert!(remove_locked(&parent, name, &dir).is_err());
        assert!(other.join("fleece.qcow2").exists());
        assert!(b.join("moved/fleece.qcow2").exists());
        // A link in its place is not followed either.
        std::fs::remove_dir_all(&other).unwrap();
        std::os::unix::fs::symlink(b.join("moved"), &other).unwrap();
        assert!(remove_locked(&parent, name, &dir).is_err());
        assert!(b.join("moved/fleece.qcow2").exists());
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
        // Only the folder under its final name is left: the name it was made under is gone.
        let names: Vec<_> = std::fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from(&name)]);
        std::fs::write(d.path().join("fleece.qcow2"), b"overlay").unwrap();
        let p = d.path().to_path_buf();
        drop(d);
        assert!(!p.exists());
    }

    #[test]
    fn a_folder_is_locked_before_it_gets_a_name_the_sweep_removes() {
        // Sweeps racing the creation of many folders never remove one.
        let base = tempfile::tempdir().unwrap();
        let b = base.path().to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sweeper = {
            let (b, stop) = (b.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut removed = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    removed.extend(remove_stale(&b));
                }
                removed
            })
        };
        for _ in 0..2000 {
            let d = PrivateDir::create(&b, "vm");
            assert!(
                d.is_ok_and(|d| d.path().is_dir()),
                "a sweep took a new folder"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(sweeper.join().unwrap(), Vec::<PathBuf>::new());
    }
}
