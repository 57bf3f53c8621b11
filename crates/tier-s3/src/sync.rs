//! `tier sync`: upload every sealed restore point not yet copied, extend the retention of
//! copies whose chain grew, and (in move mode) free local files whose protection ended.
//!
//! A point counts as copied only when its record exists, and the record is written only after
//! the upload completed and its COMPLIANCE retention was read back. A sync that stops half-way
//! (endpoint down, process killed) is resumed by running it again: multipart uploads continue
//! from the parts the store already has, and a version uploaded just before a crash is adopted
//! (matched by its BLAKE3) instead of being uploaded a second time.

use std::collections::HashMap;
use std::io::Read;

use bulwark_format::PointId;
use bulwark_immut_msg::{ErrorCode, ImmutClient, Target};
use bulwark_repository::{error_chain, PointInfo, Repository};

use crate::record::{self, ObjectRecord, PendingUpload};
use crate::store::now_unix;
use crate::{skew_warning, Result, Tier, TierError, TierMode};

/// Clock differences up to this many seconds are treated as none.
const SKEW_NOISE_SECS: i64 = 2;

/// Shortest lock given to a copy, even when the local expiry has already passed (seconds).
pub const MIN_REMOTE_LOCK_SECS: i64 = 86_400;

/// Knobs of a sync.
#[derive(Debug, Default, Clone)]
pub struct SyncOptions {
    /// Time used to decide whether a local expiry has passed (tests); this host's clock if
    /// `None`.
    pub now: Option<i64>,
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Points uploaded now (hex ids).
    pub uploaded: Vec<String>,
    /// Points whose earlier upload was found in the store and adopted.
    pub adopted: Vec<String>,
    /// Points already copied before this sync.
    pub already: u64,
    /// Copies whose retention was extended.
    pub extended: u64,
    /// Local files freed (move mode).
    pub moved: Vec<String>,
    pub bytes_uploaded: u64,
    pub parts_uploaded: u64,
    /// Parts of interrupted multipart uploads that the store already had.
    pub parts_resumed: u64,
    /// Store clock minus this host's, seconds.
    pub skew: Option<i64>,
    /// True when no immutability service guards the repository: expiries were computed
    /// from creation time plus the repository's period.
    pub unguarded: bool,
    pub warnings: Vec<String>,
    /// Points not uploaded because a stored block, its padding or a gap does not check out
    /// (`path: why`): a damaged copy must not be locked in the store, where it could not be
    /// replaced until its lock ends. They stay pending.
    pub damaged: Vec<String>,
    /// Restore-point files that cannot be read at all (`path: why`); not uploaded, pending.
    pub unreadable: Vec<String>,
}

/// Checks every stored block of `p`'s own file against its stored hash, with its padding
/// and every gap zero — what `bulwark-repo verify` checks without a key — before a copy of it
/// is locked in the store. `Err(why)` on the first problem.
fn check_point(p: &PointInfo) -> std::result::Result<(), String> {
    let f = std::fs::File::open(&p.path).map_err(|e| format!("opening: {e}"))?;
    let r = bulwark_format::PointReader::open(f).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    for e in r.map.iter().filter(|e| e.file_ref == 0) {
        let stored = r
            .read_stored_padded(e, &mut buf)
            .map_err(|e| e.to_string())?;
        if bulwark_format::Digest::of(stored) != e.stored_hash {
            return Err(format!(
                "block {}: stored bytes at offset {} do not match their hash",
                e.block, e.offset
            ));
        }
    }
    for (start, end) in r.gaps() {
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(1 << 20);
            buf.resize(n, 0);
            std::os::unix::fs::FileExt::read_exact_at(r.file(), &mut buf, at)
                .map_err(|e| format!("reading bytes at {at}: {e}"))?;
            if buf.iter().any(|&b| b != 0) {
                return Err(format!("non-zero bytes outside every block at {at}..{end}"));
            }
            at += n as u64;
        }
    }
    Ok(())
}

/// Where local expiries come from.
enum Expiries {
    Ledger(ImmutClient),
    Computed,
}

