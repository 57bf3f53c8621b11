//! Fixed-size records: header, block-map entry, trailer. Offsets follow `docs/format.md`.

use crate::{BlockNo, Digest, FormatError, PointId, Result};

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Every stored block starts at a multiple of this, so it can be block-cloned.
pub const ALIGN: u64 = 4096;
/// Length of the header region; data starts here.
pub const HEADER_LEN: u64 = 4096;
/// Length of one block-map entry.
pub const ENTRY_LEN: usize = 96;
/// Length of the trailer at the end of the file.
pub const TRAILER_LEN: usize = 128;
/// Smallest block size the format allows.
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// Largest block size the format allows.
pub const MAX_BLOCK_SIZE: u32 = 16 << 20;
/// Largest disk a backup may begin for: 1 PiB (2^50 bytes). Writers refuse more (see
/// [`check_disk_size`]); readers accept any size, so existing files stay readable.
pub const MAX_DISK_SIZE: u64 = 1 << 50;
/// Largest metadata section a reader accepts.
pub const MAX_META_LEN: u64 = 16 << 20;
/// Entry flag: the stored bytes are a zstd frame (else they are the plain block).
pub const ENTRY_FLAG_ZSTD: u32 = 1;
/// Entry flag: the stored bytes are encrypted (docs/encryption.md); bit 0 then says whether
/// the decrypted payload is a zstd frame.
pub const ENTRY_FLAG_ENCRYPTED: u32 = 2;
/// Bytes an encrypted block may have beyond its plain length: the salt and the tag.
pub const ENCRYPTION_OVERHEAD: u32 = 32;

const HEADER_MAGIC: [u8; 8] = *b"BULWARK\0";
const FILE_TYPE: [u8; 4] = *b"RPNT";
const TRAILER_MAGIC: [u8; 8] = *b"BWRPEND\0";

// Header field offsets.
const H_MAGIC: usize = 0;
const H_TYPE: usize = H_MAGIC + 8;
const H_VERSION: usize = H_TYPE + 4;
const H_BLOCK_SIZE: usize = H_VERSION + 4;
const H_FLAGS: usize = H_BLOCK_SIZE + 4;
const H_DISK_SIZE: usize = H_FLAGS + 4;
const H_POINT_ID: usize = H_DISK_SIZE + 8;
const H_CHECK: usize = H_POINT_ID + 16;
/// Bytes of the header covered by its check and by the root digest.
pub(crate) const H_FIXED: usize = H_CHECK;
const H_END: usize = H_CHECK + 32;

// Trailer field offsets.
const T_MAGIC: usize = 0;
const T_VERSION: usize = T_MAGIC + 8;
const T_RESERVED: usize = T_VERSION + 4;
const T_MAP_OFFSET: usize = T_RESERVED + 4;
const T_MAP_COUNT: usize = T_MAP_OFFSET + 8;
const T_META_OFFSET: usize = T_MAP_COUNT + 8;
const T_META_LEN: usize = T_META_OFFSET + 8;
const T_ROOT: usize = T_META_LEN + 8;
const T_CHECK: usize = T_ROOT + 32;
const T_END: usize = T_CHECK + 32;

// Entry field offsets.
const E_BLOCK: usize = 0;
const E_FILE_REF: usize = E_BLOCK + 8;
const E_FLAGS: usize = E_FILE_REF + 4;
const E_OFFSET: usize = E_FLAGS + 4;
const E_STORED_LEN: usize = E_OFFSET + 8;
const E_PLAIN_LEN: usize = E_STORED_LEN + 4;
const E_PLAIN_HASH: usize = E_PLAIN_LEN + 4;
const E_STORED_HASH: usize = E_PLAIN_HASH + 32;
const E_END: usize = E_STORED_HASH + 32;

const _: () = assert!(H_END as u64 <= HEADER_LEN);
const _: () = assert!(T_END <= TRAILER_LEN);
const _: () = assert!(E_END == ENTRY_LEN);

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N].try_into().expect("fixed slice")
}

/// Checks a block size against the format's bounds.
pub fn check_block_size(block_size: u32) -> Result<()> {
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(FormatError::Invalid(format!(
            "block size {block_size} must be a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
        )));
    }
    Ok(())
}

/// Checks the size of a disk before a backup of it begins: at most [`MAX_DISK_SIZE`].
pub fn check_disk_size(disk_size: u64) -> Result<()> {
    if disk_size > MAX_DISK_SIZE {
        return Err(FormatError::Invalid(format!(
            "disk size {disk_size} bytes is larger than the {MAX_DISK_SIZE} bytes (1 PiB) a backup may cover; back up the disk's partitions or volumes one by one"
        )));
    }
    Ok(())
}

