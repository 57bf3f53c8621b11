//! Tier settings (`REPO/tiers/<name>.toml`), credentials, and the tier's folders.
//!
//! ```text
//! REPO/tiers/<name>.toml                 settings (endpoint, bucket, mode, credentials path)
//! REPO/tiers/<name>/objects/<point>.toml one record per copied restore point: key, version id,
//!                                        hash, retain-until read back from the store
//! REPO/tiers/<name>/uploads/<point>.toml multipart upload in progress (resumed after a crash)
//! REPO/tiers/<name>/cache/               unlinked temporary copies read during restores
//! ```
//! Everything lives under `tiers/`, because a guarded repository's top level is append-only.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bulwark_repository::write_atomic;
use serde::{Deserialize, Serialize};

use crate::{CatalogError, Result};

/// Largest settings, record or credentials file read (bounded before allocation).
pub const MAX_SMALL_FILE: u64 = 64 * 1024;
/// Default multipart part size; files larger than one part are uploaded in parts.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// Smallest part size S3 allows (except for the last part).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Largest part size accepted in settings (bounds the memory of an upload).
pub const MAX_PART_SIZE: u64 = 256 << 20;

/// What happens to local files once their copy is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierMode {
    /// Keep the local file too.
    Copy,
    /// Free local space once the local expiry has passed and the copy is confirmed.
    Move,
}

impl std::str::FromStr for TierMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "copy" => Ok(TierMode::Copy),
            "move" => Ok(TierMode::Move),
            _ => Err(format!("mode {s:?}: choose copy or move")),
        }
    }
}

impl TierMode {
    /// `copy` or `move`.
    pub fn as_str(self) -> &'static str {
        match self {
            TierMode::Copy => "copy",
            TierMode::Move => "move",
        }
    }
}

/// The settings of one tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSettings {
    /// Name of the tier (`s3` by default).
    pub name: String,
    /// Endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:7480`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub mode: TierMode,
    /// File holding the access key and secret (mode 0600, owned by the service user).
    pub credentials: PathBuf,
    /// Key prefix of this repository's objects: `bulwark/<repository id>` ([`repo_prefix`]),
    /// never another repository's, so that two repositories' copies never share a prefix.
    pub prefix: String,
    /// Multipart part size in bytes.
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// Attempts per S3 request before a sync gives up (retried with backoff).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_part_size() -> u64 {
    DEFAULT_PART_SIZE
}
fn default_attempts() -> u32 {
    6
}

/// The key prefix a repository writes its copies under: `bulwark/<repository id>`. Copies
/// imported from another repository keep their keys under that repository's prefix; this
/// repository only reads them.
pub fn repo_prefix(repo_id: &str) -> String {
    format!("bulwark/{repo_id}")
}

/// The repository prefix (`bulwark/<id>`) of an object key `bulwark/<id>/<job>/…`.
pub fn prefix_of_key(key: &str) -> Option<&str> {
    let mut slashes = key.match_indices('/').map(|(i, _)| i);
    let _first = slashes.next()?;
    let end = slashes.next()?;
    Some(&key[..end])
}

/// Checks a tier name: letters, digits, `-`, `_`, at most 32 characters.
pub fn validate_tier_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CatalogError::Config(format!(
            "tier name {name:?}: use 1 to 32 letters, digits, '-' or '_'"
        )))
    }
}

/// `REPO/tiers`.
pub fn tiers_dir(repo: &Path) -> PathBuf {
    repo.join("tiers")
}

fn settings_path(repo: &Path, name: &str) -> PathBuf {
    tiers_dir(repo).join(format!("{name}.toml"))
}

/// `REPO/tiers/<name>`.
pub fn tier_dir(repo: &Path, name: &str) -> PathBuf {
    tiers_dir(repo).join(name)
}

/// The name and path of every entry of `dir`; none when `dir` does not exist.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(CatalogError::io(dir, "listing")(e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(CatalogError::io(dir, "listing"))?;
        out.push((ent.file_name().to_string_lossy().into_owned(), ent.path()));
    }
    Ok(out)
}

