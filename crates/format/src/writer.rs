//! Writing a restore point: header, aligned blocks, then map, metadata and trailer.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use crate::layout::{check_block_size, H_FIXED};
use crate::{
    align_up, plain_len_of, BlockNo, Codec, Digest, FileRef, FormatError, Header, MapEntry,
    PointMeta, Result, Stats, StoredBlock, Trailer, ENTRY_LEN, HEADER_LEN,
};

const ZEROS: [u8; 4096] = [0; 4096];
pub(crate) const ROOT_CONTEXT: &str = "bulwark 2026-11 restore point v1 root digest";

/// Computes the root digest over the header's fixed bytes, the metadata and the map.
pub(crate) fn root_digest(header_fixed: &[u8], meta: &[u8], map: &[u8]) -> Digest {
    let mut h = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
    h.update(header_fixed);
    h.update(&(meta.len() as u64).to_le_bytes());
    h.update(meta);
    h.update(map);
    Digest::from(h.finalize())
}

/// Writes one restore-point file front to back. The caller gives blocks in increasing order;
/// [`PointWriter::finish`] writes map, metadata and trailer and fsyncs the file.
pub struct PointWriter {
    file: File,
    header: Header,
    pos: u64,
    entries: Vec<MapEntry>,
    files: Vec<FileRef>,
    stats: Stats,
    /// False after [`PointWriter::reserve_stored`]: the file cursor is not at `pos`.
    cursor_at_pos: bool,
}

impl PointWriter {
    /// Starts a restore point in an empty file.
    pub fn new(mut file: File, header: Header) -> Result<Self> {
        check_block_size(header.block_size)?;
        file.write_all(&header.encode())
            .map_err(FormatError::io("writing header"))?;
        Ok(PointWriter {
            file,
            header,
            pos: HEADER_LEN,
            entries: Vec::new(),
            files: Vec::new(),
            stats: Stats::default(),
            cursor_at_pos: true,
        })
    }