/// Checks that `bytes`, which start at byte `offset` of the file and lie in `region` (said in
/// errors), are all zero, as the format requires of every padding byte.
pub fn check_zero(bytes: &[u8], offset: u64, region: impl FnOnce() -> String) -> Result<()> {
    // Eight bytes at a time: this runs over every padding byte that seal and verify read.
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    let clean = tail.iter().all(|&b| b == 0)
        && words
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .all(|w| w == 0);
    if clean {
        return Ok(());
    }
    let at = bytes.iter().position(|&b| b != 0).expect("a non-zero byte");
    Err(FormatError::Padding {
        offset: offset + at as u64,
        value: bytes[at],
        region: region(),
    })
}

/// Checks the header region's padding (bytes 80..4096), which must be zero.
pub fn check_header_padding(header_region: &[u8]) -> Result<()> {
    let end = header_region.len().min(HEADER_LEN as usize);
    if end <= H_END {
        return Ok(());
    }
    check_zero(&header_region[H_END..end], H_END as u64, || {
        "the header's padding (bytes 80 to 4095)".into()
    })
}

/// The first 4 KiB of a restore-point file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub block_size: u32,
    pub disk_size: u64,
    pub point_id: PointId,
}

impl Header {
    /// Encodes the header (the full 4 KiB region, zero padded).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN as usize];
        b[H_MAGIC..H_TYPE].copy_from_slice(&HEADER_MAGIC);
        b[H_TYPE..H_VERSION].copy_from_slice(&FILE_TYPE);
        b[H_VERSION..H_BLOCK_SIZE].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[H_BLOCK_SIZE..H_FLAGS].copy_from_slice(&self.block_size.to_le_bytes());
        b[H_FLAGS..H_DISK_SIZE].copy_from_slice(&0u32.to_le_bytes());
        b[H_DISK_SIZE..H_POINT_ID].copy_from_slice(&self.disk_size.to_le_bytes());
        b[H_POINT_ID..H_CHECK].copy_from_slice(&self.point_id.0);
        let check = blake3::hash(&b[..H_CHECK]);
        b[H_CHECK..H_END].copy_from_slice(check.as_bytes());
        b
    }

    /// Decodes and checks a header from at least its first 80 bytes.
    pub fn decode(b: &[u8]) -> Result<Header> {
        if b.len() < H_END {
            return Err(FormatError::Truncated {
                len: b.len() as u64,
                min: H_END as u64,
            });
        }
        if b[H_MAGIC..H_TYPE] != HEADER_MAGIC || b[H_TYPE..H_VERSION] != FILE_TYPE {
            return Err(FormatError::BadMagic("header"));
        }
        let version = u32_at(b, H_VERSION);
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion { found: version });
        }
        if blake3::hash(&b[..H_CHECK]).as_bytes() != &b[H_CHECK..H_END] {
            return Err(FormatError::Checksum("header"));
        }
        let block_size = u32_at(b, H_BLOCK_SIZE);
        check_block_size(block_size).map_err(|_| {
            FormatError::Layout(format!("header block size {block_size} out of range"))
        })?;
        if u32_at(b, H_FLAGS) != 0 {
            return Err(FormatError::Layout("unknown header flags".into()));
        }
        Ok(Header {
            block_size,
            disk_size: u64_at(b, H_DISK_SIZE),
            point_id: PointId(arr(b, H_POINT_ID)),
        })
    }
}

/// The last 128 bytes of a restore-point file: where the map and metadata are, and the root
/// digest that identifies the restore point's whole content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub map_offset: u64,
    pub map_count: u64,
    pub meta_offset: u64,
    pub meta_len: u64,
    pub root_digest: Digest,
}

impl Trailer {
    /// Encodes the trailer.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[T_MAGIC..T_VERSION].copy_from_slice(&TRAILER_MAGIC);
        b[T_VERSION..T_RESERVED].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[T_MAP_OFFSET..T_MAP_COUNT].copy_from_slice(&self.map_offset.to_le_bytes());
        b[T_MAP_COUNT..T_META_OFFSET].copy_from_slice(&self.map_count.to_le_bytes());
        b[T_META_OFFSET..T_META_LEN].copy_from_slice(&self.meta_offset.to_le_bytes());
        b[T_META_LEN..T_ROOT].copy_from_slice(&self.meta_len.to_le_bytes());
        b[T_ROOT..T_CHECK].copy_from_slice(&self.root_digest.0);
        let check = blake3::hash(&b[..T_CHECK]);
        b[T_CHECK..T_END].copy_from_slice(check.as_bytes());
        b
    }

    /// Decodes and checks a trailer.
    pub fn decode(b: &[u8]) -> Result<Trailer> {
        if b.len() != TRAILER_LEN {
            return Err(FormatError::Truncated {
                len: b.len() as u64,
                min: TRAILER_LEN as u64,
            });
        }
        if b[T_MAGIC..T_VERSION] != TRAILER_MAGIC {
            return Err(FormatError::BadMagic("trailer (the file may be truncated)"));
        }
        let version = u32_at(b, T_VERSION);
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion { found: version });
        }
        if blake3::hash(&b[..T_CHECK]).as_bytes() != &b[T_CHECK..T_END] {
            return Err(FormatError::Checksum("trailer"));
        }
        if u32_at(b, T_RESERVED) != 0 || b[T_END..].iter().any(|&x| x != 0) {
            return Err(FormatError::Layout(
                "reserved trailer bytes are not zero".into(),
            ));
        }
        Ok(Trailer {
            map_offset: u64_at(b, T_MAP_OFFSET),
            map_count: u64_at(b, T_MAP_COUNT),
            meta_offset: u64_at(b, T_META_OFFSET),
            meta_len: u64_at(b, T_META_LEN),
            root_digest: Digest(arr(b, T_ROOT)),
        })
    }

    /// Where a damaged file's metadata would be, `(offset, length)`, from its trailer read
    /// without any check (see [`crate::probe_damaged_meta`]).
    pub(crate) fn meta_span_unchecked(b: &[u8; TRAILER_LEN]) -> (u64, u64) {
        (u64_at(b, T_META_OFFSET), u64_at(b, T_META_LEN))
    }

    /// Reads and checks only the trailer of an open file (what the immutability service needs
    /// to learn a file's root digest without trusting anything else).
    pub fn read_from(file: &std::fs::File) -> Result<Trailer> {
        use std::os::unix::fs::FileExt;
        let len = point_file_len(file)?;
        let mut b = [0u8; TRAILER_LEN];
        file.read_exact_at(&mut b, len - TRAILER_LEN as u64)
            .map_err(FormatError::io("reading trailer"))?;
        Trailer::decode(&b)
    }
}

