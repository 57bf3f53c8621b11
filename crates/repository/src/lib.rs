//! A Bulwark repository on a local filesystem.
//!
//! The files are the truth: every listing is computed from the sealed restore-point files, and
//! nothing in a chain is ever modified after it is sealed.

mod config;
mod copy;
mod durable;
mod error;
mod lock;
pub mod plan;
mod points;
mod policy;
mod reader;
mod remote;
pub mod retention;
mod seal_immutd;
mod space;
mod synth;
mod verify;
mod writer;

pub use config::{
    ByteLimit, ClientLimits, RepoConfig, DEFAULT_IMMUTABLE_DAYS, MAX_IMMUTABLE_DAYS,
    MIN_IMMUTABLE_DAYS,
};
pub use copy::{
    decode_origin, encode_origin, CopiedPoint, CopyHead, CopyMode, CopyPlan, CopyReceiver,
    HeldPoint, COPY_PREFIX, EXT_COPY_ORIGIN, MAX_COPY_META,
};
pub use durable::{fsync_dir, write_atomic, write_atomic_mode};
pub use error::RepoError;
pub use lock::JobLock;
pub use plan::{plan_next_point, NextPoint, Plan, PlanRequest};
pub use points::{JobEncryption, JobScan, PointInfo};
pub use policy::RetentionReport;
pub use reader::{ChainReader, DirectReader, ParentMap};
pub use remote::{RemoteError, RemoteStore};
pub use space::{ChainSpace, FileSpace, FsSpace, JobSpace, LockedUntil, Protection, SpaceReport};
pub use synth::{
    filesystem_name, probe_reflink, ReflinkSupport, SynthMethod, SyntheticOutcome, REFLINK_ADVICE,
};
pub use verify::{DamagedPoint, VerifyReport};
pub use writer::{NewPoint, PointBuilder, SealedPoint};

use std::path::{Path, PathBuf};

use bulwark_format::{validate_name, PointId};
use bulwark_immut_msg::layout;

/// Result type of this crate.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// An opened repository.
pub struct Repository {
    root: PathBuf,
    config: RepoConfig,
    /// Where restore points missing locally are read from, if a tier is attached.
    remote: Option<std::sync::Arc<dyn RemoteStore>>,
}

impl Repository {
    /// Creates a repository in `root` (which must not exist or be empty).
    pub fn init(root: &Path, immutable_days: u32) -> Result<Repository> {
        Repository::init_with(root, immutable_days, None)
    }

    /// Creates a repository whose restore points are sealed by the immutability service
    /// listening on `immutd_socket` (it must be set before the service guards the folder,
    /// whose top level then becomes append-only).
    pub fn init_with(
        root: &Path,
        immutable_days: u32,
        immutd_socket: Option<&Path>,
    ) -> Result<Repository> {
        let mut config = RepoConfig::new(immutable_days)?;
        config.immutd_socket = immutd_socket.map(Path::to_path_buf);
        if root.exists() {
            let mut it = std::fs::read_dir(root).map_err(RepoError::io(root, "listing"))?;
            if it.next().is_some() {
                return Err(RepoError::Usage(format!(
                    "{} exists and is not empty; choose a new folder for the repository",
                    root.display()
                )));
            }
        } else {
            std::fs::create_dir_all(root).map_err(RepoError::io(root, "creating"))?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(RepoError::io(root, "setting mode 0700 on"))?;
        for dir in [
            layout::incoming_dir(root),
            layout::store_dir(root),
            root.join("locks"),
        ] {
            std::fs::create_dir(&dir).map_err(RepoError::io(&dir, "creating"))?;
        }
        config.save(root)?;
        fsync_dir(root)?;
        Repository::open(root)
    }

    /// Opens an existing repository.
    pub fn open(root: &Path) -> Result<Repository> {
        let config = RepoConfig::load(root)?;
        // The immutability service knows guarded repositories by their absolute path.
        let root = root
            .canonicalize()
            .map_err(RepoError::io(root, "resolving"))?;
        Ok(Repository {
            root,
            config,
            remote: None,
        })
    }

    /// The repository's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The immutability service's clock alert while one lasts (see
    /// `seal_immutd::clock_alert`); `None` for an unguarded repository.
    pub fn clock_alert(&self) -> Option<String> {
        self.config()
            .immutd_socket
            .as_deref()
            .and_then(seal_immutd::clock_alert)
    }

    /// Refuses a repository that looks guarded (its `store/` belongs to root, as the
    /// immutability service makes it) while `repository.toml` names no immutability service:
    /// the settings were edited, and new restore points would not be sealed.
    pub fn check_guard(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        if self.config.immutd_socket.is_some() {
            return Ok(());
        }
        let store = layout::store_dir(&self.root);
        let (Ok(sm), Ok(rm)) = (std::fs::metadata(&store), std::fs::metadata(&self.root)) else {
            return Ok(());
        };
        if sm.uid() == 0 && rm.uid() != 0 {
            return Err(RepoError::Usage(format!(
                "{} is guarded (store/ belongs to root, the immutability service made it so) but its repository.toml names no immutability service (immutd_socket): the settings were changed behind the service's back; restore repository.toml (root: `bulwark-immutd status` lists the guarded repositories) before any backup",
                self.root.display()
            )));
        }
        Ok(())
    }

    /// The repository's settings.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Reads restore points missing locally from `remote` (restore and verify only).
    pub fn attach_remote(&mut self, remote: std::sync::Arc<dyn RemoteStore>) {
        self.remote = Some(remote);
    }

    /// The attached remote tier, if any.
    pub fn remote(&self) -> Option<&dyn RemoteStore> {
        self.remote.as_deref()
    }

    /// Names of all jobs that have restore points (locally or in an attached tier), sorted.
    pub fn jobs(&self) -> Result<Vec<String>> {
        let store = layout::store_dir(&self.root);
        let mut jobs = Vec::new();
        for ent in std::fs::read_dir(&store).map_err(RepoError::io(&store, "listing"))? {
            let ent = ent.map_err(RepoError::io(&store, "listing"))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if validate_name("job", &name).is_ok() && ent.path().is_dir() {
                jobs.push(name);
            }
        }
        if let Some(r) = &self.remote {
            for j in r.jobs().map_err(|source| RepoError::Remote {
                what: r.describe(),
                source,
            })? {
                if validate_name("job", &j).is_ok() && !jobs.contains(&j) {
                    jobs.push(j);
                }
            }
        }
        jobs.sort();
        Ok(jobs)
    }

    /// Where the sealed file of a restore point lives.
    pub fn point_path(&self, job: &str, chain: PointId, point: PointId) -> PathBuf {
        layout::sealed_path(&self.root, job, chain, point)
    }
}

/// Bytes as a short human string (B, KiB, … PiB).
pub use bulwark_time::human_bytes as human;

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub use bulwark_time::utc;

/// An error and all its causes on one line, `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Some errors already print their cause; say each thing once.
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Current time as (unix seconds, nanoseconds) by this host's clock.
pub(crate) fn now_unix() -> (i64, u32) {
    let (t, nanos) = bulwark_time::UnixTime::now_precise();
    (t.secs(), nanos)
}
