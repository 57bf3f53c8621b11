//! QEMU helpers on a private Unix socket, stopped when their guard is dropped.
//!
//! Each helper gets its own folder (mode 0700) for its sockets and its log, so no other
//! user can connect to the export. The child is started with `PR_SET_PDEATHSIG`, so it ends
//! even when Bulwark is killed outright; dropping the guard asks it to stop (SIGTERM: QEMU
//! then writes its persistent bitmaps), waits, and kills it if it does not.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulwark_nbd::NbdUri;

use crate::{tool, QemuError, Result};

/// The export name Bulwark gives the disk it serves itself.
pub const EXPORT: &str = "disk";
/// How long a helper may take to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a helper may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running QEMU helper.
pub struct Daemon {
    tool: &'static str,
    child: Option<Child>,
    dir: tempfile::TempDir,
    log: PathBuf,
    nbd_socket: PathBuf,
    qmp_socket: Option<PathBuf>,
}

fn private_dir() -> Result<tempfile::TempDir> {
    // Unix socket paths are limited to 107 bytes: fall back to /tmp for a long TMPDIR.
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        base
    };
    // 0700: tempfile creates folders with the umask's mode otherwise (0755 for root), and
    // this one holds the QEMU process's sockets and log.
    tempfile::Builder::new()
        .prefix("bulwark-qemu-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&base)
        .map_err(|source| QemuError::Io {
            path: base,
            action: "creating a private folder in",
            source,
        })
}

/// A JSON value as a command-line argument of qemu-storage-daemon.
fn json_arg(v: serde_json::Value) -> String {
    v.to_string()
}

impl Daemon {
    /// `qemu-nbd --read-only` serving `image` (read as `format`) as export [`EXPORT`], with
    /// persistent bitmap `bitmap` exported as `qemu:dirty-bitmap:NAME` when given.
    pub fn qemu_nbd(image: &Path, format: &str, bitmap: Option<&str>) -> Result<Daemon> {
        let dir = private_dir()?;
        let sock = dir.path().join("nbd.sock");
        let mut cmd = Command::new(tool("qemu-nbd")?);
        cmd.arg("--read-only")
            .arg(format!("--format={format}"))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--export-name={EXPORT}"))
            .args([
                "--persistent",
                "--shared=16",
                "--cache=none",
                "--aio=threads",
            ]);
        if let Some(b) = bitmap {
            cmd.arg(format!("--bitmap={b}"));
        }
        cmd.arg("--").arg(image);
        Daemon::start("qemu-nbd", cmd, dir, sock, None)
    }

    /// `qemu-storage-daemon` with a QMP monitor and an NBD server on private sockets, and the
    /// block node `node` opened on `image` (read-only unless `writable`, which the persistent
    /// bitmaps of `--cbt` need). Exports are added through QMP.
    pub fn storage_daemon(
        image: &Path,
        format: &str,
        node: &str,
        writable: bool,
    ) -> Result<Daemon> {
        let dir = private_dir()?;
        let nbd = dir.path().join("nbd.sock");
        let qmp = dir.path().join("qmp.sock");
        let ro = !writable;
        let mut cmd = Command::new(tool("qemu-storage-daemon")?);
        cmd.arg("--blockdev").arg(json_arg(serde_json::json!({
            "driver": "file", "node-name": "bulwark-file", "filename": image,
            "read-only": ro, "cache": {"direct": false}, "aio": "threads"
        })));
        cmd.arg("--blockdev").arg(json_arg(serde_json::json!({
            "driver": format, "node-name": node, "file": "bulwark-file", "read-only": ro
        })));
        // The monitor's socket before the NBD server's: the daemon sets its options up in
        // order, so once the NBD socket answers, the QMP socket listens too, and
        // `wait_ready` never opens and drops a QMP connection (a monitor connection closed
        // at once has been seen to crash qemu-storage-daemon 10.0 under load: SIGSEGV after
        // a GLib `g_source_destroy` assertion).
        cmd.arg("--chardev").arg(format!(
            "socket,id=bulwark-qmp,path={},server=on,wait=off",
            qmp.display()
        ));
        cmd.arg("--monitor").arg("chardev=bulwark-qmp");
        cmd.arg("--nbd-server").arg(json_arg(serde_json::json!({
            "addr": {"type": "unix", "path": nbd}
        })));
        Daemon::start("qemu-storage-daemon", cmd, dir, nbd, Some(qmp))
    }

