//! Both sides of a copy on a repository folder of this machine.

use bulwark_format::{BlockNo, MapEntry, PointId};
use bulwark_repository::{error_chain, CopyHead, CopyPlan, CopyReceiver, HeldPoint, Repository};

use crate::{CopyError, Finished, Result, Source, SourcePoint, Target};

/// A local repository copied from.
pub struct LocalSource {
    pub repo: Repository,
}

/// A local repository copied to.
pub struct LocalTarget {
    pub repo: Repository,
    current: Option<CopyReceiver>,
}

impl LocalTarget {
    /// Copies into `repo`.
    pub fn new(repo: Repository) -> Self {
        LocalTarget {
            repo,
            current: None,
        }
    }
}

/// A local verify's findings, one line per damaged point.
fn verify_lines(repo: &Repository, job: &str) -> Result<Vec<String>> {
    let r = repo.verify(Some(job), 2, &|_| {})?;
    Ok(r.damaged
        .iter()
        .map(|d| {
            format!(
                "{}: {}",
                d.point.map_or("unknown point".into(), |p| p.to_hex()),
                d.problems.join("; ")
            )
        })
        .collect())
}

impl Source for LocalSource {
    fn describe(&self) -> String {
        self.repo.root().display().to_string()
    }

    fn jobs(&mut self) -> Result<Vec<String>> {
        Ok(self.repo.jobs()?)
    }

    fn points(&mut self, job: &str) -> Result<Vec<SourcePoint>> {
        let scan = self.repo.scan_job(job)?;
        if let Some((path, e)) = scan.unreadable.first() {
            let text = format!(
                "{} cannot be read ({}); run `bulwark verify --repo {}` before copying job {job:?}",
                path.display(),
                error_chain(e),
                self.repo.root().display()
            );
            return Err(if e.is_damage() {
                CopyError::Damaged(text)
            } else {
                CopyError::Usage(text)
            });
        }
        Ok(scan
            .points
            .into_iter()
            .map(|p| SourcePoint {
                point: p.meta.point,
                chain: p.meta.chain,
                parent: p.meta.parent,
                kind: p.meta.kind,
                root: p.root,
                created: p.meta.created_unix_secs,
            })
            .collect())
    }

    fn head(&mut self, job: &str, point: PointId) -> Result<CopyHead> {
        Ok(self.repo.copy_head(job, point)?)
    }

    fn read(
        &mut self,
        job: &str,
        point: PointId,
        blocks: &[BlockNo],
        each: &mut dyn FnMut(&MapEntry, &[u8]) -> Result<()>,
    ) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let chain = self.repo.open_point(job, Some(point))?;
        let mut buf = Vec::new();
        // Ask the device for blocks ahead of the reader (about 32 MiB), as restores do.
        let ahead = chain.prefetch_distance();
        let entry_of = |b: &BlockNo| {
            chain
                .entries()
                .binary_search_by_key(b, |e| e.block)
                .ok()
                .map(|i| chain.entries()[i])
        };
        for b in blocks.iter().take(ahead) {
            if let Some(e) = entry_of(b) {
                chain.will_need(&e);
            }
        }
        for (k, b) in blocks.iter().enumerate() {
            if let Some(e) = blocks.get(k + ahead).and_then(&entry_of) {
                chain.will_need(&e);
            }
            let i = chain
                .entries()
                .binary_search_by_key(b, |e| e.block)
                .map_err(|_| {
                    CopyError::Usage(format!(
                        "the target asked for block {b}, which restore point {point} does not hold"
                    ))
                })?;
            let e = chain.entries()[i];
            let file = chain.file_of(&e);
            let own = MapEntry { file_ref: 0, ..e };
            let stored = file.read_stored(&own, &mut buf).map_err(|source| {
                CopyError::Repo(bulwark_repository::RepoError::Format {
                    path: self.repo.point_path(job, file.meta.chain, file.meta.point),
                    source,
                })
            })?;
            // The source checks what it reads: a damaged block is not sent.
            if bulwark_format::Digest::of(stored) != e.stored_hash {
                return Err(CopyError::Repo(bulwark_repository::RepoError::Format {
                    path: self.repo.point_path(job, file.meta.chain, file.meta.point),
                    source: bulwark_format::FormatError::StoredHash {
                        block: e.block,
                        offset: e.offset,
                    },
                }));
            }
            each(&e, stored)?;
        }
        Ok(())
    }

    fn verify(&mut self, job: &str) -> Result<Vec<String>> {
        verify_lines(&self.repo, job)
    }
}

impl Target for LocalTarget {
    fn describe(&self) -> String {
        self.repo.root().display().to_string()
    }

    fn held(&mut self, job: &str) -> Result<Vec<HeldPoint>> {
        Ok(self.repo.held_points(job)?)
    }

    fn begin(&mut self, job: &str, head: &CopyHead) -> Result<CopyPlan> {
        self.current = None;
        let r = self.repo.begin_copy(job, head)?;
        let plan = r.plan().clone();
        self.current = Some(r);
        Ok(plan)
    }

    fn put(&mut self, e: &MapEntry, stored: &[u8]) -> Result<()> {
        let r = self
            .current
            .as_mut()
            .ok_or_else(|| CopyError::Usage("no copy in progress".into()))?;
        Ok(r.put(e.block, stored)?)
    }

    fn finish(&mut self) -> Result<Finished> {
        let r = self
            .current
            .take()
            .ok_or_else(|| CopyError::Usage("no copy in progress".into()))?;
        let c = r.finish(&self.repo)?;
        Ok(Finished {
            mode: c.mode,
            point: c.point,
            chain: c.sealed.as_ref().map_or(PointId::NONE, |s| s.meta.chain),
            root: c.root,
            immutable: c.sealed.as_ref().is_some_and(|s| s.immutable),
            expiry: c.sealed.as_ref().and_then(|s| s.expiry),
            retention: c.retention,
        })
    }

    fn abandon(&mut self) {
        self.current = None;
    }

    fn verify(&mut self, job: &str) -> Result<Vec<String>> {
        verify_lines(&self.repo, job)
    }
}
