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
    /// What one network client (one certificate identity) may add (`[client_limits]`).
    #[serde(default)]
    pub client_limits: ClientLimits,
}

/// Per-client limits of the transport service, so that one client cannot fill the repository
/// (for example by backing up under ever new job names). The immutability service's
/// `max_locked_bytes` stays the outer cap for everything.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientLimits {
    /// New job names one client may claim per 24 hours.
    #[serde(default = "default_new_jobs_per_day")]
    pub new_jobs_per_day: u32,
    /// Bytes of new restore-point files one client may add per 24 hours.
    #[serde(default = "default_new_bytes_per_day")]
    pub new_bytes_per_day: ByteLimit,
    /// Bytes of restore-point files one client may have in the repository in all.
    #[serde(default = "default_sealed_bytes")]
    pub sealed_bytes: ByteLimit,
}

fn default_new_jobs_per_day() -> u32 {
    8
}
fn default_new_bytes_per_day() -> ByteLimit {
    ByteLimit::Percent(25)
}
fn default_sealed_bytes() -> ByteLimit {
    ByteLimit::Percent(50)
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            new_jobs_per_day: default_new_jobs_per_day(),
            new_bytes_per_day: default_new_bytes_per_day(),
            sealed_bytes: default_sealed_bytes(),
        }
    }
}

/// A byte limit: a number of bytes (`500G`, `1T`, or a plain integer) or a share of the
/// repository filesystem's size (`"25%"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteLimit {
    Bytes(u64),
    Percent(u8),
}

impl ByteLimit {
    /// The limit in bytes on a filesystem of `fs_total` bytes.
    pub fn resolve(self, fs_total: u64) -> u64 {
        match self {
            ByteLimit::Bytes(b) => b,
            ByteLimit::Percent(p) => (fs_total as u128 * u128::from(p) / 100) as u64,
        }
    }
}

impl std::fmt::Display for ByteLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ByteLimit::Bytes(b) => write!(f, "{b}"),
            ByteLimit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for ByteLimit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(ByteLimit::Percent(p)),
                _ => Err(format!("{s:?}: a share is 1% to 100%")),
            };
        }
        let (num, mult) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let m: u64 = match c.to_ascii_uppercase() {
                    'K' => 1 << 10,
                    'M' => 1 << 20,
                    'G' => 1 << 30,
                    'T' => 1 << 40,
                    _ => return Err(format!("{s:?}: use bytes, K, M, G, T or a share like 25%")),
                };
                (&t[..i], m)
            }
            _ => (t, 1),
        };
        num.trim()
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .map(ByteLimit::Bytes)
            .ok_or_else(|| format!("{s:?} is not a size like 500G, 1T, 1048576 or 25%"))
    }
}

impl Serialize for ByteLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ByteLimit::Bytes(b) => s.serialize_u64(*b),
            ByteLimit::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for ByteLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteLimit::Bytes(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
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
            client_limits: ClientLimits::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_limits_default_when_absent_and_parse_bytes_or_shares() {
        let cfg: RepoConfig =
            toml::from_str("layout_version = 1\nid = \"x\"\nimmutable_days = 7\n").unwrap();
        assert_eq!(cfg.client_limits, ClientLimits::default());
        let cfg: RepoConfig = toml::from_str(
            "layout_version = 1\nid = \"x\"\nimmutable_days = 7\n[client_limits]\n\
             new_jobs_per_day = 2\nnew_bytes_per_day = \"10G\"\nsealed_bytes = 1000\n",
        )
        .unwrap();
        let l = &cfg.client_limits;
        assert_eq!(l.new_jobs_per_day, 2);
        assert_eq!(l.new_bytes_per_day, ByteLimit::Bytes(10 << 30));
        assert_eq!(l.sealed_bytes, ByteLimit::Bytes(1000));
        assert_eq!(ByteLimit::Percent(25).resolve(3 << 30), 768 << 20);
        assert!("0%".parse::<ByteLimit>().is_err());
        assert!("101%".parse::<ByteLimit>().is_err());
        assert!("5X".parse::<ByteLimit>().is_err());
        // A saved config reads back the same.
        let mut c = RepoConfig::new(7).unwrap();
        c.client_limits.sealed_bytes = ByteLimit::Percent(40);
        let back: RepoConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
