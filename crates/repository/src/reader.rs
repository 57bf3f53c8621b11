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
    /// The referenced files, with the paths they were opened at (for messages).
    refs: Vec<(PointReader, PathBuf)>,
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
        self.holder(e).0
    }

    /// The path the file holding the stored bytes of `e` was opened at.
    pub fn path_of(&self, e: &MapEntry) -> &std::path::Path {
        self.holder(e).1
    }

    /// The file holding the stored bytes of `e`, and the path it was opened at.
    fn holder(&self, e: &MapEntry) -> (&PointReader, &std::path::Path) {
        match e.file_ref {
            0 => (&self.main, &self.path),
            k => {
                let (r, p) = &self.refs[k as usize - 1];
                (r, p)
            }
        }
    }

    /// Asks the device for the stored bytes of `e` ahead of reading them, so that a reader
    /// running through the map keeps the device busy (cold reads at queue depth one are slow).
    pub fn will_need(&self, e: &MapEntry) {
        let f = self.file_of(e).file();
        let _ = bulwark_sys::fadvise(
            f,
            e.offset,
            u64::from(e.stored_len),
            bulwark_sys::Advice::WillNeed,
        );
    }

    /// How many entries ahead of a reader to call [`ChainReader::will_need`]: about 32 MiB.
    pub fn prefetch_distance(&self) -> usize {
        ((32u64 << 20) / u64::from(self.main.meta.block_size)).max(1) as usize
    }

    /// A reader of this chain's stored bytes with direct I/O, for a reader that streams a
    /// whole restore point once (the transport service).
    pub fn direct(&self) -> DirectReader<'_> {
        let files = std::iter::once(&self.main)
            .chain(self.refs.iter().map(|(r, _)| r))
            .map(|r| open_direct(r.file()))
            .collect();
        DirectReader { chain: self, files }
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

/// Alignment of direct reads: buffer address, file offset and length.
const DIRECT_ALIGN: usize = 4096;

/// Opens the file behind `f` again with `O_DIRECT` (through `/proc/self/fd`, so it is the
/// very file already opened and checked, not whatever its path names now). `None` where
/// the file system refuses direct I/O.
fn open_direct(f: &std::fs::File) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(bulwark_sys::open::DIRECT)
        .open(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .ok()
}

/// Reads stored bytes with direct I/O: from the device into the caller's buffer, without a
/// copy through the page cache and without filling it (a restore streamed by the service
/// would otherwise pass every byte through the cache once, evicting what the host uses).
/// Files or blocks that refuse direct I/O are read the ordinary way.
pub struct DirectReader<'c> {
    chain: &'c ChainReader,
    /// Indexed by file reference: 0 is the point's own file.
    files: Vec<Option<std::fs::File>>,
}

impl DirectReader<'_> {
    /// Whether every file of the chain is read with direct I/O (else some are read the
    /// ordinary way: their file system refused `O_DIRECT`).
    pub fn all_direct(&self) -> bool {
        self.files.iter().all(Option::is_some)
    }

    /// The same reader reading every file the ordinary way, as where a file system refuses
    /// `O_DIRECT`.
    pub fn without_direct_io(mut self) -> Self {
        self.files.iter_mut().for_each(|f| *f = None);
        self
    }

    /// Reads the stored bytes of `e` into `buf`, which only grows, and returns where in
    /// `buf` they are.
    pub fn read(&self, e: &MapEntry, buf: &mut Vec<u8>) -> Result<std::ops::Range<usize>> {
        let len = e.stored_len as usize;
        if let Some(f) = self.files.get(e.file_ref as usize).and_then(Option::as_ref) {
            if e.offset.is_multiple_of(DIRECT_ALIGN as u64) {
                let span = len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
                if buf.len() < span + DIRECT_ALIGN {
                    buf.resize(span + DIRECT_ALIGN, 0);
                }
                // `align_offset` may decline (usize::MAX): then read the ordinary way.
                let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
                if at < DIRECT_ALIGN {
                    match read_direct(f, &mut buf[at..at + span], e.offset, len) {
                        Ok(()) => return Ok(at..at + len),
                        // Refused for this file or device (alignment, file system): read it
                        // the ordinary way below.
                        Err(err) if err.kind() == std::io::ErrorKind::InvalidInput => {}
                        Err(err) => {
                            return Err(RepoError::io(&self.chain.path, "reading block data")(err))
                        }
                    }
                }
            }
        }
        let local = MapEntry { file_ref: 0, ..*e };
        self.chain
            .file_of(e)
            .read_stored(&local, buf)
            .map_err(RepoError::format(&self.chain.path))?;
        Ok(0..len)
    }
}

/// Reads at least `need` bytes at `offset` into the aligned `buf` (the rest of the last
/// aligned piece comes along, or the file ends first).
fn read_direct(f: &std::fs::File, buf: &mut [u8], offset: u64, need: usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < need {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            // A short read that is not a multiple of the alignment can only be the end of
            // the file; the next read returns 0 and ends the loop.
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    /// The parent map of point `point`, opened as `r`.
    pub(crate) fn of(point: PointId, r: PointReader) -> ParentMap {
        ParentMap {
            point,
            chain: r.meta.chain,
            root: r.trailer.root_digest,
            disk_size: r.meta.disk_size,
            block_size: r.meta.block_size,
            files: r.meta.files.clone(),
            entries: r.map,
        }
    }
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
            refs.push((r, p.clone()));
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
        Ok(Some(ParentMap::of(id, r)))
    }
}
