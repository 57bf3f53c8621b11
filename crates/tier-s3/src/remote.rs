//! The tier as the repository's `RemoteStore`: restores and verify read a restore point
//! from the recorded version when its local file is missing.

use std::io::Seek;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bulwark_format::PointId;
use bulwark_repository::{RemoteError, RemoteStore, Repository};

use crate::record::{self, ObjectRecord};
use crate::settings::{self, Credentials, TierSettings};
use crate::store::Store;
use crate::Result;

/// Reads copies of restore points back from a tier, by recorded key and version id.
pub struct TierRemote {
    settings: TierSettings,
    owner: u32,
    cache: PathBuf,
    records: Vec<ObjectRecord>,
    /// Connected on first use, so that restores of local points never need the store.
    store: OnceLock<std::result::Result<Store, String>>,
}

impl TierRemote {
    /// The first tier of `repo` (by name) with its records; makes no request.
    pub fn open(repo: &Repository, name: &str) -> Result<TierRemote> {
        let settings = TierSettings::load(repo.root(), name)?;
        Ok(TierRemote {
            owner: settings::repo_owner(repo.root())?,
            cache: settings::tier_dir(repo.root(), name).join("cache"),
            records: record::load_all(repo.root(), name)?,
            settings,
            store: OnceLock::new(),
        })
    }

    fn store(&self) -> std::result::Result<&Store, RemoteError> {
        self.store
            .get_or_init(|| {
                let c = Credentials::load(&self.settings.credentials, self.owner)
                    .map_err(|e| e.to_string())?;
                Store::new(&self.settings, &c).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| e.clone().into())
    }
}

impl RemoteStore for TierRemote {
    fn describe(&self) -> String {
        format!(
            "tier {}: bucket {} at {}",
            self.settings.name, self.settings.bucket, self.settings.endpoint
        )
    }

    fn jobs(&self) -> std::result::Result<Vec<String>, RemoteError> {
        let mut j: Vec<String> = self.records.iter().map(|r| r.job.clone()).collect();
        j.sort();
        j.dedup();
        Ok(j)
    }

    fn points(&self, job: &str) -> std::result::Result<Vec<(PointId, PointId)>, RemoteError> {
        self.records
            .iter()
            .filter(|r| r.job == job)
            .map(|r| Ok((r.chain_id()?, r.point_id()?)))
            .collect::<Result<Vec<_>>>()
            .map_err(Into::into)
    }

    fn fetch(
        &self,
        job: &str,
        chain: PointId,
        point: PointId,
    ) -> std::result::Result<std::fs::File, RemoteError> {
        let hex = point.to_hex();
        let r = self
            .records
            .iter()
            .find(|r| r.point == hex && r.job == job && r.chain == chain.to_hex())
            .ok_or_else(|| format!("no copy of restore point {hex} is recorded"))?;
        let store = self.store()?;
        settings::ensure_dir(&self.cache)?;
        let mut f = tempfile::tempfile_in(&self.cache)?;
        // The recorded version, never "the latest": an overwrite or a delete marker planted
        // with the bucket's keys changes nothing.
        let (n, hash) = store.download(&r.key, &r.version_id, &mut f, r.size)?;
        if n != r.size || hash.to_hex().as_str() != r.blake3 {
            return Err(format!(
                "object {} version {} hashes to {} ({n} bytes), but {} ({} bytes) was recorded",
                r.key,
                r.version_id,
                hash.to_hex(),
                r.blake3,
                r.size
            )
            .into());
        }
        f.rewind()?;
        Ok(f)
    }
}

/// Attaches the repository's first tier (if any) so that restore and verify read points
/// missing locally from it. Returns the tier's description.
pub fn attach(repo: &mut Repository) -> Result<Option<String>> {
    let names = TierSettings::names(repo.root())?;
    let Some(name) = names.first() else {
        return Ok(None);
    };
    let remote = TierRemote::open(repo, name)?;
    let d = remote.describe();
    repo.attach_remote(Arc::new(remote));
    Ok(Some(d))
}
