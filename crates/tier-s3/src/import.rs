//! `tier import`: rebuild a repository's tier catalog from the bucket alone, after the host
//! was lost. Restores then read every point from the tier.
//!
//! The imported records keep their keys under the lost repository's prefix, which is only
//! read from then on; the repository imported into writes its own copies under its own id
//! (`bulwark/<id>`), so two repositories never write under one prefix.

use std::collections::BTreeMap;
use std::io::Seek;
use std::path::Path;

use bulwark_format::{PointId, PointReader};
use bulwark_repository::Repository;

use crate::record::{self, ObjectRecord};
use crate::settings::{self, Credentials, TierSettings};
use crate::store::Store;
use crate::{Result, TierError};

/// Largest object import accepts as a restore point (bounds the download).
const MAX_OBJECT: u64 = 1 << 40;

/// What an import found.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Repository id whose objects were imported.
    pub source_id: String,
    /// Where the imported copies stay: `bulwark/<source id>` (read, never written).
    pub source_prefix: String,
    /// The id of the repository imported into.
    pub repository_id: String,
    /// Where that repository's own `tier sync` writes: `bulwark/<its id>`, never the source's.
    pub prefix: String,
    pub created_repository: bool,
    /// Points imported (hex ids).
    pub imported: Vec<String>,
    /// Points the tier had a record of already (kept as they were).
    pub already_recorded: Vec<String>,
    /// Versions not used, and why (unlocked, hash mismatch, not a restore point, …).
    pub skipped: Vec<(String, String)>,
}

