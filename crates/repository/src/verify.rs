//! Re-reading every stored block of every restore point and naming what is damaged.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bulwark_format::{BlockDecoder, MapEntry, PointId, PointReader};
use bulwark_immut_msg::{FileInfo, FileState, ImmutClient};

use crate::points::point_files;
use crate::seal_immutd::Ledger;
use crate::{Repository, Result};

/// A restore point that cannot be restored completely, and why.
#[derive(Debug, Clone)]
pub struct DamagedPoint {
    pub job: String,
    /// `None` when the file is too damaged to tell its id from its content.
    pub point: Option<PointId>,
    /// The chain the damaged point belongs to, when known.
    pub chain: Option<PointId>,
    pub path: PathBuf,
    pub problems: Vec<String>,
    /// Disk block numbers whose data is bad (empty when the whole file is unreadable).
    pub blocks: Vec<u64>,
}

/// The outcome of a verify.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub points_checked: u64,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub damaged: Vec<DamagedPoint>,
}

impl VerifyReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
    }
}

impl Repository {
    /// Verifies the given jobs (all with `None`) using `threads` readers. `progress` is called
    /// with the number of stored bytes checked since its last call.
    pub fn verify(
        &self,
        job: Option<&str>,
        threads: usize,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<VerifyReport> {
        let mut view = self.ledger_view()?;
        let known = self.known_jobs(view.as_ref())?;
        let jobs = match job {
            Some(j) => {
                self.check_job_in(j, &known)?;
                vec![j.to_string()]
            }
            None => known,
        };
        let mut report = VerifyReport::default();
        for job in jobs {
            let before = report.damaged.len();
            self.verify_job(&job, threads.max(1), progress, &mut report, view.as_mut())?;
            self.record_health(&job, &report.damaged[before..])?;
        }
        Ok(report)
    }

    /// Refuses a job name that is not allowed or names no job of this repository, listing
    /// the jobs it has. A job whose files are all gone but that the immutability ledger
    /// still holds exists.
    pub fn require_job(&self, job: &str) -> Result<()> {
        let view = self.ledger_view()?;
        self.check_job_in(job, &self.known_jobs(view.as_ref())?)
    }

    /// The ledger as verify compares it, when the repository is guarded.
    fn ledger_view(&self) -> Result<Option<LedgerView>> {
        match &self.config().immutd_socket {
            Some(socket) => LedgerView::load(socket, self.root()).map(Some),
            None => Ok(None),
        }
    }

    /// The jobs with a folder in the store (or the tier), and those only the ledger holds.
    fn known_jobs(&self, view: Option<&LedgerView>) -> Result<Vec<String>> {
        let mut jobs = self.jobs()?;
        if let Some(v) = view {
            for info in v.live() {
                if !jobs.contains(&info.job) {
                    jobs.push(info.job.clone());
                }
            }
            jobs.sort();
        }
        Ok(jobs)
    }

    /// [`Repository::require_job`] against the already known jobs.
    fn check_job_in(&self, job: &str, known: &[String]) -> Result<()> {
        bulwark_format::validate_name("job", job)
            .map_err(|e| crate::RepoError::Usage(e.to_string()))?;
        if known.iter().any(|j| j == job) {
            return Ok(());
        }
        Err(crate::RepoError::Usage(format!(
            "no job {job:?} in repository {}; {}",
            self.root().display(),
            match known.is_empty() {
                true => "it has no jobs yet".to_string(),
                false => format!("its jobs: {}", known.join(", ")),
            }
        )))
    }

    /// Remembers what verify found, so that the next backup of a damaged chain is an active
    /// full: `health/<job>.damaged` lists the damaged chains; a clean verify removes it.
    fn record_health(&self, job: &str, damaged: &[DamagedPoint]) -> Result<()> {
        let dir = self.root().join("health");
        let path = dir.join(format!("{job}.damaged"));
        if damaged.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => crate::fsync_dir(&dir)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::RepoError::io(&path, "removing")(e)),
            }
            return Ok(());
        }
        if !dir.exists() {
            std::fs::create_dir(&dir).map_err(crate::RepoError::io(&dir, "creating"))?;
        }
        let mut text = String::new();
        for d in damaged {
            let chain = d
                .chain
                .map(|c| c.to_hex())
                .unwrap_or_else(|| "unknown".into());
            let point = d
                .point
                .map(|p| p.to_hex())
                .unwrap_or_else(|| "unknown".into());
            text.push_str(&format!(
                "{chain} {point} {}\n",
                d.problems.join("; ").replace('\n', " ")
            ));
        }
        crate::write_atomic(&path, text.as_bytes())
    }

    /// Why the job's current chain must not be continued, if verify found damage in it
    /// (or found a file it could not read at all).
    pub fn chain_damage(&self, job: &str) -> Result<Option<String>> {
        let path = self.root().join("health").join(format!("{job}.damaged"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(crate::RepoError::io(&path, "reading")(e)),
        };
        let current = point_files(self.root(), job)?
            .last()
            .map(|(c, _, _)| c.to_hex());
        for line in text.lines() {
            let mut it = line.splitn(3, ' ');
            let (chain, point, why) = (
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
            );
            if chain == "unknown" || Some(chain) == current.as_deref() {
                return Ok(Some(format!(
                    "verify found restore point {point} of the current chain damaged ({why})"
                )));
            }
        }
        Ok(None)
    }

    fn verify_job(
        &self,
        job: &str,
        threads: usize,
        progress: &(dyn Fn(u64) + Sync),
        report: &mut VerifyReport,
        mut view: Option<&mut LedgerView>,
    ) -> Result<()> {
        let before = report.damaged.len();
        let mut readers: Vec<(PathBuf, PointReader)> = Vec::new();
        // Points read from the remote tier are not in the local ledger any more (or never
        // were, after an import); `bulwark-tier verify` checks their locks instead.
        let mut remote = std::collections::HashSet::new();
        for (chain, point, path, is_remote) in self.all_point_files(job)? {
            report.points_checked += 1;
            // Bytes outside every block and its padding (a writer leaves none) must be zero.
            match self
                .open_stored(&path, job, chain, point)
                .and_then(|r| match r.check_gaps() {
                    Ok(()) => Ok(r),
                    Err(e) => Err(crate::RepoError::format(&path)(e)),
                }) {
                Ok(r) => {
                    if is_remote {
                        remote.insert(readers.len());
                    }
                    readers.push((path, r))
                }
                Err(e) => report.damaged.push(DamagedPoint {
                    job: job.to_string(),
                    point: Some(point),
                    chain: Some(chain),
                    path,
                    problems: vec![crate::error_chain(&e)],
                    blocks: vec![],
                }),
            }
        }
        // Check every file's own blocks once, in parallel; remember the bad (file, offset)s.
        let tasks: Vec<(usize, MapEntry)> = readers
            .iter()
            .enumerate()
            .flat_map(|(i, (_, r))| {
                r.map
                    .iter()
                    .filter(|e| e.file_ref == 0)
                    .map(move |e| (i, *e))
            })
            .collect();
        let (tx, rx) = crossbeam_channel::bounded::<(usize, MapEntry)>(threads * 4);
        let (btx, brx) = crossbeam_channel::unbounded::<(usize, u64, String)>();
        let (blocks, bytes) = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for _ in 0..threads {
                let rx = rx.clone();
                let btx = btx.clone();
                let readers = &readers;
                handles.push(s.spawn(move || {
                    let (mut stored, mut plain) = (Vec::new(), Vec::new());
                    let (mut n, mut bytes) = (0u64, 0u64);
                    let mut dec = BlockDecoder::new();
                    for (i, e) in rx {
                        let r = &readers[i].1;
                        let res =
                            r.read_stored_padded(&e, &mut stored).and_then(|stored| {
                                match dec.as_mut() {
                                    Ok(d) => d.check(&e, stored, &mut plain),
                                    Err(err) => {
                                        Err(bulwark_format::FormatError::Invalid(err.to_string()))
                                    }
                                }
                            });
                        if let Err(err) = res {
                            let _ = btx.send((i, e.offset, crate::error_chain(&err)));
                        }
                        n += 1;
                        bytes += u64::from(e.stored_len);
                        progress(u64::from(e.stored_len));
                    }
                    (n, bytes)
                }));
            }
            drop(btx);
            for t in tasks {
                if tx.send(t).is_err() {
                    break;
                }
            }
            drop(tx);
            handles
                .into_iter()
                .map(|h| h.join().expect("verify worker"))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        });
        report.blocks_checked += blocks;
        report.bytes_checked += bytes;
        let bad: HashMap<(usize, u64), String> = brx
            .into_iter()
            .map(|(i, off, why)| ((i, off), why))
            .collect();
        let by_id: HashMap<PointId, usize> = readers
            .iter()
            .enumerate()
            .map(|(i, (_, r))| (r.meta.point, i))
            .collect();
        // Points whose ledger entry has been compared with the store.
        let mut compared = HashSet::new();
        for (i, (path, r)) in readers.iter().enumerate() {
            let mut problems = Vec::new();
            let mut blocks = BTreeSet::new();
            if let Some(view) = view.as_deref_mut() {
                let info = view.entry(r.meta.point)?;
                compared.insert(r.meta.point);
                if !remote.contains(&i) {
                    problems.extend(ledger_problems(info.as_ref(), path, r));
                } else if let Some(info) = info.filter(|i| i.state != FileState::Deleted) {
                    // Read from the tier because the local file is gone: the ledger says it
                    // should be here.
                    problems.push(format!(
                        "{}; the copy in the tier still restores",
                        missing(&info)
                    ));
                }
            }
            // Resolve the file table: every referenced file must be present and unchanged.
            let mut table = Vec::with_capacity(r.meta.files.len());
            for fr in &r.meta.files {
                match by_id.get(&fr.point) {
                    Some(&j) if readers[j].1.trailer.root_digest == fr.root => table.push(Some(j)),
                    Some(_) => {
                        problems.push(format!(
                            "referenced restore point {} was replaced (root digest differs)",
                            fr.point
                        ));
                        table.push(None);
                    }
                    None => {
                        problems.push(format!(
                            "referenced restore point {} is missing or unreadable",
                            fr.point
                        ));
                        table.push(None);
                    }
                }
            }
            for e in &r.map {
                let holder = if e.file_ref == 0 {
                    Some(i)
                } else {
                    table[e.file_ref as usize - 1]
                };
                match holder {
                    None => {
                        blocks.insert(e.block.0);
                    }
                    Some(j) => {
                        if let Some(why) = bad.get(&(j, e.offset)) {
                            if j == i && blocks.is_empty() {
                                problems.push(format!("block {}: {why}", e.block));
                            }
                            blocks.insert(e.block.0);
                        }
                    }
                }
            }
            if !blocks.is_empty() && problems.is_empty() {
                problems.push(
                    "blocks stored in earlier restore points of the chain are damaged".into(),
                );
            }
            if !problems.is_empty() || !blocks.is_empty() {
                report.damaged.push(DamagedPoint {
                    job: job.to_string(),
                    point: Some(r.meta.point),
                    chain: Some(r.meta.chain),
                    path: path.clone(),
                    problems,
                    blocks: blocks.into_iter().collect(),
                });
            }
        }
        // Every file the ledger says is in the store (locked or unlocked) that verify did not
        // find there, or could not open, must be there and be the file that was sealed.
        let Some(view) = view else {
            return Ok(());
        };
        let rest: Vec<FileInfo> = view
            .live_of(job)
            .filter(|i| !compared.contains(&i.point))
            .cloned()
            .collect();
        for info in rest {
            let problems = match File::open(&info.sealed_path) {
                Ok(f) => file_problems(&info, &f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Asked again: it may have been deleted (expired) since the listing.
                    match view.ledger.entry(info.point)? {
                        Some(now) if now.state != FileState::Deleted => vec![missing(&now)],
                        _ => vec![],
                    }
                }
                Err(e) => vec![format!(
                    "cannot open {}, which the ledger lists as sealed: {e}",
                    info.sealed_path.display()
                )],
            };
            if problems.is_empty() {
                continue;
            }
            match report.damaged[before..]
                .iter_mut()
                .find(|d| d.point == Some(info.point))
            {
                Some(d) => d.problems.extend(problems),
                None => report.damaged.push(DamagedPoint {
                    job: job.to_string(),
                    point: Some(info.point),
                    chain: Some(info.chain),
                    path: info.sealed_path.clone(),
                    problems,
                    blocks: vec![],
                }),
            }
        }
        Ok(())
    }
}

