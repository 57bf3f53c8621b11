//! `repository.toml`: the repository's settings.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{write_atomic, RepoError, Result};

/// Shortest immutability period a repository accepts.
pub const MIN_IMMUTABLE_DAYS: u32 = 7;
/// Longest immutability period a repository accepts.
pub const MAX_IMMUTABLE_DAYS: u32 = 9999;
/// Period used when none is given.
pub const DEFAULT_IMMUTABLE_DAYS: u32 = 14;
const FILE: &str = "repository.toml";
const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// Repository settings, stored in `repository.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Layout version of the repository folder.
    pub layout_version: u32,
    /// Random id of this repository (hex).
    pub id: String,
    /// Immutability period in days (7 to 9999).
    pub immutable_days: u32,
    /// Unix socket of the immutability service guarding this repository, if any.
    #[serde(default)]
    pub immutd_socket: Option<std::path::PathBuf>,
    /// Most restore points a job may create per day (flood defence).
    #[serde(default = "default_max_points_per_day")]
    pub max_points_per_day: u32,
}

fn default_max_points_per_day() -> u32 {
    48
}

impl RepoConfig {
    /// Settings for a new repository.
    pub fn new(immutable_days: u32) -> Result<RepoConfig> {
        check_days(immutable_days)?;
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id)
            .map_err(|e| RepoError::Config(format!("no randomness: {e}")))?;
        Ok(RepoConfig {
            layout_version: 1,
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
            immutable_days,
            immutd_socket: None,
            max_points_per_day: default_max_points_per_day(),
        })
    }

    /// Reads `repository.toml` from a repository folder.
    pub fn load(root: &Path) -> Result<RepoConfig> {
        let path = root.join(FILE);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RepoError::NotARepository(root.to_path_buf()))
            }
            Err(e) => return Err(RepoError::io(&path, "reading")(e)),
        };
        if meta.len() > MAX_CONFIG_LEN {
            return Err(RepoError::Config(format!(
                "{} is larger than 64 KiB",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(RepoError::io(&path, "reading"))?;
        let cfg: RepoConfig = toml::from_str(&text)
            .map_err(|e| RepoError::Config(format!("{}: {e}", path.display())))?;
        if cfg.layout_version != 1 {
            return Err(RepoError::Config(format!(
                "{}: repository layout version {} is not supported by this build; upgrade Bulwark",
                path.display(),
                cfg.layout_version
            )));
        }
        check_days(cfg.immutable_days)?;
        Ok(cfg)
    }

    /// Writes `repository.toml` atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let text = toml::to_string(self).map_err(|e| RepoError::Config(e.to_string()))?;
        write_atomic(&root.join(FILE), text.as_bytes())
    }
}

fn check_days(days: u32) -> Result<()> {
    if !(MIN_IMMUTABLE_DAYS..=MAX_IMMUTABLE_DAYS).contains(&days) {
        return Err(RepoError::Config(format!(
            "immutability period {days} days is out of range: choose {MIN_IMMUTABLE_DAYS} to {MAX_IMMUTABLE_DAYS} days"
        )));
    }
    Ok(())
}
