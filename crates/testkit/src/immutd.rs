//! Starting a real `bulwark-immutd` child process for a repository, for tests and for
//! `bulwark demo`. Needs root (the service refuses to run otherwise).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use bulwark_testkit::immutd::{find_binary, ImmutdSetup};
//! let setup = ImmutdSetup::new("bulwark", "/srv/repo".into(), "/run/bulwark-demo".into());
//! let daemon = setup.spawn(&find_binary()?)?;
//! let mut client = daemon.client().unwrap();
//! // ... client.seal(repo, point) ...
//! daemon.stop();
//! # Ok(()) }
//! ```

use std::ffi::OsString;
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulwark_immut_msg::{ClientError, ImmutClient};

/// Everything needed to write a configuration and start the service.
#[derive(Clone, Debug)]
pub struct ImmutdSetup {
    /// User name (or `#uid`) of the service user.
    pub service_user: String,
    pub repos: Vec<PathBuf>,
    /// Root-owned folder for the config file, state folder, socket and log.
    pub dir: PathBuf,
    pub min_period_days: u32,
    pub max_period_days: u32,
    pub max_locked_bytes: u64,
    pub clock_tolerance_secs: i64,
    pub tick_secs: u64,
    pub lock_repository_root: bool,
    /// Seconds between the service's checks for root's hand (`watch_secs`). 3600 by
    /// default, so that tests which play root's hand to test `verify` are not undone
    /// under them; tests of the watch itself set it low.
    pub watch_secs: u64,
    /// Extra configuration text appended at the end (an `[approval]` table).
    pub extra_config: String,
    /// Program and arguments placed before the service command (e.g. `faketime -f +8d`).
    pub wrapper: Vec<OsString>,
    /// Extra environment for the child.
    pub env: Vec<(OsString, OsString)>,
}

impl ImmutdSetup {
    /// A setup for one repository with the minimum period and a 1-second timer.
    pub fn new(service_user: &str, repo: PathBuf, dir: PathBuf) -> ImmutdSetup {
        ImmutdSetup {
            service_user: service_user.to_string(),
            repos: vec![repo],
            dir,
            min_period_days: 7,
            max_period_days: 400,
            max_locked_bytes: 1 << 40,
            clock_tolerance_secs: 60,
            tick_secs: 1,
            lock_repository_root: true,
            watch_secs: 3600,
            extra_config: String::new(),
            wrapper: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Path of the socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("immutd.sock")
    }

    /// Path of the configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("immutd.toml")
    }

    /// Path of the state folder.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Path of the service's log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("immutd.log")
    }

    /// The configuration text.
    pub fn config_text(&self) -> String {
        let mut s = format!(
            "service_user = \"{}\"\nsocket = \"{}\"\nstate_dir = \"{}\"\nmax_period_days = {}\nmax_locked_bytes = {}\nclock_tolerance_secs = {}\ntick_secs = {}\nlock_repository_root = {}\nwatch_secs = {}\n",
            self.service_user,
            self.socket().display(),
            self.state_dir().display(),
            self.max_period_days,
            self.max_locked_bytes,
            self.clock_tolerance_secs,
            self.tick_secs,
            self.lock_repository_root,
            self.watch_secs
        );
        for r in &self.repos {
            s.push_str(&format!(
                "\n[[repository]]\npath = \"{}\"\nmin_period_days = {}\n",
                r.display(),
                self.min_period_days
            ));
        }
        s.push_str(&self.extra_config);
        s
    }

    /// Writes the configuration (root-owned folder, mode 0755; file 0644).
    pub fn write_config(&self) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::set_permissions(&self.dir, Permissions::from_mode(0o755))?;
        let p = self.config_path();
        std::fs::write(&p, self.config_text())?;
        std::fs::set_permissions(&p, Permissions::from_mode(0o644))?;
        Ok(p)
    }

    /// Writes the configuration and starts `binary run`; returns once the socket answers.
    pub fn spawn(&self, binary: &Path) -> io::Result<Immutd> {
        let cfg = self.write_config()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = match self.wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("--config").arg(&cfg).arg("run");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn()?;
        let mut d = Immutd {
            child: Some(child),
            socket: self.socket(),
            log: self.log_path(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                d.child = None;
                return Err(io::Error::other(format!(
                    "bulwark-immutd exited with {st} at startup; its log:\n{}",
                    std::fs::read_to_string(&d.log).unwrap_or_default()
                )));
            }
            if let Ok(mut c) = ImmutClient::connect(&d.socket) {
                if c.status().is_ok() {
                    return Ok(d);
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "bulwark-immutd did not answer within 20 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running service; stopped (killed) when dropped.
pub struct Immutd {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Immutd {
    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A new client connection.
    pub fn client(&self) -> Result<ImmutClient, ClientError> {
        ImmutClient::connect(&self.socket)
    }

    /// The service's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the service. Its state is always consistent on disk, so killing it is safe.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Immutd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finds the `bulwark-immutd` binary (see [`crate::bins::binary`]).
pub fn find_binary() -> io::Result<PathBuf> {
    crate::bins::binary("bulwark-immutd").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "bulwark-immutd is not next to this program; build it with cargo build -p bulwark-immutd",
        )
    })
}
