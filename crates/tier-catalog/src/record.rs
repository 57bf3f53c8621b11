//! One record per copied restore point: where it is (key, version id), what it holds (size,
//! BLAKE3 of the file, root digest) and the retention read back from the store.

use std::path::{Path, PathBuf};

use bulwark_format::PointId;
use bulwark_repository::write_atomic;
use serde::{Deserialize, Serialize};

use crate::settings::{list_dir, read_small, tier_dir};
use crate::{CatalogError, Result};

/// A restore point whose copy is complete and whose retention was read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRecord {
    pub job: String,
    pub chain: String,
    pub point: String,
    pub key: String,
    pub version_id: String,
    pub size: u64,
    /// BLAKE3 of the whole file (hex).
    pub blake3: String,
    /// The restore point's root digest (hex).
    pub root_digest: String,
    /// COMPLIANCE retain-until, unix seconds by the store's clock, as read back.
    pub retain_until: i64,
    /// Local expiry the retain-until was computed from (unix seconds, this host's clock).
    pub local_expiry: i64,
    pub uploaded_unix: i64,
    pub multipart: bool,
}

impl ObjectRecord {
    /// The point id.
    pub fn point_id(&self) -> Result<PointId> {
        self.point
            .parse()
            .map_err(|e| CatalogError::Config(format!("record {}: point: {e}", self.point)))
    }
    /// The chain id.
    pub fn chain_id(&self) -> Result<PointId> {
        self.chain
            .parse()
            .map_err(|e| CatalogError::Config(format!("record {}: chain: {e}", self.point)))
    }
}

/// `REPO/tiers/<name>/objects`.
pub fn objects_dir(repo: &Path, tier: &str) -> PathBuf {
    tier_dir(repo, tier).join("objects")
}

/// Writes a record atomically; the point counts as copied from then on.
pub fn save(repo: &Path, tier: &str, r: &ObjectRecord) -> Result<()> {
    let text = toml::to_string(r).map_err(|e| CatalogError::Config(e.to_string()))?;
    let dir = objects_dir(repo, tier);
    crate::settings::ensure_dir(&dir)?;
    write_atomic(&dir.join(format!("{}.toml", r.point)), text.as_bytes())?;
    Ok(())
}

/// All records of a tier, sorted by point id.
pub fn load_all(repo: &Path, tier: &str) -> Result<Vec<ObjectRecord>> {
    let mut out = Vec::new();
    for (name, path) in list_dir(&objects_dir(repo, tier))? {
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        let r: ObjectRecord = toml::from_str(&read_small(&path)?)
            .map_err(|e| CatalogError::Config(format!("{}: {e}", path.display())))?;
        out.push(r);
    }
    out.sort_by(|a, b| a.point.cmp(&b.point));
    Ok(out)
}

/// A multipart upload in progress, kept so that a restarted sync resumes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub part_size: u64,
    pub size: u64,
    pub retain_until: i64,
}

fn pending_path(repo: &Path, tier: &str, point: &str) -> PathBuf {
    tier_dir(repo, tier)
        .join("uploads")
        .join(format!("{point}.toml"))
}

/// The multipart upload of `point` to resume, if one was started (an unreadable file counts as none).
pub fn load_pending(repo: &Path, tier: &str, point: &str) -> Result<Option<PendingUpload>> {
    let path = pending_path(repo, tier, point);
    if !path.exists() {
        return Ok(None);
    }
    Ok(toml::from_str(&read_small(&path)?).ok())
}

/// Records a multipart upload in progress, so that a restarted sync resumes it.
pub fn save_pending(repo: &Path, tier: &str, point: &str, p: &PendingUpload) -> Result<()> {
    let path = pending_path(repo, tier, point);
    crate::settings::ensure_dir(path.parent().unwrap_or(Path::new(".")))?;
    let text = toml::to_string(p).map_err(|e| CatalogError::Config(e.to_string()))?;
    write_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// Forgets the upload of `point` once its record is written.
pub fn clear_pending(repo: &Path, tier: &str, point: &str) -> Result<()> {
    let path = pending_path(repo, tier, point);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(bulwark_repository::fsync_dir(
            path.parent().unwrap_or(Path::new(".")),
        )?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CatalogError::io(&path, "removing")(e)),
    }
}