/// The size of a restore-point file, refusing one too short to hold a header and a trailer.
pub(crate) fn point_file_len(file: &std::fs::File) -> Result<u64> {
    let len = file
        .metadata()
        .map_err(FormatError::io("reading file size"))?
        .len();
    let min = HEADER_LEN + TRAILER_LEN as u64;
    if len < min {
        return Err(FormatError::Truncated { len, min });
    }
    Ok(len)
}

/// Where one block of the disk is stored: block number → file, offset, length, hashes.
/// Blocks not in a point's map are zeros (holes and zero blocks are recorded by absence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub block: BlockNo,
    /// 0: this file; `k >= 1`: entry `k-1` of the metadata's file table.
    pub file_ref: u32,
    pub flags: u32,
    pub offset: u64,
    pub stored_len: u32,
    pub plain_len: u32,
    pub plain_hash: Digest,
    pub stored_hash: Digest,
}

impl MapEntry {
    /// True when the stored (or, if encrypted, the decrypted) bytes are a zstd frame.
    pub fn is_compressed(&self) -> bool {
        self.flags & ENTRY_FLAG_ZSTD != 0
    }

    /// True when the stored bytes are encrypted; `plain_hash` is then the keyed
    /// change-detection hash (docs/encryption.md).
    pub fn is_encrypted(&self) -> bool {
        self.flags & ENTRY_FLAG_ENCRYPTED != 0
    }

    /// Checks the stored length and hash rules of this entry's flags (docs/format.md,
    /// "Block map entry"); the text says what is wrong.
    pub fn check_lengths(&self) -> std::result::Result<(), &'static str> {
        if self.flags & !(ENTRY_FLAG_ZSTD | ENTRY_FLAG_ENCRYPTED) != 0 {
            return Err("unknown flags");
        }
        if self.is_encrypted() {
            if self.stored_len <= ENCRYPTION_OVERHEAD
                || self.stored_len > self.plain_len.saturating_add(ENCRYPTION_OVERHEAD)
            {
                return Err("encrypted stored length out of range");
            }
            return Ok(());
        }
        if self.stored_len == 0 || self.stored_len > self.plain_len {
            return Err("stored length out of range");
        }
        if !self.is_compressed()
            && (self.stored_len != self.plain_len || self.stored_hash != self.plain_hash)
        {
            return Err("uncompressed block with differing length or hash");
        }
        Ok(())
    }

    /// How the stored bytes encode the plain block.
    pub fn codec(&self) -> crate::Codec {
        crate::Codec::of_flags(self.flags)
    }

    /// Appends the 96-byte encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.block.0.to_le_bytes());
        out.extend_from_slice(&self.file_ref.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.plain_len.to_le_bytes());
        out.extend_from_slice(&self.plain_hash.0);
        out.extend_from_slice(&self.stored_hash.0);
    }

    /// Decodes one 96-byte entry.
    pub fn decode(b: &[u8]) -> MapEntry {
        MapEntry {
            block: BlockNo(u64_at(b, E_BLOCK)),
            file_ref: u32_at(b, E_FILE_REF),
            flags: u32_at(b, E_FLAGS),
            offset: u64_at(b, E_OFFSET),
            stored_len: u32_at(b, E_STORED_LEN),
            plain_len: u32_at(b, E_PLAIN_LEN),
            plain_hash: Digest(arr(b, E_PLAIN_HASH)),
            stored_hash: Digest(arr(b, E_STORED_HASH)),
        }
    }
}