/// Parses `bulwark/<id>/<job>/<chain>/<point>.bwrp`.
fn parse_key(key: &str) -> Option<(String, String, PointId, PointId)> {
    let mut it = key.split('/');
    let (b, id, job, chain, file) = (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    if b != "bulwark" || it.next().is_some() {
        return None;
    }
    let point = bulwark_immut_msg::layout::parse_point_file_name(file)?;
    bulwark_format::validate_name("job", job).ok()?;
    Some((id.to_string(), job.to_string(), chain.parse().ok()?, point))
}

/// Imports the copies in `settings.bucket` into the repository at `dir` (created when it does
/// not exist or is empty). `source_id` picks the repository when the bucket holds several.
/// For each restore point the oldest COMPLIANCE-locked version whose bytes hash to its
/// recorded BLAKE3 and that opens as the point its key names is used.
pub fn import(dir: &Path, settings: TierSettings, source_id: Option<&str>) -> Result<ImportReport> {
    let made = !dir.exists();
    let r = import_into(dir, settings, source_id);
    if r.is_err() && made {
        // A failure before anything was imported (store unreachable, wrong keys, no Object
        // Lock, no such repository) leaves no empty folder behind; a started repository stays.
        let _ = std::fs::remove_dir(dir);
    }
    r
}

fn import_into(
    dir: &Path,
    settings: TierSettings,
    source_id: Option<&str>,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let fresh = !dir.join("repository.toml").exists();
    if fresh {
        std::fs::create_dir_all(dir).map_err(TierError::io(dir, "creating"))?;
    }
    // An existing repository keeps its tier: only records are added to it. A tier of that
    // name on another bucket is refused before anything is read, since its own records name
    // keys the other bucket does not hold.
    let (own_id, existing) = if fresh {
        (None, None)
    } else {
        let repo = Repository::open(dir)?;
        let existing = if TierSettings::names(repo.root())?.contains(&settings.name) {
            let have = TierSettings::load(repo.root(), &settings.name)?;
            if have.endpoint != settings.endpoint || have.bucket != settings.bucket {
                return Err(TierError::config(format!(
                    "tier {} of {} copies to bucket {} at {}, not bucket {} at {}: importing into it would mix two buckets in one tier; import into a tier of another name with --name NAME",
                    settings.name,
                    dir.display(),
                    have.bucket,
                    have.endpoint,
                    settings.bucket,
                    settings.endpoint
                )));
            }
            Some(have)
        } else {
            None
        };
        (Some(repo.config().id.clone()), existing)
    };
    let creds = Credentials::load(&settings.credentials, settings::repo_owner(dir)?)?;
    settings.check()?;
    let store = Store::new(&settings, &creds)?;
    if let Err(why) = store.object_lock_enabled()? {
        return Err(TierError::NoObjectLock {
            bucket: settings.bucket.clone(),
            why,
        });
    }
    let mut by_key: BTreeMap<String, Vec<crate::store::ListedVersion>> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for v in store.list_versions("bulwark/")? {
        if let Some((id, ..)) = parse_key(&v.key) {
            ids.insert(id);
            by_key.entry(v.key.clone()).or_default().push(v);
        }
    }
    let listed = || {
        ids.iter()
            .map(|i| match &own_id {
                Some(o) if o == i => format!("{i} (this repository)"),
                _ => i.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let id = match (source_id, ids.len()) {
        (Some(s), _) if ids.contains(s) => s.to_string(),
        (Some(s), _) => {
            return Err(TierError::config(format!(
                "bucket {} holds no restore points of repository {s}; it holds: {}",
                settings.bucket,
                listed()
            )))
        }
        (None, 1) => ids.iter().next().cloned().unwrap_or_default(),
        (None, 0) => {
            return Err(TierError::config(format!(
                "bucket {} holds no Bulwark restore points (no keys under bulwark/)",
                settings.bucket
            )))
        }
        (None, _) => {
            return Err(TierError::config(format!(
                "bucket {} holds restore points of several repositories ({}); choose one with --source-id (a repository rebuilt by an earlier import has its own id: import each into the same folder, one after the other)",
                settings.bucket,
                listed()
            )))
        }
    };
    report.source_id = id.clone();
    report.source_prefix = settings::repo_prefix(&id);
    if fresh {
        // The period the lost repository had, from the metadata of one of its objects.
        let days = by_key
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{}/", report.source_prefix)))
            .find_map(|(k, vs)| {
                let h = store.head_version(k, &vs.first()?.version_id).ok()?;
                h.metadata.get("bulwark-immutable-days")?.parse().ok()
            })
            .unwrap_or(bulwark_repository::DEFAULT_IMMUTABLE_DAYS);
        Repository::init(dir, days)?;
        report.created_repository = true;
    }
    let repo = Repository::open(dir)?;
    // The imported copies keep their keys under the source's prefix; this repository's own
    // copies go under its own id, so the two repositories never write to one prefix (the lost
    // host may still be running, or come back).
    report.repository_id = repo.config().id.clone();
    report.prefix = settings::repo_prefix(&report.repository_id);
    let mut settings = existing.unwrap_or(settings);
    settings.prefix = report.prefix.clone();
    let recorded: std::collections::HashSet<String> =
        record::load_all(repo.root(), &settings.name)?
            .into_iter()
            .map(|r| r.point)
            .collect();
    let cache = settings::tier_dir(repo.root(), &settings.name).join("cache");
    let mut chosen = Vec::new();
    for (key, mut versions) in by_key {
        let Some((kid, job, chain, point)) = parse_key(&key) else {
            continue;
        };
        if kid != id {
            continue;
        }
        if recorded.contains(&point.to_hex()) {
            report.already_recorded.push(point.to_hex());
            continue;
        }
        versions.sort_by_key(|v| v.last_modified);
        let mut found = None;
        for v in versions {
            match check_version(&store, &key, &v, &job, chain, point, &cache) {
                Ok(r) => {
                    found = Some(r);
                    break;
                }
                Err(why) => report
                    .skipped
                    .push((format!("{key} version {}", v.version_id), why)),
            }
        }
        if let Some(r) = found {
            chosen.push(r);
        }
    }
    settings.save(repo.root())?;
    for r in chosen {
        record::save(repo.root(), &settings.name, &r)?;
        report.imported.push(r.point);
    }
    Ok(report)
}

/// Checks one version; returns its record.
fn check_version(
    store: &Store,
    key: &str,
    v: &crate::store::ListedVersion,
    job: &str,
    chain: PointId,
    point: PointId,
    cache: &Path,
) -> std::result::Result<ObjectRecord, String> {
    let h = store
        .head_version(key, &v.version_id)
        .map_err(|e| e.to_string())?;
    if h.lock_mode != "COMPLIANCE" || h.retain_until == 0 {
        return Err(format!("not COMPLIANCE-locked ({:?})", h.lock_mode));
    }
    let blake = h
        .metadata
        .get("bulwark-blake3")
        .ok_or("no bulwark-blake3 metadata")?;
    if h.size > MAX_OBJECT {
        return Err(format!("{} bytes is too large for a restore point", h.size));
    }
    settings::ensure_dir(cache).map_err(|e| e.to_string())?;
    let mut f = tempfile::tempfile_in(cache).map_err(|e| e.to_string())?;
    let (n, hash) = store
        .download(key, &v.version_id, &mut f, h.size)
        .map_err(|e| e.to_string())?;
    if hash.to_hex().as_str() != blake {
        return Err("content does not hash to its bulwark-blake3 metadata".into());
    }
    f.rewind().map_err(|e| e.to_string())?;
    let p = PointReader::open(f).map_err(|e| format!("not a restore point: {e}"))?;
    if p.meta.job != job || p.meta.chain != chain || p.meta.point != point {
        return Err("the file names another job, chain or point than its key".into());
    }
    let root = p.trailer.root_digest.to_hex();
    if h.metadata.get("bulwark-root").is_some_and(|r| *r != root) {
        return Err("root digest differs from its bulwark-root metadata".into());
    }
    Ok(ObjectRecord {
        job: job.to_string(),
        chain: chain.to_hex(),
        point: point.to_hex(),
        key: key.to_string(),
        version_id: v.version_id.clone(),
        size: n,
        blake3: blake.clone(),
        root_digest: root,
        retain_until: h.retain_until,
        local_expiry: 0,
        uploaded_unix: v.last_modified,
        multipart: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_only_in_the_expected_shape() {
        let c = "0000000000000001aaaaaaaaaaaaaaaa";
        let p = "0000000000000002bbbbbbbbbbbbbbbb";
        let k = format!("bulwark/abc/vm1/{c}/{p}.bwrp");
        let (id, job, chain, point) = parse_key(&k).unwrap();
        assert_eq!((id.as_str(), job.as_str()), ("abc", "vm1"));
        assert_eq!(
            (chain.to_hex(), point.to_hex()),
            (c.to_string(), p.to_string())
        );
        assert!(parse_key(&format!("bulwark/abc/probe/{p}.bwrp")).is_none());
        assert!(parse_key(&format!("other/abc/vm1/{c}/{p}.bwrp")).is_none());
        assert!(parse_key(&format!("bulwark/abc/../{c}/{p}.bwrp")).is_none());
        assert!(parse_key("bulwark/abc/probe/12345").is_none());
    }
}