/// The immutability service's ledger of one repository, as verify compares it with the store:
/// listed once, and asked point by point for files sealed since.
struct LedgerView {
    ledger: Ledger,
    /// The listing by point; `None` when the service cannot list (then only files found in the
    /// store are compared, one query each).
    listed: Option<HashMap<PointId, FileInfo>>,
    /// The listed points of each job (verify goes job by job).
    by_job: HashMap<String, Vec<PointId>>,
}

impl LedgerView {
    fn load(socket: &Path, root: &Path) -> Result<LedgerView> {
        let ledger = Ledger::connect(socket)?;
        // The service knows a guarded repository by its configured, canonical path.
        let listed = match ImmutClient::connect(socket).and_then(|mut c| c.list(root)) {
            Ok(entries) => {
                let mut by_point: HashMap<PointId, FileInfo> = HashMap::new();
                for e in entries {
                    // A point sealed again after a deletion: the live entry counts.
                    match by_point.get(&e.point) {
                        Some(old) if old.state != FileState::Deleted => {}
                        _ => {
                            by_point.insert(e.point, e);
                        }
                    }
                }
                Some(by_point)
            }
            Err(e) => {
                tracing::warn!(
                    "the immutability service did not list its ledger ({}): only files found in the store are compared with it",
                    crate::error_chain(&e)
                );
                None
            }
        };
        let mut by_job: HashMap<String, Vec<PointId>> = HashMap::new();
        for i in listed.iter().flat_map(|m| m.values()) {
            by_job.entry(i.job.clone()).or_default().push(i.point);
        }
        Ok(LedgerView {
            ledger,
            listed,
            by_job,
        })
    }