    fn start(
        tool: &'static str,
        mut cmd: Command,
        dir: tempfile::TempDir,
        nbd_socket: PathBuf,
        qmp_socket: Option<PathBuf>,
    ) -> Result<Daemon> {
        let log = dir.path().join("log");
        let io = |action| {
            let log = log.clone();
            move |source| QemuError::Io {
                path: log,
                action,
                source,
            }
        };
        let logf = File::create(&log).map_err(io("creating"))?;
        let logf2 = logf.try_clone().map_err(io("opening"))?;
        cmd.stdin(Stdio::null()).stdout(logf).stderr(logf2);
        bulwark_sys::die_with_parent(&mut cmd);
        tracing::debug!(?cmd, "starting {tool}");
        let child = cmd
            .spawn()
            .map_err(|source| QemuError::Spawn { tool, source })?;
        let mut d = Daemon {
            tool,
            child: Some(child),
            dir,
            log,
            nbd_socket,
            qmp_socket,
        };
        d.wait_ready()?;
        Ok(d)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(QemuError::Failed {
                    tool: self.tool,
                    message: format!("it exited ({st}) before serving: {}", self.log_text()),
                });
            }
            // Only the NBD socket is probed by connecting; the QMP socket, set up before it,
            // must exist by then (see `storage_daemon`).
            let qmp_listens = match &self.qmp_socket {
                Some(q) => q.exists(),
                None => true,
            };
            if qmp_listens && std::os::unix::net::UnixStream::connect(&self.nbd_socket).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(QemuError::Failed {
                    tool: self.tool,
                    message: format!(
                        "its sockets did not open within {} s: {}",
                        START_TIMEOUT.as_secs(),
                        self.log_text()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the helper wrote to its log (its error messages), on one line.
    pub fn log_text(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let t = t.trim().replace('\n', "; ");
        if t.is_empty() {
            "(no message)".into()
        } else {
            t.chars().take(2000).collect()
        }
    }

    /// The NBD URI of the helper's export `export`.
    pub fn uri(&self, export: &str) -> NbdUri {
        NbdUri::unix(&self.nbd_socket, export)
    }

    /// The NBD server's socket.
    pub fn nbd_socket(&self) -> &Path {
        &self.nbd_socket
    }

    /// The QMP monitor's socket (qemu-storage-daemon only).
    pub fn qmp_socket(&self) -> Option<&Path> {
        self.qmp_socket.as_deref()
    }

    /// The helper's private folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The helper's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the helper (SIGTERM, then SIGKILL after a while) and says how it ended.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(st)) = child.try_wait() {
            return if st.success() {
                Ok(())
            } else {
                Err(QemuError::Failed {
                    tool: self.tool,
                    message: format!("it ended by itself ({st}): {}", self.log_text()),
                })
            };
        }
        let _ = bulwark_sys::terminate(child.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(QemuError::Failed {
                        tool: self.tool,
                        message: format!(
                            "it did not stop within {} s of SIGTERM and was killed",
                            STOP_TIMEOUT.as_secs()
                        ),
                    });
                }
            }
        }
    }

    /// Waits (up to [`STOP_TIMEOUT`]) for a helper told to quit through QMP.
    pub fn wait_exit(mut self) -> Result<()> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while let Some(c) = self.child.as_mut() {
            match c.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    if !st.success() {
                        return Err(QemuError::Failed {
                            tool: self.tool,
                            message: format!("it ended with {st}: {}", self.log_text()),
                        });
                    }
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return self.stop_inner(),
            }
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_private_folder_is_0700_whatever_the_umask() {
        let d = private_dir().unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{mode:o}");
    }
}
