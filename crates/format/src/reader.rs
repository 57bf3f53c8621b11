//! Opening and checking a restore point.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::layout::{check_header_padding, check_zero, H_FIXED};
use crate::writer::root_digest;
use crate::{
    align_up, block_count, plain_len_of, FormatError, Header, MapEntry, PointMeta, Result, Trailer,
    ALIGN, ENTRY_LEN, HEADER_LEN, MAX_META_LEN, TRAILER_LEN,
};

/// An opened restore point whose header, trailer, metadata and map have been checked against
/// the root digest. Block data is checked when read.
pub struct PointReader {
    file: File,
    pub header: Header,
    pub trailer: Trailer,
    pub meta: PointMeta,
    pub map: Vec<MapEntry>,
}

fn layout(msg: String) -> FormatError {
    FormatError::Layout(msg)
}

#[cfg(feature = "codec")]
/// Checks stored bytes against their entry's stored length and stored hash.
fn check_stored(e: &MapEntry, stored: &[u8]) -> Result<()> {
    if stored.len() != e.stored_len as usize || crate::Digest::of(stored) != e.stored_hash {
        return Err(FormatError::StoredHash {
            block: e.block,
            offset: e.offset,
        });
    }
    Ok(())
}

/// Refuses an entry of another file of the chain (`file_ref != 0`).
fn stored_here(e: &MapEntry) -> Result<()> {
    if e.file_ref != 0 {
        return Err(FormatError::Invalid(format!(
            "block {} is not stored in this file",
            e.block
        )));
    }
    Ok(())
}

/// The metadata of a restore-point file that [`PointReader::open`] refuses, read with no check
/// but the bounds: `None` unless the trailer's metadata offset and length still fit the file
/// and the metadata itself still decodes. Never trusted for data or for a decision that
/// could lose any — only so that a damaged point can still tell that it was encrypted, and a
/// backup without a key is not let through because the only evidence is damaged.
pub fn probe_damaged_meta(file: &File) -> Option<PointMeta> {
    let len = crate::layout::point_file_len(file).ok()?;
    let end = len - TRAILER_LEN as u64;
    let mut t = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut t, end).ok()?;
    let (offset, meta_len) = crate::layout::Trailer::meta_span_unchecked(&t);
    if meta_len > MAX_META_LEN || offset.checked_add(meta_len) != Some(end) {
        return None;
    }
    let mut b = vec![0u8; meta_len as usize];
    file.read_exact_at(&mut b, offset).ok()?;
    PointMeta::decode(&b).ok()
}