    /// Listed entries whose file must be in the store: locked or unlocked, not deleted.
    fn live(&self) -> impl Iterator<Item = &FileInfo> {
        self.listed
            .iter()
            .flat_map(|m| m.values())
            .filter(|i| i.state != FileState::Deleted)
    }

    /// [`LedgerView::live`] entries of one job.
    fn live_of<'a>(&'a self, job: &'a str) -> impl Iterator<Item = &'a FileInfo> + 'a {
        let points = self.by_job.get(job).map(Vec::as_slice).unwrap_or_default();
        points
            .iter()
            .filter_map(|p| self.listed.as_ref()?.get(p))
            .filter(|i| i.state != FileState::Deleted)
    }

    /// The ledger's entry for a point, or `None` when the service never sealed it.
    fn entry(&mut self, point: PointId) -> Result<Option<FileInfo>> {
        match self.listed.as_ref().and_then(|m| m.get(&point)) {
            Some(i) => Ok(Some(i.clone())),
            None => self.ledger.entry(point),
        }
    }
}

/// The problem of a file the ledger lists as sealed in the store but that is not there.
fn missing(info: &FileInfo) -> String {
    format!(
        "missing from the store: the immutability service's ledger lists it as sealed there ({} until {}), but the file is gone (removed behind the service's back, or lost)",
        info.state.as_str(),
        crate::utc(info.expiry_unix)
    )
}

