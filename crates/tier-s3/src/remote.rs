//! The tiers as the repository's `RemoteStore`: restores and verify read a restore point
//! from the recorded version when its local file is missing, from the first tier (by name)
//! whose copy downloads and checks.

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
    /// The tier `name` of `repo` with its records; makes no request.
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

    fn record(&self, job: &str, chain: PointId, point: PointId) -> Option<&ObjectRecord> {
        let (chain, point) = (chain.to_hex(), point.to_hex());
        self.records
            .iter()
            .find(|r| r.point == point && r.job == job && r.chain == chain)
    }

    /// A local copy of the recorded version of `r`, checked against the record.
    fn download(&self, r: &ObjectRecord) -> std::result::Result<std::fs::File, RemoteError> {
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
        let r = self
            .record(job, chain, point)
            .ok_or_else(|| format!("no copy of restore point {point} is recorded"))?;
        self.download(r)
    }
}

/// Every tier of a repository, in name order. A restore point is read from the first tier
/// that records it; when that copy cannot be had (the store is down, its credentials were
/// revoked, the download does not match the record), the next tier recording it is tried,
/// so a second copy in another store is a real second copy for restores.
pub struct Tiers(Vec<TierRemote>);

impl Tiers {
    /// Every tier of `repo` with its records (none when it has no tier); makes no request.
    pub fn open(repo: &Repository) -> Result<Tiers> {
        let names = TierSettings::names(repo.root())?;
        let tiers = names
            .iter()
            .map(|name| TierRemote::open(repo, name))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tiers(tiers))
    }
}

impl RemoteStore for Tiers {
    fn describe(&self) -> String {
        self.0
            .iter()
            .map(TierRemote::describe)
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn jobs(&self) -> std::result::Result<Vec<String>, RemoteError> {
        let mut j = Vec::new();
        for t in &self.0 {
            j.extend(t.jobs()?);
        }
        j.sort();
        j.dedup();
        Ok(j)
    }

    fn points(&self, job: &str) -> std::result::Result<Vec<(PointId, PointId)>, RemoteError> {
        let mut p = Vec::new();
        for t in &self.0 {
            p.extend(t.points(job)?);
        }
        p.sort_by_key(|(_, point)| *point);
        p.dedup();
        Ok(p)
    }

    fn fetch(
        &self,
        job: &str,
        chain: PointId,
        point: PointId,
    ) -> std::result::Result<std::fs::File, RemoteError> {
        let mut failed = Vec::new();
        let recorded = self
            .0
            .iter()
            .filter_map(|t| Some((t, t.record(job, chain, point)?)));
        for (t, r) in recorded {
            match t.download(r) {
                Ok(f) => {
                    if !failed.is_empty() {
                        tracing::warn!(
                            "read restore point {point} from {} after: {}",
                            t.describe(),
                            failed.join("; ")
                        );
                    }
                    return Ok(f);
                }
                Err(e) => failed.push(format!("{}: {e}", t.describe())),
            }
        }
        if failed.is_empty() {
            return Err(format!("no tier records a copy of restore point {point}").into());
        }
        Err(failed.join("; ").into())
    }
}

/// Attaches the repository's tiers (if any) so that restore and verify read points missing
/// locally from them (see [`Tiers`]). Returns their description.
pub fn attach(repo: &mut Repository) -> Result<Option<String>> {
    let tiers = Tiers::open(repo)?;
    if tiers.0.is_empty() {
        return Ok(None);
    }
    let d = tiers.describe();
    repo.attach_remote(Arc::new(tiers));
    Ok(Some(d))
}