impl PointReader {
    /// Opens and checks everything but block data. Every length is checked against the file's
    /// size before anything is allocated.
    pub fn open(file: File) -> Result<PointReader> {
        let len = crate::layout::point_file_len(&file)?;
        // The whole header region: its padding must be zero, and one read costs the same.
        let mut hb = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut hb, 0)
            .map_err(FormatError::io("reading header"))?;
        let header = Header::decode(&hb)?;
        check_header_padding(&hb)?;
        let trailer = Trailer::read_from(&file)?;
        let end = len - TRAILER_LEN as u64;
        let t = &trailer;
        if t.map_offset < HEADER_LEN || t.map_offset % ALIGN != 0 || t.map_offset > end {
            return Err(layout(format!(
                "block map offset {} out of range",
                t.map_offset
            )));
        }
        let nblocks = block_count(header.disk_size, header.block_size);
        if t.map_count > nblocks {
            return Err(layout(format!(
                "{} map entries for a disk of {nblocks} blocks",
                t.map_count
            )));
        }
        let map_len = t.map_count * ENTRY_LEN as u64;
        if t.map_offset.checked_add(map_len) != Some(t.meta_offset) {
            return Err(layout("metadata does not follow the block map".into()));
        }
        if t.meta_len > MAX_META_LEN || t.meta_offset.checked_add(t.meta_len) != Some(end) {
            return Err(layout("metadata does not end at the trailer".into()));
        }
        let mut map_bytes = vec![0u8; map_len as usize];
        file.read_exact_at(&mut map_bytes, t.map_offset)
            .map_err(FormatError::io("reading block map"))?;
        let mut meta_bytes = vec![0u8; t.meta_len as usize];
        file.read_exact_at(&mut meta_bytes, t.meta_offset)
            .map_err(FormatError::io("reading metadata"))?;
        let mut full_header = vec![0u8; H_FIXED];
        full_header.copy_from_slice(&header.encode()[..H_FIXED]);
        let actual = root_digest(&full_header, &meta_bytes, &map_bytes);
        if actual != t.root_digest {
            return Err(FormatError::RootDigest {
                expected: t.root_digest,
                actual,
            });
        }
        let meta = PointMeta::decode(&meta_bytes)?;
        if meta.point != header.point_id
            || meta.block_size != header.block_size
            || meta.disk_size != header.disk_size
        {
            return Err(FormatError::Meta(
                "metadata disagrees with the header".into(),
            ));
        }
        if meta.kind.is_full() != meta.parent.is_none() {
            return Err(FormatError::Meta(
                "a full has no parent and an incremental has one".into(),
            ));
        }
        let map: Vec<MapEntry> = map_bytes
            .chunks_exact(ENTRY_LEN)
            .map(MapEntry::decode)
            .collect();
        let mut prev: Option<u64> = None;
        let encrypted = match meta.extension(crate::EXT_ENCRYPTION) {
            Some(r) => crate::EncryptionRecord::decode(r).map(|_| true)?,
            None => false,
        };
        for e in &map {
            let b = e.block.0;
            let bad = |why: &str| layout(format!("map entry for block {b}: {why}"));
            if prev.is_some_and(|p| b <= p) || b >= nblocks {
                return Err(bad("block numbers must increase and stay within the disk"));
            }
            prev = Some(b);
            if e.plain_len != plain_len_of(e.block, header.disk_size, header.block_size) {
                return Err(bad("wrong plain length"));
            }
            if e.offset % ALIGN != 0 {
                return Err(bad("unaligned offset"));
            }
            e.check_lengths().map_err(bad)?;
            if e.is_encrypted() != encrypted {
                return Err(bad(if encrypted {
                    "an unencrypted block in an encrypted restore point"
                } else {
                    "an encrypted block in a restore point without an encryption record"
                }));
            }
            if e.file_ref as usize > meta.files.len() {
                return Err(bad("file reference outside the file table"));
            }
            // Checked: an offset near 2^64 must not wrap around to pass as inside.
            let end = e.offset.checked_add(u64::from(e.stored_len));
            if e.file_ref == 0
                && (e.offset < HEADER_LEN || !matches!(end, Some(end) if end <= t.map_offset))
            {
                return Err(bad("data outside the data region"));
            }
        }
        if meta.stats.blocks_mapped != map.len() as u64 {
            return Err(FormatError::Meta(
                "mapped block count disagrees with the map".into(),
            ));
        }
        Ok(PointReader {
            file,
            header,
            trailer,
            meta,
            map,
        })
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads the stored bytes of an entry of this file (`file_ref == 0`) into `buf` and
    /// returns them: the first `stored_len` bytes of `buf`, which may be longer.
    pub fn read_stored<'b>(&self, e: &MapEntry, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
        stored_here(e)?;
        // `buf` only grows: bytes once zeroed are read over, not zeroed again for every block.
        let n = e.stored_len as usize;
        if buf.len() < n {
            buf.resize(n, 0);
        }
        self.file
            .read_exact_at(&mut buf[..n], e.offset)
            .map_err(FormatError::io("reading block data"))?;
        Ok(&buf[..n])
    }

    /// [`PointReader::read_stored`], also reading the block's padding up to the next 4 KiB
    /// boundary in the same read (the same pages) and checking it is zero. Verify uses this.
    pub fn read_stored_padded<'b>(&self, e: &MapEntry, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
        stored_here(e)?;
        let n = e.stored_len as usize;
        let end = e.offset + u64::from(e.stored_len);
        // `open` checked that `end` is at most the map offset, itself 4 KiB-aligned.
        let padded = n + (align_up(end) - end) as usize;
        if buf.len() < padded {
            buf.resize(padded, 0);
        }
        self.file
            .read_exact_at(&mut buf[..padded], e.offset)
            .map_err(FormatError::io("reading block data"))?;
        check_zero(&buf[n..padded], end, || {
            format!("the padding after block {}", e.block)
        })?;
        Ok(&buf[..n])
    }

    /// Ranges `[start, end)` of the data region that hold no stored block and no block's
    /// padding. A writer leaves none; any there are must be zero ("the rest zero").
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let mut own: Vec<(u64, u64)> = self
            .map
            .iter()
            .filter(|e| e.file_ref == 0)
            .map(|e| (e.offset, align_up(e.offset + u64::from(e.stored_len))))
            .collect();
        if !own.windows(2).all(|w| w[0].0 <= w[1].0) {
            own.sort_unstable();
        }
        let mut gaps = Vec::new();
        let mut at = HEADER_LEN;
        for (start, end) in own {
            if start > at {
                gaps.push((at, start));
            }
            at = at.max(end);
        }
        if at < self.trailer.map_offset {
            gaps.push((at, self.trailer.map_offset));
        }
        gaps
    }

    /// Checks that the data region's [gaps](PointReader::gaps) are zero. Reads nothing for a
    /// file as a writer leaves it.
    pub fn check_gaps(&self) -> Result<()> {
        let mut buf = Vec::new();
        for (start, end) in self.gaps() {
            self.check_zero_range(start, end, &mut buf, || {
                "a part of the data region that holds no block".into()
            })?;
        }
        Ok(())
    }

    /// Checks every padding byte of the data region: each stored block's padding up to the
    /// next 4 KiB boundary, and the gaps. Reads only the padding (less than 4 KiB per block),
    /// not the blocks: this is what sealing checks besides the root digest. (The header's
    /// padding is checked by [`PointReader::open`].)
    pub fn check_padding(&self) -> Result<()> {
        let mut buf = Vec::new();
        for e in self.map.iter().filter(|e| e.file_ref == 0) {
            let end = e.offset + u64::from(e.stored_len);
            self.check_zero_range(end, align_up(end), &mut buf, || {
                format!("the padding after block {}", e.block)
            })?;
        }
        self.check_gaps()
    }

    fn check_zero_range(
        &self,
        start: u64,
        end: u64,
        buf: &mut Vec<u8>,
        region: impl Fn() -> String,
    ) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let mut at = start;
        while at < end {
            let n = (end - at).min(CHUNK) as usize;
            if buf.len() < n {
                buf.resize(n, 0);
            }
            self.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(FormatError::io("reading padding"))?;
            check_zero(&buf[..n], at, &region)?;
            at += n as u64;
        }
        Ok(())
    }
}

