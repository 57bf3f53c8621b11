//! Reading a restore point together with the earlier files its map references.

use std::collections::HashMap;
use std::path::PathBuf;

use bulwark_format::{BlockDecoder, BlockNo, Digest, FileRef, MapEntry, PointId, PointReader};

use crate::{RepoError, Repository, Result};

/// A restore point opened for reading, with every file it references opened and checked
/// against the root digest recorded in its file table.
pub struct ChainReader {
    pub path: PathBuf,
    main: PointReader,
    refs: Vec<PointReader>,
}

impl ChainReader {
    /// The restore point's own reader (metadata, map).
    pub fn point(&self) -> &PointReader {
        &self.main
    }

    /// The block map of the restore point: every non-zero block of the disk.
    pub fn entries(&self) -> &[MapEntry] {
        &self.main.map
    }

    /// The file holding the stored bytes of `e`.
    pub fn file_of(&self, e: &MapEntry) -> &PointReader {
        match e.file_ref {
            0 => &self.main,
            k => &self.refs[k as usize - 1],
        }
    }

    /// Asks the device for the stored bytes of `e` ahead of reading them, so that a reader
    /// running through the map keeps the device busy (cold reads at queue depth one are slow).
    pub fn will_need(&self, e: &MapEntry) {
        let f = self.file_of(e).file();
        let _ = rustix::fs::fadvise(
            f,
            e.offset,
            u64::from(e.stored_len),
            rustix::fs::Advice::WillNeed,
        );
    }

    /// How many entries ahead of a reader to call [`ChainReader::will_need`]: about 32 MiB.
    pub fn prefetch_distance(&self) -> usize {
        ((32u64 << 20) / u64::from(self.main.meta.block_size)).max(1) as usize
    }

    /// Reads, checks and decodes one block into `out`; `stored` is scratch space.
    pub fn read_block(&self, e: &MapEntry, stored: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
        let mut dec = BlockDecoder::new().map_err(RepoError::format(&self.path))?;
        let mut scratch = Vec::new();
        let plain = self.read_block_with(&mut dec, e, stored, &mut scratch)?;
        out.clear();
        out.extend_from_slice(plain);
        Ok(())
    }

    /// Reads, checks and decodes one block with a decoder kept by the caller (one per
    /// worker); `stored` and `out` are its reusable buffers. Returns the plain block: part of
    /// `stored` for a block stored raw, else part of `out`.
    pub fn read_block_with<'a>(
        &self,
        dec: &mut BlockDecoder,
        e: &MapEntry,
        stored: &'a mut Vec<u8>,
        out: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        let file = self.file_of(e);
        let local = MapEntry { file_ref: 0, ..*e };
        let stored = file
            .read_stored(&local, stored)
            .map_err(RepoError::format(&self.path))?;
        dec.decode(e, stored, out)
            .map_err(RepoError::format(&self.path))
    }
}

/// What an incremental needs of its parent: its map and file table, to compare hashes and
/// to reference unchanged blocks.
#[derive(Clone, Debug)]
pub struct ParentMap {
    pub point: PointId,
    pub chain: PointId,
    pub root: Digest,
    pub entries: Vec<MapEntry>,
    pub files: Vec<FileRef>,
    pub disk_size: u64,
    pub block_size: u32,
}

impl ParentMap {
    /// The parent's entry for `block`, if the block is not zero there.
    pub fn entry(&self, block: BlockNo) -> Option<&MapEntry> {
        self.entries
            .binary_search_by_key(&block, |e| e.block)
            .ok()
            .map(|i| &self.entries[i])
    }
    /// The plain hash of `block` in the parent, if not zero.
    pub fn hash_of(&self, block: BlockNo) -> Option<Digest> {
        self.entry(block).map(|e| e.plain_hash)
    }
    /// The file an entry's data lives in, as a file-table reference.
    pub fn file_of(&self, e: &MapEntry) -> FileRef {
        match e.file_ref {
            0 => FileRef {
                point: self.point,
                root: self.root,
            },
            k => self.files[k as usize - 1],
        }
    }
}

impl Repository {
    /// Finds the file of restore point `point` of `job` (or the newest with `None`).
    pub(crate) fn locate(
        &self,
        job: &str,
        point: Option<PointId>,
    ) -> Result<(PointId, PointId, PathBuf)> {
        let files: Vec<_> = self
            .all_point_files(job)?
            .into_iter()
            .map(|(c, p, path, _)| (c, p, path))
            .collect();
        if files.is_empty() {
            return Err(RepoError::NoSuchJob(job.to_string()));
        }
        let found = match point {
            None => files.last().cloned(),
            Some(p) => files.into_iter().find(|(_, id, _)| *id == p),
        };
        found.ok_or_else(|| RepoError::NoSuchPoint {
            job: job.to_string(),
            point: point.map(|p| p.to_hex()).unwrap_or_default(),
        })
    }

    /// Opens restore point `point` of `job` (the newest with `None`) for restoring.
    pub fn open_point(&self, job: &str, point: Option<PointId>) -> Result<ChainReader> {
        let (chain, id, path) = self.locate(job, point)?;
        let main = self.open_stored(&path, job, chain, id)?;
        let index: HashMap<PointId, (PointId, PathBuf)> = self
            .all_point_files(job)?
            .into_iter()
            .map(|(c, p, path, _)| (p, (c, path)))
            .collect();
        let mut refs = Vec::with_capacity(main.meta.files.len());
        for fr in &main.meta.files {
            let broken = |why: String| RepoError::BrokenChain {
                point: id.to_hex(),
                missing: fr.point.to_hex(),
                why,
            };
            let (c, p) = index
                .get(&fr.point)
                .ok_or_else(|| broken("file not found".into()))?;
            let r = self
                .open_stored(p, job, *c, fr.point)
                .map_err(|e| broken(crate::error_chain(&e)))?;
            if r.trailer.root_digest != fr.root {
                return Err(broken(
                    "its root digest differs from the one recorded".into(),
                ));
            }
            refs.push(r);
        }
        Ok(ChainReader { path, main, refs })
    }

    /// The map of the newest restore point of `job`, for an incremental, or `None` when the
    /// job has none.
    pub fn parent_map(&self, job: &str) -> Result<Option<ParentMap>> {
        let Ok((chain, id, path)) = self.locate(job, None) else {
            return Ok(None);
        };
        let r = self.open_stored(&path, job, chain, id)?;
        Ok(Some(ParentMap {
            point: id,
            chain: r.meta.chain,
            root: r.trailer.root_digest,
            disk_size: r.meta.disk_size,
            block_size: r.meta.block_size,
            files: r.meta.files.clone(),
            entries: r.map,
        }))
    }
}