impl Expiries {
    fn open(repo: &Repository) -> Result<Expiries> {
        match &repo.config().immutd_socket {
            Some(s) => Ok(Expiries::Ledger(
                ImmutClient::connect(s).map_err(|e| TierError::Immut(error_chain(&e)))?,
            )),
            None => Ok(Expiries::Computed),
        }
    }

    /// Local expiry of every point of a job: the ledger's when guarded, else creation plus
    /// the period with the chain rule (a chain is protected until its newest point's expiry).
    fn of_job(&mut self, points: &[PointInfo], days: u32) -> Result<HashMap<PointId, i64>> {
        let period = i64::from(days) * 86_400;
        let mut chain_last: HashMap<PointId, i64> = HashMap::new();
        for p in points {
            let e = chain_last.entry(p.meta.chain).or_insert(i64::MIN);
            *e = (*e).max(p.meta.created_unix_secs);
        }
        let mut out = HashMap::new();
        for p in points {
            let computed = chain_last[&p.meta.chain].max(p.meta.created_unix_secs) + period;
            let e = match self {
                Expiries::Computed => computed,
                Expiries::Ledger(c) => match c.query(Target::Point(p.meta.point)) {
                    Ok(i) => i.expiry_unix,
                    Err(e) if e.code() == Some(ErrorCode::NotFound) => computed,
                    Err(e) => return Err(TierError::Immut(error_chain(&e))),
                },
            };
            out.insert(p.meta.point, e);
        }
        Ok(out)
    }
}

impl Tier {
    /// Retain-until by the store's clock for a local expiry by this host's clock.
    fn store_until(&self, local_expiry: i64) -> i64 {
        // `Date` has whole seconds: a skew this small is measurement noise, and correcting
        // by it would lock a copy a second shorter than the local file.
        let skew = self
            .store
            .skew()
            .filter(|s| s.abs() > SKEW_NOISE_SECS)
            .unwrap_or(0);
        (local_expiry + skew).max(self.store.store_now() + MIN_REMOTE_LOCK_SECS)
    }

