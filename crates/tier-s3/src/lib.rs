//! The S3 Object Lock tier: copies of sealed restore points in S3-compatible object storage
//! (AWS S3, Ceph RGW, MinIO), locked in COMPLIANCE mode until the same date as the local
//! file, addressed by key and version id, and read back when the local file is missing.
//!
//! This is the only crate that links the S3 SDK; the repository sees it through
//! `bulwark_repository::RemoteStore`, and the immutability service never sees it. Its local
//! catalog (settings and records under `REPO/tiers/`) lives in `bulwark-tier-catalog`, so that
//! `bulwark-repo` reports the tiers without linking the SDK. Linked by `bulwark-tier` and the
//! client `bulwark` only.

mod error;
mod import;
pub mod probe;
mod remote;
pub mod store;
mod sync;
mod verify;

pub use bulwark_tier_catalog::{record, settings};
pub use bulwark_tier_catalog::{
    status, tier_name, Credentials, ObjectRecord, TierMode, TierSettings, TierStatus, DEFAULT_TIER,
};
pub use error::{Result, TierError};
pub use import::{import, ImportReport};
pub use remote::{attach, TierRemote, Tiers};
pub use store::{Store, SKEW_WARN_SECS};
pub use sync::{SyncOptions, SyncReport};
pub use verify::{TierVerifyReport, VersionProblem};

use std::path::PathBuf;

use bulwark_repository::Repository;

/// An opened tier: settings, credentials checked, a client for the bucket.
pub struct Tier {
    pub settings: TierSettings,
    root: PathBuf,
    immutable_days: u32,
    store: Store,
    /// Another repository's prefix that the settings file named (written by a `tier import`
    /// that kept the source's prefix); this tier writes under its own instead, and `sync`
    /// corrects the file.
    stale_prefix: Option<String>,
}

/// What `tier add` found.
#[derive(Debug)]
pub struct AddReport {
    pub probe: probe::ProbeObservations,
    /// Store clock minus this host's, seconds.
    pub skew: Option<i64>,
    pub warnings: Vec<String>,
}

fn skew_warning(skew: Option<i64>) -> Option<String> {
    let s = skew?;
    (s.abs() > SKEW_WARN_SECS).then(|| {
        format!(
            "the store's clock is {s:+} s off this host's; retain-until dates are computed from the store's own clock (its Date header), but check NTP on both"
        )
    })
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tier {
    /// Opens tier `name` of `repo`; makes no request yet.
    pub fn open(repo: &Repository, name: &str) -> Result<Tier> {
        let settings = TierSettings::load(repo.root(), name)?;
        Tier::with_settings(repo, settings)
    }

    fn with_settings(repo: &Repository, mut settings: TierSettings) -> Result<Tier> {
        settings.check()?;
        // A repository writes only under its own prefix, whatever the file says.
        let own = settings::repo_prefix(&repo.config().id);
        let stale_prefix =
            (settings.prefix != own).then(|| std::mem::replace(&mut settings.prefix, own));
        let owner = settings::repo_owner(repo.root())?;
        let creds = Credentials::load(&settings.credentials, owner)?;
        let store = Store::new(&settings, &creds)?;
        Ok(Tier {
            settings,
            root: repo.root().to_path_buf(),
            immutable_days: repo.config().immutable_days,
            store,
            stale_prefix,
        })
    }

    /// The client for the tier's bucket.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Object key of a restore point.
    pub fn key_of(&self, job: &str, chain: &str, point: &str) -> String {
        format!(
            "{}/{job}/{chain}/{point}.{}",
            self.settings.prefix,
            bulwark_immut_msg::layout::POINT_EXT
        )
    }

    /// Checks the bucket (credentials, Object Lock on, locks enforced), sets its default
    /// retention, and saves the settings: `bulwark-tier add`.
    pub fn add(repo: &Repository, settings: TierSettings) -> Result<(Tier, AddReport)> {
        if TierSettings::names(repo.root())?.contains(&settings.name) {
            return Err(TierError::config(format!(
                "tier {:?} already exists in {}",
                settings.name,
                repo.root().display()
            )));
        }
        let tier = Tier::with_settings(repo, settings)?;
        let s = &tier.store;
        if let Err(why) = s.object_lock_enabled()? {
            return Err(TierError::NoObjectLock {
                bucket: tier.settings.bucket.clone(),
                why,
            });
        }
        let probe = probe::run(s, &tier.settings.prefix)?;
        // A second safeguard: objects whose lock headers a store ignores still get locked.
        s.set_default_retention(tier.immutable_days)?;
        tier.settings.save(repo.root())?;
        let skew = s.skew();
        let warnings = skew_warning(skew).into_iter().collect();
        Ok((
            tier,
            AddReport {
                probe,
                skew,
                warnings,
            },
        ))
    }
}

/// Creates the bucket of `settings` with Object Lock enabled, unless it exists already.
pub fn create_bucket(repo: &Repository, settings: &TierSettings) -> Result<()> {
    let creds = Credentials::load(&settings.credentials, settings::repo_owner(repo.root())?)?;
    let store = Store::new(settings, &creds)?;
    match store.create_bucket(true) {
        Err(e)
            if matches!(
                e.code(),
                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}
