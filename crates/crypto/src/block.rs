//! Per-block authenticated encryption (docs/encryption.md, "Blocks").
//!
//! Stored bytes of an encrypted block: `salt (16) ‖ AES-256-GCM ciphertext ‖ tag (16)`. The
//! session key is `BLAKE3-derive_key(BLOCK_CONTEXT, data key ‖ salt)`, the 96-bit nonce is the
//! block number (8 bytes, little-endian) followed by four zero bytes. A writing session draws
//! a fresh random salt and seals each block number at most once (a point's blocks strictly
//! increase), so a nonce never repeats under a session key.

use std::sync::Mutex;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::{CryptoError, Result};

/// Length of the salt that starts every encrypted block.
pub const SALT_LEN: usize = 16;
/// Bytes an encrypted block has beyond its (compressed) payload: salt and tag.
pub const BLOCK_OVERHEAD: usize = SALT_LEN + 16;
const BLOCK_CONTEXT: &str = "bulwark 2026-12 block session key";
const CHANGE_CONTEXT: &str = "bulwark 2026-12 change detection key";

/// A data key (32 bytes), kept only in memory and wiped when dropped.
#[derive(Clone)]
pub struct BlockKey(Zeroizing<[u8; 32]>);

impl BlockKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(k: [u8; 32]) -> BlockKey {
        BlockKey(Zeroizing::new(k))
    }
    /// A new random data key.
    pub fn generate() -> Result<BlockKey> {
        Ok(BlockKey::from_bytes(crate::random32()?))
    }
    /// The raw bytes (for wrapping).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn session(&self, salt: &[u8; SALT_LEN]) -> LessSafeKey {
        let mut h = blake3::Hasher::new_derive_key(BLOCK_CONTEXT);
        h.update(&self.0[..]);
        h.update(salt);
        let k = Zeroizing::new(*h.finalize().as_bytes());
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k[..]).expect("32-byte AES key"))
    }

    /// Decrypts `stored` (salt ‖ ciphertext ‖ tag) of block `block` into `out` (cleared
    /// first) and returns the salt it carried. `ad` is [`associated_data`] of the map entry.
    pub fn open(
        &self,
        block: u64,
        ad: &[u8; AD_LEN],
        stored: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<[u8; SALT_LEN]> {
        if stored.len() <= BLOCK_OVERHEAD {
            return Err(CryptoError::Authentication {
                block,
                why: " (too short to be an encrypted block)".into(),
            });
        }
        let salt: [u8; SALT_LEN] = stored[..SALT_LEN].try_into().expect("16 bytes");
        out.clear();
        out.extend_from_slice(&stored[SALT_LEN..]);
        let n = self
            .session(&salt)
            .open_in_place(nonce(block), Aad::from(&ad[..]), out)
            .map_err(|_| CryptoError::Authentication {
                block,
                why: String::new(),
            })?
            .len();
        out.truncate(n);
        Ok(salt)
    }
}

/// Length of a block's associated data.
pub const AD_LEN: usize = 48;

/// Associated data of a block: block number (8), plain length (4), the map entry's codec
/// flags (4), its keyed change-detection hash (32). Moving a block to another position, or
/// pairing it with another entry, fails authentication.
pub fn associated_data(
    block: u64,
    plain_len: u32,
    codec_flags: u32,
    keyed: &[u8; 32],
) -> [u8; AD_LEN] {
    let mut ad = [0u8; AD_LEN];
    ad[..8].copy_from_slice(&block.to_le_bytes());
    ad[8..12].copy_from_slice(&plain_len.to_le_bytes());
    ad[12..16].copy_from_slice(&codec_flags.to_le_bytes());
    ad[16..].copy_from_slice(keyed);
    ad
}