/// Reads a small file, refusing anything larger than `MAX_SMALL_FILE`.
pub fn read_small(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(CatalogError::io(path, "reading"))?;
    if meta.len() > MAX_SMALL_FILE {
        return Err(CatalogError::Config(format!(
            "{} is larger than 64 KiB; it is not a Bulwark tier file",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(CatalogError::io(path, "reading"))
}

/// Creates `dir` (and parents) if missing.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(CatalogError::io(dir, "creating"))?;
        if let Some(p) = dir.parent() {
            bulwark_repository::fsync_dir(p)?;
        }
    }
    Ok(())
}

impl TierSettings {
    /// Checks the values a user gave.
    pub fn check(&self) -> Result<()> {
        validate_tier_name(&self.name)?;
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(CatalogError::Config(format!(
                "endpoint {:?} must be an http:// or https:// URL",
                self.endpoint
            )));
        }
        let b = &self.bucket;
        if b.len() < 3
            || b.len() > 63
            || !b
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        {
            return Err(CatalogError::Config(format!(
                "bucket name {b:?} is not a valid S3 bucket name (3-63 lowercase letters, digits, '-', '.')"
            )));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(CatalogError::Config(format!(
                "part size {} is out of range ({MIN_PART_SIZE} to {MAX_PART_SIZE} bytes)",
                self.part_size
            )));
        }
        if self.max_attempts == 0 || self.max_attempts > 50 {
            return Err(CatalogError::Config("max_attempts must be 1 to 50".into()));
        }
        Ok(())
    }

    /// Writes the settings atomically into `REPO/tiers/`.
    pub fn save(&self, repo: &Path) -> Result<()> {
        self.check()?;
        ensure_dir(&tiers_dir(repo))?;
        let text = toml::to_string(self).map_err(|e| CatalogError::Config(e.to_string()))?;
        write_atomic(&settings_path(repo, &self.name), text.as_bytes())?;
        for sub in ["objects", "uploads", "cache"] {
            ensure_dir(&tier_dir(repo, &self.name).join(sub))?;
        }
        Ok(())
    }

    /// Reads the settings of tier `name`.
    pub fn load(repo: &Path, name: &str) -> Result<TierSettings> {
        validate_tier_name(name)?;
        let path = settings_path(repo, name);
        let s: TierSettings = toml::from_str(&read_small(&path)?)
            .map_err(|e| CatalogError::Config(format!("{}: {e}", path.display())))?;
        s.check()?;
        Ok(s)
    }

    /// Names of the configured tiers, sorted.
    pub fn names(repo: &Path) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (n, _) in list_dir(&tiers_dir(repo))? {
            if let Some(name) = n.strip_suffix(".toml") {
                if validate_tier_name(name).is_ok() && !n.starts_with('.') {
                    out.push(name.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Access key and secret of a tier.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads a credentials file (`access_key_id = "…"`, `secret_access_key = "…"`), which
    /// must be a regular file of mode 0600 (or stricter) owned by `owner_uid`.
    pub fn load(path: &Path, owner_uid: u32) -> Result<Credentials> {
        let bad = |why: String| CatalogError::Credentials {
            path: path.to_path_buf(),
            why,
        };
        let meta = std::fs::symlink_metadata(path).map_err(|e| bad(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(bad("not a regular file (symlinks are refused)".into()));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "mode {mode:04o} lets other users read it; run `chmod 600 {}`",
                path.display()
            )));
        }
        if meta.uid() != owner_uid {
            return Err(bad(format!(
                "owned by uid {}, but the repository's service user is uid {owner_uid}; `chown` it to the service user",
                meta.uid()
            )));
        }
        let c: Credentials = toml::from_str(&read_small(path)?).map_err(|e| {
            bad(format!(
                "{e}; expected access_key_id = \"...\" and secret_access_key = \"...\""
            ))
        })?;
        if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
            return Err(bad("access_key_id or secret_access_key is empty".into()));
        }
        Ok(c)
    }
}

/// Owner uid of the repository folder: the service user.
pub fn repo_owner(repo: &Path) -> Result<u32> {
    Ok(std::fs::metadata(repo)
        .map_err(CatalogError::io(repo, "reading"))?
        .uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_repository_prefix_is_its_first_two_components() {
        let id = "9a56c602263dc8a026799812c22d0729";
        let key = format!(
            "{}/vm1/0000000000000001aa/0000000000000001aa.bwrp",
            repo_prefix(id)
        );
        assert_eq!(prefix_of_key(&key), Some(format!("bulwark/{id}").as_str()));
        assert_eq!(
            prefix_of_key(&format!("bulwark/{id}/probe/1")),
            Some(&*repo_prefix(id))
        );
        assert_eq!(prefix_of_key("bulwark/x"), None);
        assert_eq!(prefix_of_key("bulwark"), None);
    }
}