/// What a file in the store shows against its ledger entry: another inode or size than was
/// sealed (replaced), or, while the ledger says locked, no immutable attribute.
fn file_problems(info: &FileInfo, f: &File) -> Vec<String> {
    let mut out = Vec::new();
    if info.state == FileState::Deleted {
        return out;
    }
    match f.metadata() {
        Ok(m) if m.ino() != info.inode || m.len() != info.size => out.push(format!(
            "inode {} of {} bytes, but the ledger sealed inode {} of {} bytes: the file was replaced",
            m.ino(),
            m.len(),
            info.inode,
            info.size
        )),
        Ok(_) => {}
        Err(e) => out.push(format!("cannot read the file's size and inode: {e}")),
    }
    if info.state == FileState::Locked {
        match bulwark_sys::has_flag(f, bulwark_sys::FS_IMMUTABLE_FL) {
            Ok(true) => {}
            Ok(false) => out.push(format!(
                "not sealed: the immutable attribute is cleared, although the ledger says it is locked until {}",
                crate::utc(info.expiry_unix)
            )),
            Err(e) => out.push(format!("cannot read the file's attributes: {e}")),
        }
    }
    out
}

/// Compares a file found in the store with the immutability service's ledger entry for its
/// point.
fn ledger_problems(info: Option<&FileInfo>, path: &Path, r: &PointReader) -> Vec<String> {
    let Some(info) = info else {
        return vec![
            "not in the immutability service's ledger: never sealed, or placed here behind its back".into(),
        ];
    };
    let mut out = Vec::new();
    if info.root_digest != r.trailer.root_digest {
        out.push(format!(
            "root digest {} differs from the ledger's {}: the file was replaced",
            r.trailer.root_digest, info.root_digest
        ));
    } else if info.sealed_path != path {
        out.push(format!(
            "the ledger has this restore point at {}: the file was moved",
            info.sealed_path.display()
        ));
    }
    if out.is_empty() {
        out.extend(file_problems(info, r.file()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_of_a_job_that_does_not_exist_names_the_jobs_there_are() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init(d.path(), 7).unwrap();
        let e = repo
            .verify(Some("typo"), 1, &|_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no job \"typo\"") && e.contains("no jobs yet"),
            "{e}"
        );
        for job in ["a", "b"] {
            std::fs::create_dir(crate::layout::store_dir(d.path()).join(job)).unwrap();
        }
        let e = repo.require_job("typo").unwrap_err().to_string();
        assert!(e.ends_with("; its jobs: a, b"), "{e}");
        let e = repo.require_job("../x").unwrap_err().to_string();
        assert!(e.contains("is not allowed"), "{e}");
        repo.require_job("a").unwrap();
        assert_eq!(
            repo.verify(Some("a"), 1, &|_| {}).unwrap().points_checked,
            0
        );
    }
}