fn nonce(block: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&block.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The change-detection key of a symmetric master key.
pub(crate) fn change_key_of(master: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(CHANGE_CONTEXT, master)
}

/// Seals the blocks of one writing session (one restore point) under one salt.
///
/// Workers may seal blocks in parallel and out of order with [`SessionSealer::seal_detached`];
/// what keeps the nonce unique is [`SessionSealer::admit`], which the one thread that keeps
/// sealed blocks (writes or sends them) calls, in that order, before any leaves memory: block
/// numbers must strictly increase, so no two kept ciphertexts share a nonce.
pub struct SessionSealer {
    salt: [u8; SALT_LEN],
    key: LessSafeKey,
    /// The last admitted block number.
    last: Mutex<Option<u64>>,
}

impl SessionSealer {
    /// A session with a fresh random salt.
    pub fn new(data_key: &BlockKey) -> Result<SessionSealer> {
        let salt = crate::random16()?;
        Ok(SessionSealer {
            salt,
            key: data_key.session(&salt),
            last: Mutex::new(None),
        })
    }

    /// The session's salt (recorded in the point's encryption record).
    pub fn salt(&self) -> [u8; SALT_LEN] {
        self.salt
    }

    /// Encrypts `payload` (the zstd frame or the plain block) of block `block` into `out`
    /// (cleared first): salt ‖ ciphertext ‖ tag. Blocks must strictly increase, so no nonce
    /// repeats under the session key; a repeat or a step back is refused.
    pub fn seal(
        &mut self,
        block: u64,
        ad: &[u8; AD_LEN],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.admit(block)?;
        self.seal_detached(block, ad, payload, out)
    }

    /// The order check of [`SessionSealer::seal`] alone: admits block `block`, sealed with
    /// [`SessionSealer::seal_detached`], to be kept. Refused unless it is greater than every
    /// block admitted before.
    pub fn admit(&self, block: u64) -> Result<()> {
        // A poisoned lock only means another thread panicked while holding it: the value
        // (the last admitted block) is still what it was.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = *last {
            if block <= l {
                return Err(CryptoError::Usage(format!(
                    "block {block} sealed after block {l}: a session seals each block number once, in order"
                )));
            }
        }
        *last = Some(block);
        Ok(())
    }

    /// [`SessionSealer::seal`] without the order check, from any thread: the bytes must pass
    /// [`SessionSealer::admit`] before they leave memory, or be dropped.
    pub fn seal_detached(
        &self,
        block: u64,
        ad: &[u8; AD_LEN],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        out.reserve(payload.len() + BLOCK_OVERHEAD);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(payload);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(block), Aad::from(&ad[..]), &mut out[SALT_LEN..])
            .map_err(|_| CryptoError::Usage("AES-GCM refused to seal a block".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_opens_only_at_its_position_with_its_entry() {
        let key = BlockKey::generate().unwrap();
        let mut s = SessionSealer::new(&key).unwrap();
        let ad = associated_data(5, 4096, 1, &[3; 32]);
        let mut sealed = Vec::new();
        s.seal(5, &ad, b"payload bytes", &mut sealed).unwrap();
        assert_eq!(sealed.len(), 13 + BLOCK_OVERHEAD);
        let mut out = Vec::new();
        assert_eq!(key.open(5, &ad, &sealed, &mut out).unwrap(), s.salt());
        assert_eq!(out, b"payload bytes");
        let moved = associated_data(6, 4096, 1, &[3; 32]);
        assert!(
            key.open(6, &moved, &sealed, &mut out).is_err(),
            "another position"
        );
        let other = associated_data(5, 4096, 1, &[4; 32]);
        assert!(
            key.open(5, &other, &sealed, &mut out).is_err(),
            "another entry"
        );
        let codec = associated_data(5, 4096, 0, &[3; 32]);
        assert!(
            key.open(5, &codec, &sealed, &mut out).is_err(),
            "another codec"
        );
        let wrong = BlockKey::generate().unwrap();
        assert!(
            wrong.open(5, &ad, &sealed, &mut out).is_err(),
            "another key"
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(
                key.open(5, &ad, &bad, &mut out).is_err(),
                "flipped byte {i}"
            );
        }
        assert!(
            s.seal(5, &ad, b"again", &mut sealed).is_err(),
            "no nonce reuse"
        );
    }

    #[test]
    fn sessions_draw_different_salts() {
        let key = BlockKey::generate().unwrap();
        let a = SessionSealer::new(&key).unwrap().salt();
        let b = SessionSealer::new(&key).unwrap().salt();
        assert_ne!(a, b);
    }

    #[test]
    fn detached_seals_are_kept_only_in_strictly_increasing_order() {
        let key = BlockKey::generate().unwrap();
        let s = SessionSealer::new(&key).unwrap();
        let mut sealed = Vec::new();
        // Sealed out of order by workers, admitted in order by the keeper.
        for b in [3u64, 1, 2] {
            let ad = associated_data(b, 4, 0, &[0; 32]);
            s.seal_detached(b, &ad, b"data", &mut sealed).unwrap();
            let mut out = Vec::new();
            key.open(b, &ad, &sealed, &mut out).unwrap();
            assert_eq!(out, b"data");
        }
        s.admit(1).unwrap();
        s.admit(2).unwrap();
        assert!(s.admit(2).is_err(), "a repeat");
        assert!(s.admit(1).is_err(), "a step back");
        s.admit(7).unwrap();
        s.admit(u64::MAX).unwrap();
        assert!(
            s.admit(u64::MAX).is_err(),
            "the last block number too, once"
        );
        let mut s = SessionSealer::new(&key).unwrap();
        let ad = associated_data(7, 4, 0, &[0; 32]);
        s.admit(7).unwrap();
        assert!(
            s.seal(7, &ad, b"data", &mut sealed).is_err(),
            "seal checks the same order"
        );
        s.seal(8, &ad, b"data", &mut sealed).unwrap();
    }
}
