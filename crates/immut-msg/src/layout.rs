//! Repository folder layout. `docs/format.md` ("Repository layout") is the normative text.
//!
//! ```text
//! REPO/                          the repository, owned by the service user, mode 0700
//!   repository.toml              repository settings
//!   incoming/                    service-owned: files being written (.tmp-*) and finished
//!                                files waiting to be sealed (<point>.bwrp)
//!   store/<job>/<chain>/<point>.bwrp
//!                                sealed restore points; root-owned when an immutability
//!                                service guards the repository
//!   catalog/                     rebuildable cache
//! ```

use std::path::{Path, PathBuf};

use bulwark_format::PointId;

/// File name extension of a restore point.
pub const POINT_EXT: &str = "bwrp";
/// Prefix of files still being written in `incoming/`.
pub const TMP_PREFIX: &str = ".tmp-";

/// The folder where restore points are written and wait to be sealed.
pub fn incoming_dir(repo: &Path) -> PathBuf {
    repo.join("incoming")
}

/// The sealed store.
pub fn store_dir(repo: &Path) -> PathBuf {
    repo.join("store")
}

/// The store folder of one job.
pub fn job_dir(repo: &Path, job: &str) -> PathBuf {
    store_dir(repo).join(job)
}

/// The store folder of one chain of a job.
pub fn chain_dir(repo: &Path, job: &str, chain: PointId) -> PathBuf {
    job_dir(repo, job).join(chain.to_hex())
}

/// File name of a restore point.
pub fn point_file_name(point: PointId) -> String {
    format!("{}.{POINT_EXT}", point.to_hex())
}

/// Where a finished restore point waits in `incoming/` to be sealed.
pub fn incoming_path(repo: &Path, point: PointId) -> PathBuf {
    incoming_dir(repo).join(point_file_name(point))
}

/// Where a sealed restore point lives.
pub fn sealed_path(repo: &Path, job: &str, chain: PointId, point: PointId) -> PathBuf {
    chain_dir(repo, job, chain).join(point_file_name(point))
}

/// Parses `<32 hex>.bwrp` back into a point id.
pub fn parse_point_file_name(name: &str) -> Option<PointId> {
    let hex = name.strip_suffix(POINT_EXT)?.strip_suffix('.')?;
    if hex.len() != 32 {
        return None;
    }
    hex.parse().ok()
}
