//! A stored block: what the writer, the pipeline and the network carry for one new block.

use crate::{BlockNo, Digest, MapEntry, ENTRY_FLAG_ENCRYPTED, ENTRY_FLAG_ZSTD};

/// How a block's stored bytes encode its plain bytes (the map entry's `flags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// The stored bytes are the plain block.
    Raw,
    /// The stored bytes are one zstd frame of the plain block ([`ENTRY_FLAG_ZSTD`]).
    Zstd,
    /// The stored bytes are the plain block, encrypted ([`ENTRY_FLAG_ENCRYPTED`],
    /// docs/encryption.md).
    SealedRaw,
    /// The stored bytes are a zstd frame of the plain block, encrypted.
    SealedZstd,
}

impl Codec {
    /// The map entry flags of this codec.
    pub fn flags(self) -> u32 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => ENTRY_FLAG_ZSTD,
            Codec::SealedRaw => ENTRY_FLAG_ENCRYPTED,
            Codec::SealedZstd => ENTRY_FLAG_ENCRYPTED | ENTRY_FLAG_ZSTD,
        }
    }

    /// The codec named by a map entry's flags.
    pub fn of_flags(flags: u32) -> Codec {
        match (
            flags & ENTRY_FLAG_ENCRYPTED != 0,
            flags & ENTRY_FLAG_ZSTD != 0,
        ) {
            (false, false) => Codec::Raw,
            (false, true) => Codec::Zstd,
            (true, false) => Codec::SealedRaw,
            (true, true) => Codec::SealedZstd,
        }
    }

    /// True when the (decrypted) payload is a zstd frame.
    pub fn is_compressed(self) -> bool {
        matches!(self, Codec::Zstd | Codec::SealedZstd)
    }

    /// True when the stored bytes are encrypted.
    pub fn is_encrypted(self) -> bool {
        matches!(self, Codec::SealedRaw | Codec::SealedZstd)
    }

    /// The encrypted codec of this payload codec (itself when already encrypted).
    pub fn sealed(self) -> Codec {
        if self.is_compressed() {
            Codec::SealedZstd
        } else {
            Codec::SealedRaw
        }
    }
}

/// One block whose bytes are stored: its number, plain length and BLAKE3, the stored bytes
/// (borrowed, never copied on the way to the file or the network), their codec and BLAKE3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBlock<'a> {
    pub block: BlockNo,
    pub plain_len: u32,
    pub plain_hash: Digest,
    pub data: &'a [u8],
    pub codec: Codec,
    pub stored_hash: Digest,
}

impl<'a> StoredBlock<'a> {
    /// A block stored as its plain bytes.
    pub fn raw(block: BlockNo, plain: &'a [u8]) -> Self {
        let hash = Digest::of(plain);
        StoredBlock {
            block,
            plain_len: plain.len() as u32,
            plain_hash: hash,
            data: plain,
            codec: Codec::Raw,
            stored_hash: hash,
        }
    }

    /// A block of `plain` stored as `data` with `codec`, its hashes computed here (for tools
    /// and tests; the pipeline has them already).
    pub fn encoded(block: BlockNo, plain: &[u8], data: &'a [u8], codec: Codec) -> Self {
        StoredBlock {
            block,
            plain_len: plain.len() as u32,
            plain_hash: Digest::of(plain),
            data,
            codec,
            stored_hash: Digest::of(data),
        }
    }

    /// The stored bytes described by map entry `e` (`data` as read from its file).
    pub fn of_entry(e: &MapEntry, data: &'a [u8]) -> Self {
        StoredBlock {
            block: e.block,
            plain_len: e.plain_len,
            plain_hash: e.plain_hash,
            data,
            codec: e.codec(),
            stored_hash: e.stored_hash,
        }
    }

    /// The map entry of this block stored at `offset` of its own file.
    pub fn own_entry(&self, offset: u64) -> MapEntry {
        MapEntry {
            block: self.block,
            file_ref: 0,
            flags: self.codec.flags(),
            offset,
            stored_len: self.stored_len(),
            plain_len: self.plain_len,
            plain_hash: self.plain_hash,
            stored_hash: self.stored_hash,
        }
    }

    /// Length of the stored bytes (saturating: the writer refuses anything this long).
    pub fn stored_len(&self) -> u32 {
        u32::try_from(self.data.len()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_are_the_formats_entry_flags() {
        for c in [Codec::Raw, Codec::Zstd, Codec::SealedRaw, Codec::SealedZstd] {
            assert_eq!(Codec::of_flags(c.flags()), c);
        }
        assert_eq!(Codec::Raw.flags(), 0);
        assert_eq!(Codec::Zstd.flags(), ENTRY_FLAG_ZSTD);
        assert!(Codec::Zstd.is_compressed() && !Codec::Raw.is_compressed());
    }

    #[test]
    fn a_raw_block_is_its_own_stored_bytes() {
        let b = StoredBlock::raw(BlockNo(7), b"plain");
        assert_eq!((b.plain_len, b.stored_len(), b.codec), (5, 5, Codec::Raw));
        assert_eq!(b.plain_hash, b.stored_hash);
        assert_eq!(b.plain_hash, Digest::of(b"plain"));
    }
}