/// Checks stored bytes against their hash, decompresses them and checks the plain hash.
/// The plain block is left in `out`. Loops should keep a [`BlockDecoder`] instead.
#[cfg(feature = "codec")]
pub fn decode_block(e: &MapEntry, stored: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut scratch = Vec::new();
    let plain = BlockDecoder::new()?.decode(e, stored, &mut scratch)?;
    out.clear();
    out.extend_from_slice(plain);
    Ok(())
}

/// Decodes blocks with one reusable zstd context (creating one per block costs more than
/// decompressing a small block).
#[cfg(feature = "codec")]
pub struct BlockDecoder {
    dctx: zstd::bulk::Decompressor<'static>,
}

#[cfg(feature = "codec")]
impl BlockDecoder {
    /// A decoder with its own decompression context.
    pub fn new() -> Result<BlockDecoder> {
        let dctx = zstd::bulk::Decompressor::new()
            .map_err(|e| FormatError::Invalid(format!("zstd: {e}")))?;
        Ok(BlockDecoder { dctx })
    }

    /// Like [`decode_block`]: stored hash, decompression, plain hash. Returns the plain
    /// block: `stored` itself for a block stored raw, else the start of `out`.
    pub fn decode<'a>(
        &mut self,
        e: &MapEntry,
        stored: &'a [u8],
        out: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        check_stored(e, stored)?;
        if e.is_encrypted() {
            return Err(FormatError::Encrypted { block: e.block });
        }
        // A raw block's stored hash is its plain hash: checked just above.
        self.decode_inner(e, stored, out, e.stored_hash == e.plain_hash)
    }

    /// What verify checks without a key: the stored hash, and for an unencrypted block also
    /// decompression and the plain hash. An encrypted block's stored hash covers every byte
    /// of its ciphertext.
    pub fn check(&mut self, e: &MapEntry, stored: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if e.is_encrypted() {
            return check_stored(e, stored);
        }
        self.decode(e, stored, out).map(|_| ())
    }

    /// Decodes the decrypted payload of an encrypted block (docs/encryption.md): decompresses
    /// it when the entry says zstd and checks the keyed change-detection hash with
    /// `change`. Returns the plain block: `payload` itself when stored raw, else the start
    /// of `out`.
    pub fn decode_decrypted<'a>(
        &mut self,
        e: &MapEntry,
        payload: &'a [u8],
        out: &'a mut Vec<u8>,
        change: &crate::ChangeKey,
    ) -> Result<&'a [u8]> {
        let plain_len = e.plain_len as usize;
        let plain = if e.is_compressed() {
            self.decompress(e, payload, out)?
        } else {
            payload
        };
        if plain.len() != plain_len || change.hash(e.block.0, plain) != e.plain_hash {
            return Err(FormatError::PlainHash { block: e.block });
        }
        Ok(plain)
    }

    /// Decompresses and checks the plain hash only: for bytes that arrived over an
    /// authenticated channel, where the stored hash adds nothing (any damage still fails the
    /// plain hash). Verify and local reads use [`BlockDecoder::decode`]. Returns the plain
    /// block as [`BlockDecoder::decode`] does.
    pub fn decode_checking_plain<'a>(
        &mut self,
        e: &MapEntry,
        stored: &'a [u8],
        out: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        if stored.len() != e.stored_len as usize {
            return Err(FormatError::StoredHash {
                block: e.block,
                offset: e.offset,
            });
        }
        if e.is_encrypted() {
            return Err(FormatError::Encrypted { block: e.block });
        }
        self.decode_inner(e, stored, out, false)
    }

    fn decode_inner<'a>(
        &mut self,
        e: &MapEntry,
        stored: &'a [u8],
        out: &'a mut Vec<u8>,
        raw_checked: bool,
    ) -> Result<&'a [u8]> {
        use crate::Digest;
        let plain_len = e.plain_len as usize;
        if !e.is_compressed() {
            // Stored raw: the plain block is the stored bytes, used where they are.
            if stored.len() != plain_len || (!raw_checked && Digest::of(stored) != e.plain_hash) {
                return Err(FormatError::PlainHash { block: e.block });
            }
            return Ok(stored);
        }
        let plain = self.decompress(e, stored, out)?;
        if Digest::of(plain) != e.plain_hash {
            return Err(FormatError::PlainHash { block: e.block });
        }
        Ok(plain)
    }

    /// Decompresses `stored` into the start of `out`, which must come to the entry's plain
    /// length exactly; returns the plain block (its hash is the caller's to check).
    fn decompress<'a>(
        &mut self,
        e: &MapEntry,
        stored: &[u8],
        out: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        let plain_len = e.plain_len as usize;
        // Grown once and overwritten: zeroing a block before every decompression costs a
        // pass over memory; the length check below proves every byte was written.
        if out.len() < plain_len {
            out.resize(plain_len, 0);
        }
        let n = self
            .dctx
            .decompress_to_buffer(stored, &mut out[..plain_len])
            .map_err(|err| FormatError::Decompress {
                block: e.block,
                reason: err.to_string(),
            })?;
        if n != plain_len {
            return Err(FormatError::PlainHash { block: e.block });
        }
        Ok(&out[..plain_len])
    }
}
