//! `tier verify`: every recorded object's version, lock mode, retain-until and content hash.

use std::io::Seek;

use bulwark_format::PointReader;

use crate::record::{self, ObjectRecord};
use crate::{Result, Tier};

/// A copy that does not match its record.
#[derive(Debug, Clone)]
pub struct VersionProblem {
    pub point: String,
    pub key: String,
    pub version_id: String,
    pub why: String,
}

/// The outcome of `tier verify`.
#[derive(Debug, Default)]
pub struct TierVerifyReport {
    pub checked: u64,
    pub bytes: u64,
    pub problems: Vec<VersionProblem>,
}

impl Tier {
    /// Checks every recorded copy: it exists, is COMPLIANCE-locked at least until the
    /// recorded date, and its bytes hash to the recorded BLAKE3 and root digest.
    ///
    /// Also reports every version of a recorded key that is not the recorded one (say a
    /// newer version planted over it with the bucket's keys): restores stay pinned to the
    /// recorded version, but somebody wrote where only this repository should.
    pub fn verify(&self) -> Result<TierVerifyReport> {
        let mut report = TierVerifyReport::default();
        let cache = crate::settings::tier_dir(&self.root, &self.settings.name).join("cache");
        crate::settings::ensure_dir(&cache)?;
        let records = record::load_all(&self.root, &self.settings.name)?;
        let mut versions: std::collections::HashMap<String, Vec<crate::store::ListedVersion>> =
            Default::default();
        // This repository's own prefix, and those of the repositories it imported copies from.
        let prefixes: std::collections::BTreeSet<&str> = records
            .iter()
            .filter_map(|r| crate::settings::prefix_of_key(&r.key))
            .chain([self.settings.prefix.as_str()])
            .collect();
        for prefix in prefixes {
            for v in self.store.list_versions(&format!("{prefix}/"))? {
                versions.entry(v.key.clone()).or_default().push(v);
            }
        }
        for r in &records {
            for v in versions.get(&r.key).into_iter().flatten() {
                if v.version_id != r.version_id {
                    report.problems.push(VersionProblem {
                        point: r.point.clone(),
                        key: r.key.clone(),
                        version_id: v.version_id.clone(),
                        why: format!(
                            "a version that is not the recorded one ({} bytes, written {}) is \
                             stored under this key: someone holding the bucket's keys wrote \
                             over it; restores still read the recorded version {}. Find out \
                             who can write to the bucket and rotate its keys",
                            v.size,
                            bulwark_repository::utc(v.last_modified),
                            r.version_id
                        ),
                    });
                }
            }
        }
        for r in records {
            report.checked += 1;
            let problem = |why: String| VersionProblem {
                point: r.point.clone(),
                key: r.key.clone(),
                version_id: r.version_id.clone(),
                why,
            };
            match self.check_one(&r, &cache) {
                Ok(problems) => {
                    report.bytes += r.size;
                    report.problems.extend(problems.into_iter().map(problem));
                }
                Err(e) => report
                    .problems
                    .push(problem(bulwark_repository::error_chain(&e))),
            }
        }
        Ok(report)
    }

    fn check_one(&self, r: &ObjectRecord, cache: &std::path::Path) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let h = self.store.head_version(&r.key, &r.version_id)?;
        if h.size != r.size {
            problems.push(format!("holds {} bytes, {} recorded", h.size, r.size));
        }
        if h.lock_mode != "COMPLIANCE" {
            problems.push(format!("lock mode is {:?}, not COMPLIANCE", h.lock_mode));
        }
        if h.retain_until < r.retain_until {
            problems.push(format!(
                "retain-until {} is earlier than the recorded {}",
                bulwark_repository::utc(h.retain_until),
                bulwark_repository::utc(r.retain_until)
            ));
        }
        let mut f = tempfile::tempfile_in(cache)
            .map_err(crate::TierError::io(cache, "creating a file in"))?;
        let (n, hash) = self.store.download(&r.key, &r.version_id, &mut f, r.size)?;
        if n != r.size || hash.to_hex().as_str() != r.blake3 {
            problems.push(format!(
                "content hash {} differs from the recorded {}",
                hash.to_hex(),
                r.blake3
            ));
        } else {
            f.rewind().map_err(crate::TierError::io(cache, "reading"))?;
            match PointReader::open(f) {
                Ok(p) if p.trailer.root_digest.to_hex() == r.root_digest => {}
                Ok(p) => problems.push(format!(
                    "root digest {} differs from the recorded {}",
                    p.trailer.root_digest, r.root_digest
                )),
                Err(e) => problems.push(format!("not a readable restore point: {e}")),
            }
        }
        Ok(problems)
    }
}