    /// The header this file was started with.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.pos
    }

    /// The file being written, for filling regions given by [`PointWriter::reserve_stored`]
    /// (with `FICLONERANGE` or positioned writes).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Registers an earlier restore point in the file table and returns its `file_ref`.
    pub fn add_file(&mut self, r: FileRef) -> u32 {
        if let Some(i) = self.files.iter().position(|f| f.point == r.point) {
            return i as u32 + 1;
        }
        self.files.push(r);
        self.files.len() as u32
    }

    fn check_next(&self, block: BlockNo, plain_len: u32) -> Result<()> {
        if let Some(last) = self.entries.last() {
            if block <= last.block {
                return Err(FormatError::Invalid(format!(
                    "block {block} given after block {}: blocks must be strictly increasing",
                    last.block
                )));
            }
        }
        let expected = plain_len_of(block, self.header.disk_size, self.header.block_size);
        if expected == 0 || plain_len != expected {
            return Err(FormatError::Invalid(format!(
                "block {block}: plain length {plain_len}, expected {expected} for a disk of {} bytes",
                self.header.disk_size
            )));
        }
        Ok(())
    }

    /// Stores a block in this file at the next 4 KiB-aligned offset. `b.data` is a zstd frame
    /// for [`Codec::Zstd`], else the plain block; `b.stored_hash` is BLAKE3 of `b.data`.
    pub fn put_stored(&mut self, b: StoredBlock<'_>) -> Result<MapEntry> {
        let entry = self.check_own(b.own_entry(0))?;
        self.seek_to_pos()?;
        let offset = self.pos;
        self.file
            .write_all(b.data)
            .map_err(FormatError::io("writing block data"))?;
        let end = offset + b.data.len() as u64;
        let pad = (align_up(end) - end) as usize;
        self.file
            .write_all(&ZEROS[..pad])
            .map_err(FormatError::io("writing block padding"))?;
        self.pos = end + pad as u64;
        Ok(self.record_own(MapEntry { offset, ..entry }))
    }

    /// Records a block stored in this file like [`PointWriter::put_stored`], but writes no
    /// bytes: the caller must fill `align_up(stored_len)` bytes at the returned entry's offset
    /// (the stored bytes, then zeros) before [`PointWriter::finish`]. This is how a synthetic
    /// full clones blocks (`FICLONERANGE`) from earlier files: consecutive reservations are
    /// contiguous, so runs of blocks can be cloned with one call.
    pub fn reserve_stored(
        &mut self,
        block: BlockNo,
        plain_len: u32,
        plain_hash: Digest,
        stored_len: u32,
        compressed: bool,
        stored_hash: Digest,
    ) -> Result<MapEntry> {
        let codec = if compressed { Codec::Zstd } else { Codec::Raw };
        self.reserve_like(&MapEntry {
            block,
            file_ref: 0,
            flags: codec.flags(),
            offset: 0,
            stored_len,
            plain_len,
            plain_hash,
            stored_hash,
        })
    }

    /// [`PointWriter::reserve_stored`] of a block with the lengths, flags (encrypted ones
    /// included) and hashes of `like` (an entry of another file).
    pub fn reserve_like(&mut self, like: &MapEntry) -> Result<MapEntry> {
        let entry = self.check_own(MapEntry {
            file_ref: 0,
            offset: 0,
            ..*like
        })?;
        let offset = self.pos;
        self.pos = offset + align_up(u64::from(entry.stored_len));
        self.cursor_at_pos = false;
        Ok(self.record_own(MapEntry { offset, ..entry }))
    }

    /// Checks a block about to be stored in this file (`e.offset` not yet known) against the
    /// format's rules.
    fn check_own(&self, e: MapEntry) -> Result<MapEntry> {
        self.check_next(e.block, e.plain_len)?;
        let (block, stored_len, plain_len) = (e.block, e.stored_len, e.plain_len);
        if let Err(why) = e.check_lengths() {
            return Err(FormatError::Invalid(format!(
                "block {block}: stored length {stored_len} with flags {:#x} is not allowed for a plain length of {plain_len} ({why})",
                e.flags
            )));
        }
        Ok(e)
    }

    /// Adds the map entry of a block stored in this file.
    fn record_own(&mut self, entry: MapEntry) -> MapEntry {
        self.entries.push(entry);
        self.stats.blocks_new += 1;
        self.stats.bytes_new_plain += u64::from(entry.plain_len);
        self.stats.bytes_stored += u64::from(entry.stored_len);
        entry
    }

    // Reservations move `pos` without writing, so sequential writes must seek first.
    fn seek_to_pos(&mut self) -> Result<()> {
        if !self.cursor_at_pos {
            self.file
                .seek(SeekFrom::Start(self.pos))
                .map_err(FormatError::io("seeking past reserved blocks"))?;
            self.cursor_at_pos = true;
        }
        Ok(())
    }

    /// Records a block kept in an earlier file; `entry.file_ref` must come from
    /// [`PointWriter::add_file`].
    pub fn put_ref(&mut self, entry: MapEntry) -> Result<()> {
        self.check_next(entry.block, entry.plain_len)?;
        if entry.file_ref == 0 || entry.file_ref as usize > self.files.len() {
            return Err(FormatError::Invalid(format!(
                "block {}: file reference {} is not in the file table",
                entry.block, entry.file_ref
            )));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Writes map, metadata and trailer, fsyncs, and returns the file and its trailer.
    /// `meta.stats` and `meta.files` are filled in here.
    pub fn finish(mut self, mut meta: PointMeta) -> Result<(File, Trailer, PointMeta)> {
        if meta.point != self.header.point_id
            || meta.block_size != self.header.block_size
            || meta.disk_size != self.header.disk_size
        {
            return Err(FormatError::Invalid(
                "metadata does not match the header".into(),
            ));
        }
        let encrypted = meta.extension(crate::EXT_ENCRYPTION).is_some();
        if let Some(e) = self.entries.iter().find(|e| e.is_encrypted() != encrypted) {
            return Err(FormatError::Invalid(format!(
                "block {}: an encrypted restore point holds only encrypted blocks, and only it holds them (docs/encryption.md)",
                e.block
            )));
        }
        self.stats.blocks_mapped = self.entries.len() as u64;
        meta.stats = self.stats;
        meta.files = std::mem::take(&mut self.files);
        let mut map = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            e.encode_into(&mut map);
        }
        let meta_bytes = meta.encode();
        self.seek_to_pos()?;
        let header_bytes = self.header.encode();
        let trailer = Trailer {
            map_offset: self.pos,
            map_count: self.entries.len() as u64,
            meta_offset: self.pos + map.len() as u64,
            meta_len: meta_bytes.len() as u64,
            root_digest: root_digest(&header_bytes[..H_FIXED], &meta_bytes, &map),
        };
        self.file
            .write_all(&map)
            .map_err(FormatError::io("writing block map"))?;
        self.file
            .write_all(&meta_bytes)
            .map_err(FormatError::io("writing metadata"))?;
        self.file
            .write_all(&trailer.encode())
            .map_err(FormatError::io("writing trailer"))?;
        self.file
            .sync_all()
            .map_err(FormatError::io("fsyncing restore point"))?;
        Ok((self.file, trailer, meta))
    }
}
