//! The restore-point file format, version 1. `docs/format.md` is the normative spec; this crate
//! is its only implementation. All integers are little-endian.

mod block;
mod encryption;
mod error;
mod ids;
mod layout;
mod meta;
mod reader;
mod writer;

pub use block::{Codec, StoredBlock};
pub use encryption::{
    block_hash, ChangeKey, EncryptionRecord, KeyMode, Session, AEAD_AES256GCM,
    FLAG_POSITIONAL_HASH, MAX_SESSIONS, RECORD_VERSION, SESSION_SALT_LEN,
};
pub use error::{FileIoError, FormatError};
pub use ids::{BlockNo, Digest, PointId};
pub use layout::{
    check_block_size, check_disk_size, check_header_padding, check_zero, Header, MapEntry, Trailer,
    ALIGN, ENCRYPTION_OVERHEAD, ENTRY_FLAG_ENCRYPTED, ENTRY_FLAG_ZSTD, ENTRY_LEN, FORMAT_VERSION,
    HEADER_LEN, MAX_BLOCK_SIZE, MAX_DISK_SIZE, MAX_META_LEN, MIN_BLOCK_SIZE, TRAILER_LEN,
};
pub use meta::{
    validate_name, Extension, FileRef, PointKind, PointMeta, RetentionClass, Stats, EXT_CBT_SOURCE,
    EXT_CRITICAL, EXT_ENCRYPTION, MAX_EXTENSIONS, MAX_EXTENSION_LEN,
};
#[cfg(feature = "codec")]
pub use reader::{decode_block, BlockDecoder};
pub use reader::{probe_damaged_meta, PointReader};
pub use writer::PointWriter;

/// Result type of this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// Rounds `n` up to the next multiple of [`ALIGN`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Number of blocks of `block_size` that cover `disk_size` bytes.
pub fn block_count(disk_size: u64, block_size: u32) -> u64 {
    disk_size.div_ceil(u64::from(block_size))
}

/// Plain length of block `no` of a disk: `block_size`, or less for the last block.
pub fn plain_len_of(no: BlockNo, disk_size: u64, block_size: u32) -> u32 {
    let start = no.0 * u64::from(block_size);
    let len = disk_size.saturating_sub(start).min(u64::from(block_size));
    len as u32
}