    /// Runs a sync: upload pending points, extend retention, apply move mode.
    pub fn sync(&self, repo: &Repository, opts: &SyncOptions) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let name = self.settings.name.clone();
        // Learn the store's clock before computing any retain-until.
        if let Err(why) = self.store.object_lock_enabled()? {
            return Err(TierError::NoObjectLock {
                bucket: self.settings.bucket.clone(),
                why,
            });
        }
        report.skew = self.store.skew();
        report.warnings.extend(skew_warning(report.skew));
        if let Some(stale) = &self.stale_prefix {
            self.settings.save(repo.root())?;
            report.warnings.push(format!(
                "tier {name} named the key prefix {stale}/ of another repository (an earlier `bulwark-tier import` kept it); this repository (id {}) copies its restore points under its own prefix {}/, so that two repositories' copies never share one; the setting is corrected, and copies already recorded keep their keys",
                repo.config().id,
                self.settings.prefix
            ));
        }
        let mut expiries = Expiries::open(repo)?;
        report.unguarded = matches!(expiries, Expiries::Computed);
        if report.unguarded {
            report.warnings.push(format!(
                "no immutability service guards this repository: retain-until = creation time + {} days (the repository's period)",
                repo.config().immutable_days
            ));
        }
        let mut records: HashMap<String, ObjectRecord> = record::load_all(repo.root(), &name)?
            .into_iter()
            .map(|r| (r.point.clone(), r))
            .collect();
        let now = opts.now.unwrap_or_else(now_unix);
        for job in repo.jobs()? {
            let scan = repo.scan_job(&job)?;
            for (path, e) in &scan.unreadable {
                report.unreadable.push(format!(
                    "{}: {}",
                    path.display(),
                    bulwark_repository::error_chain(e)
                ));
            }
            let exp = expiries.of_job(&scan.points, repo.config().immutable_days)?;
            for p in &scan.points {
                let id = p.meta.point.to_hex();
                let local_expiry = exp[&p.meta.point];
                match records.get_mut(&id) {
                    None => {
                        if let Err(why) = check_point(p) {
                            report.damaged.push(format!("{}: {why}", p.path.display()));
                            continue;
                        }
                        let (r, adopted) = self.upload_point(p, local_expiry, &mut report)?;
                        if adopted {
                            report.adopted.push(id.clone());
                        } else {
                            report.uploaded.push(id.clone());
                        }
                        records.insert(id.clone(), r);
                    }
                    Some(r) => {
                        report.already += 1;
                        let want = self.store_until(local_expiry);
                        if local_expiry > r.local_expiry && want > r.retain_until {
                            r.retain_until = self.set_and_check(&r.key, &r.version_id, want)?;
                            r.local_expiry = local_expiry;
                            record::save(repo.root(), &name, r)?;
                            report.extended += 1;
                        }
                    }
                }
                if self.settings.mode == TierMode::Move && local_expiry <= now {
                    self.move_out(repo, &mut expiries, p, &records[&id])?;
                    report.moved.push(id);
                }
            }
        }
        Ok(report)
    }

    /// Sets COMPLIANCE retention until `until` on a version and reads it back; returns the
    /// retain-until the store reports.
    pub(crate) fn set_and_check(&self, key: &str, version: &str, until: i64) -> Result<i64> {
        match self.store.get_retention(key, version)? {
            Some((m, t)) if m == "COMPLIANCE" && t >= until => return Ok(t),
            _ => {}
        }
        self.store.put_retention(key, version, until)?;
        match self.store.get_retention(key, version)? {
            Some((m, t)) if m == "COMPLIANCE" && t >= until => Ok(t),
            got => Err(TierError::Object {
                key: key.to_string(),
                version: version.to_string(),
                why: format!(
                    "retention was set to COMPLIANCE until {} but reads back as {got:?}",
                    bulwark_repository::utc(until)
                ),
            }),
        }
    }

    /// Uploads one point (or adopts an identical version already in the store), sets and
    /// checks its retention, and writes its record. Returns the record and whether it was
    /// adopted.
    fn upload_point(
        &self,
        p: &PointInfo,
        local_expiry: i64,
        report: &mut SyncReport,
    ) -> Result<(ObjectRecord, bool)> {
        let (job, chain, point) = (&p.meta.job, p.meta.chain.to_hex(), p.meta.point.to_hex());
        let key = self.key_of(job, &chain, &point);
        let until = self.store_until(local_expiry);
        let mut f = std::fs::File::open(&p.path).map_err(TierError::io(&p.path, "opening"))?;
        let size = f
            .metadata()
            .map_err(TierError::io(&p.path, "reading"))?
            .len();
        let hash = hash_file(&mut f, &p.path)?;
        let meta: HashMap<String, String> = [
            ("bulwark-blake3", hash.to_hex().to_string()),
            ("bulwark-root", p.root.to_hex()),
            ("bulwark-job", job.clone()),
            ("bulwark-immutable-days", self.immutable_days.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let adopted = self.find_uploaded(&key, size, &hash.to_hex())?;
        let (version, multipart) = match adopted.clone() {
            Some(v) => (v, size > self.settings.part_size),
            None if size <= self.settings.part_size => {
                let mut data = Vec::with_capacity(size as usize);
                std::io::Seek::rewind(&mut f).map_err(TierError::io(&p.path, "reading"))?;
                (&mut f)
                    .take(self.settings.part_size + 1)
                    .read_to_end(&mut data)
                    .map_err(TierError::io(&p.path, "reading"))?;
                if data.len() as u64 != size || blake3::hash(&data) != hash {
                    return Err(TierError::config(format!(
                        "{} changed while being uploaded",
                        p.path.display()
                    )));
                }
                let v = self.store.put_locked(&key, data, until, &meta)?;
                report.bytes_uploaded += size;
                (v, false)
            }
            None => {
                let ps = self.settings.part_size;
                let pending = record::load_pending(&self.root, &self.settings.name, &point)?;
                let resume = match pending {
                    Some(pu) if pu.key == key && pu.size == size && pu.part_size == ps => self
                        .store
                        .list_parts(&key, &pu.upload_id)?
                        .map(|have| (pu.upload_id, have)),
                    _ => None,
                };
                let (upload_id, have) = match resume {
                    Some(r) => r,
                    None => {
                        let id = self.store.create_multipart(&key, until, &meta)?;
                        record::save_pending(
                            &self.root,
                            &self.settings.name,
                            &point,
                            &PendingUpload {
                                key: key.clone(),
                                upload_id: id.clone(),
                                part_size: ps,
                                size,
                                retain_until: until,
                            },
                        )?;
                        (id, HashMap::new())
                    }
                };
                let (v, h, sent) = self
                    .store
                    .upload_parts(&key, &upload_id, &mut f, size, ps, &have)?;
                if h != hash {
                    return Err(TierError::config(format!(
                        "{} changed while being uploaded",
                        p.path.display()
                    )));
                }
                let parts = size.div_ceil(ps);
                report.parts_uploaded += sent;
                report.parts_resumed += parts - sent;
                report.bytes_uploaded += size.min(sent * ps);
                (v, true)
            }
        };
        // Set, then check: some stores ignore lock headers on multipart uploads.
        let retain_until = self.set_and_check(&key, &version, until)?;
        let head = self.store.head_version(&key, &version)?;
        if head.size != size {
            return Err(TierError::Object {
                key,
                version,
                why: format!("the store holds {} bytes, {size} were uploaded", head.size),
            });
        }
        let r = ObjectRecord {
            job: job.clone(),
            chain,
            point: point.clone(),
            key,
            version_id: version,
            size,
            blake3: hash.to_hex().to_string(),
            root_digest: p.root.to_hex(),
            retain_until,
            local_expiry,
            uploaded_unix: now_unix(),
            multipart,
        };
        record::save(&self.root, &self.settings.name, &r)?;
        record::clear_pending(&self.root, &self.settings.name, &point)?;
        Ok((r, adopted.is_some()))
    }

    /// A version of `key` uploaded earlier with the same size and BLAKE3 (a sync that
    /// stopped after the upload but before writing its record).
    fn find_uploaded(&self, key: &str, size: u64, hash: &str) -> Result<Option<String>> {
        for v in self.store.list_versions(key)? {
            if v.key != key || v.size != size {
                continue;
            }
            let h = self.store.head_version(key, &v.version_id)?;
            if h.metadata.get("bulwark-blake3").map(String::as_str) == Some(hash) {
                return Ok(Some(v.version_id));
            }
        }
        Ok(None)
    }

    /// Frees the local file of a point whose local protection has ended, after confirming
    /// its copy: the version exists with the recorded size and hash and is still locked.
    fn move_out(
        &self,
        repo: &Repository,
        expiries: &mut Expiries,
        p: &PointInfo,
        r: &ObjectRecord,
    ) -> Result<()> {
        let h = self.store.head_version(&r.key, &r.version_id)?;
        let ok = h.size == r.size
            && h.lock_mode == "COMPLIANCE"
            && h.retain_until >= r.retain_until
            && h.metadata.get("bulwark-blake3") == Some(&r.blake3);
        if !ok {
            return Err(TierError::Object {
                key: r.key.clone(),
                version: r.version_id.clone(),
                why: format!(
                    "not confirmed (size {}, lock {:?} until {}), so the local file is kept",
                    h.size, h.lock_mode, h.retain_until
                ),
            });
        }
        match expiries {
            Expiries::Ledger(c) => {
                c.delete(Target::Point(p.meta.point))
                    .map_err(|e| TierError::Immut(error_chain(&e)))?;
            }
            Expiries::Computed => {
                std::fs::remove_file(&p.path).map_err(TierError::io(&p.path, "removing"))?;
                if let Some(d) = p.path.parent() {
                    bulwark_repository::fsync_dir(d)?;
                }
            }
        }
        tracing::info!(point = %p.meta.point, key = %r.key, "local file freed; the copy in the tier remains");
        let _ = repo;
        Ok(())
    }
}

/// BLAKE3 of a whole file.
fn hash_file(f: &mut std::fs::File, path: &std::path::Path) -> Result<blake3::Hash> {
    std::io::Seek::rewind(f).map_err(TierError::io(path, "reading"))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(TierError::io(path, "reading"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
}
