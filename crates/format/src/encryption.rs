//! The encryption record: the data of a restore point's [`EXT_ENCRYPTION`] extension
//! (docs/encryption.md, "The encryption record"). It lives here, not in the client's crypto
//! crate, because the repository copies and merges records (synthetic fulls) without any key.
//!
//! [`EXT_ENCRYPTION`]: crate::EXT_ENCRYPTION

use crate::{FormatError, Result};

/// The record version this build writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// AEAD code of AES-256-GCM with per-session keys (the only one so far).
pub const AEAD_AES256GCM: u8 = 1;
/// Length of a session salt (the first bytes of every encrypted block).
pub const SESSION_SALT_LEN: usize = 16;
/// Most sessions one record lists (a synthetic full of a long write-only chain lists one per
/// point it draws blocks from).
pub const MAX_SESSIONS: usize = 512;
const FIXED: usize = 24;
/// Record flag (byte 3), bit 0: the chain's change-detection hashes bind the block number
/// ([`ChangeKey`]). Written for every chain begun since 2026-12-02; chains begun before keep
/// the older hash (flag clear) for as long as they run.
pub const FLAG_POSITIONAL_HASH: u8 = 1;

/// Who can read a point's data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    /// Wrapped under a symmetric master key; the chain shares one data key.
    Symmetric,
    /// Wrapped for an X25519 restore key; every writing session has its own data key.
    WriteOnly,
}

impl KeyMode {
    fn code(self) -> u8 {
        match self {
            KeyMode::Symmetric => 1,
            KeyMode::WriteOnly => 2,
        }
    }
    /// Length of a wrapped data key in this mode.
    pub fn wrapped_len(self) -> usize {
        match self {
            KeyMode::Symmetric => 60,
            KeyMode::WriteOnly => 80,
        }
    }
    /// Short name for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyMode::Symmetric => "symmetric",
            KeyMode::WriteOnly => "write-only",
        }
    }
}

/// One writing session: the salt its blocks carry and its data key, wrapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub salt: [u8; SESSION_SALT_LEN],
    pub wrapped: Vec<u8>,
}

/// How one restore point's blocks are encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionRecord {
    pub mode: KeyMode,
    /// The key generation (fingerprint) that wrapped the data keys.
    pub key_id: [u8; 16],
    /// The first is the session that wrote this point's own blocks; a synthetic full lists
    /// every session its cloned blocks came from.
    pub sessions: Vec<Session>,
    /// The chain's change-detection hashes bind the block number ([`FLAG_POSITIONAL_HASH`]).
    pub positional: bool,
}

/// The keyed change-detection hash of an encrypted chain (docs/encryption.md, "Change
/// detection"): BLAKE3 keyed with the change key over the block number (8 bytes, little
/// endian) and the plain block; over the plain block alone on chains begun before the
/// block number was bound (`positional` false). Equal blocks at different positions hash
/// apart, so the map shows which blocks are equal only where incrementals need it: the same
/// block of the same chain.
#[derive(Clone, Copy)]
pub struct ChangeKey {
    key: [u8; 32],
    positional: bool,
}

impl ChangeKey {
    /// The hash keyed with `key`, binding the block number when `positional`.
    pub fn new(key: [u8; 32], positional: bool) -> ChangeKey {
        ChangeKey { key, positional }
    }

    /// The change-detection hash of block `block` holding `plain`.
    pub fn hash(&self, block: u64, plain: &[u8]) -> crate::Digest {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        if self.positional {
            h.update(&block.to_le_bytes());
        }
        h.update(plain);
        crate::Digest::from(h.finalize())
    }
}

/// The hash a map entry holds for block `block` with plain bytes `plain`: the chain's
/// change-detection hash when it is encrypted (`change`), else plain BLAKE3.
pub fn block_hash(change: Option<&ChangeKey>, block: u64, plain: &[u8]) -> crate::Digest {
    match change {
        Some(k) => k.hash(block, plain),
        None => crate::Digest::from(blake3::hash(plain)),
    }
}

impl std::fmt::Debug for ChangeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "ChangeKey {{ positional: {} }}", self.positional)
    }
}

impl EncryptionRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let w = self.mode.wrapped_len();
        let mut b = Vec::with_capacity(FIXED + self.sessions.len() * (SESSION_SALT_LEN + w));
        let flags = if self.positional {
            FLAG_POSITIONAL_HASH
        } else {
            0
        };
        b.extend_from_slice(&[RECORD_VERSION, AEAD_AES256GCM, self.mode.code(), flags]);
        b.extend_from_slice(&self.key_id);
        b.extend_from_slice(&(self.sessions.len() as u16).to_le_bytes());
        b.extend_from_slice(&(w as u16).to_le_bytes());
        for s in &self.sessions {
            b.extend_from_slice(&s.salt);
            b.extend_from_slice(&s.wrapped);
        }
        b
    }

    /// Decodes and checks a record: every field's value and the exact length.
    pub fn decode(b: &[u8]) -> Result<EncryptionRecord> {
        let bad = |m: String| FormatError::Meta(format!("encryption record: {m}"));
        if b.len() < FIXED {
            return Err(bad(format!("{} bytes, at least {FIXED} expected", b.len())));
        }
        if b[0] != RECORD_VERSION {
            return Err(bad(format!(
                "record version {} is not supported by this build; upgrade Bulwark",
                b[0]
            )));
        }
        if b[1] != AEAD_AES256GCM {
            return Err(bad(format!("unknown AEAD {}", b[1])));
        }
        let mode = match b[2] {
            1 => KeyMode::Symmetric,
            2 => KeyMode::WriteOnly,
            m => return Err(bad(format!("unknown key mode {m}"))),
        };
        if b[3] & !FLAG_POSITIONAL_HASH != 0 {
            return Err(bad(format!(
                "unknown record flags {:#04x}; upgrade Bulwark",
                b[3]
            )));
        }
        let count = u16::from_le_bytes([b[20], b[21]]) as usize;
        let w = u16::from_le_bytes([b[22], b[23]]) as usize;
        if w != mode.wrapped_len() {
            return Err(bad(format!(
                "a {} record holds {}-byte wrapped keys, not {w}",
                mode.as_str(),
                mode.wrapped_len()
            )));
        }
        if count == 0 || count > MAX_SESSIONS || b.len() != FIXED + count * (SESSION_SALT_LEN + w) {
            return Err(bad(format!(
                "{count} sessions do not fit {} bytes (1 to {MAX_SESSIONS} allowed)",
                b.len()
            )));
        }
        let sessions: Vec<Session> = b[FIXED..]
            .chunks_exact(SESSION_SALT_LEN + w)
            .map(|c| Session {
                salt: c[..SESSION_SALT_LEN].try_into().expect("16"),
                wrapped: c[SESSION_SALT_LEN..].to_vec(),
            })
            .collect();
        for (i, s) in sessions.iter().enumerate() {
            if sessions[..i].iter().any(|t| t.salt == s.salt) {
                return Err(bad("a session salt is listed twice".into()));
            }
        }
        Ok(EncryptionRecord {
            mode,
            key_id: b[4..20].try_into().expect("16"),
            sessions,
            positional: b[3] & FLAG_POSITIONAL_HASH != 0,
        })
    }

    /// The key id as hex (the fingerprint users compare with `bulwark key show`).
    pub fn fingerprint(&self) -> String {
        hex::encode(self.key_id)
    }

    /// The session whose blocks carry `salt`.
    pub fn session(&self, salt: &[u8; SESSION_SALT_LEN]) -> Option<&Session> {
        self.sessions.iter().find(|s| &s.salt == salt)
    }

    /// Adds the sessions of `other` (a file whose blocks a synthetic full clones); both must
    /// be of one mode and key. No key is needed: this is how the repository keeps a synthetic
    /// full of an encrypted chain readable.
    pub fn merge(&mut self, other: &EncryptionRecord) -> Result<()> {
        if other.mode == self.mode
            && other.key_id == self.key_id
            && other.positional != self.positional
        {
            return Err(FormatError::Invalid(
                "the chain mixes two change-detection hashes (positional and not); start a new chain with an active full"
                    .into(),
            ));
        }
        if other.mode != self.mode || other.key_id != self.key_id {
            return Err(FormatError::Invalid(format!(
                "the chain mixes encryption keys ({} {} and {} {}); start a new chain with an active full",
                self.mode.as_str(),
                self.fingerprint(),
                other.mode.as_str(),
                other.fingerprint()
            )));
        }
        for s in &other.sessions {
            if self.session(&s.salt).is_none() {
                if self.sessions.len() >= MAX_SESSIONS {
                    return Err(FormatError::Invalid(format!(
                        "a synthetic full can draw blocks from at most {MAX_SESSIONS} encrypted sessions; start a new chain with an active full"
                    )));
                }
                self.sessions.push(s.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(mode: KeyMode, n: usize) -> EncryptionRecord {
        EncryptionRecord {
            mode,
            key_id: [4; 16],
            sessions: (0..n)
                .map(|i| Session {
                    salt: [i as u8; 16],
                    wrapped: vec![i as u8; mode.wrapped_len()],
                })
                .collect(),
            positional: true,
        }
    }

    #[test]
    fn records_round_trip_and_merge_without_a_key() {
        for mode in [KeyMode::Symmetric, KeyMode::WriteOnly] {
            let r = rec(mode, 3);
            assert_eq!(EncryptionRecord::decode(&r.encode()).unwrap(), r);
            let mut m = rec(mode, 2);
            m.merge(&r).unwrap();
            assert_eq!(m.sessions.len(), 3);
            assert!(m.merge(&rec(KeyMode::Symmetric, 1)).is_ok() == (mode == KeyMode::Symmetric));
        }
        let good = rec(KeyMode::WriteOnly, 2).encode();
        for cut in 1..good.len() {
            assert!(
                EncryptionRecord::decode(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut dup = rec(KeyMode::Symmetric, 2);
        dup.sessions[1].salt = dup.sessions[0].salt;
        assert!(EncryptionRecord::decode(&dup.encode()).is_err());
    }

    #[test]
    fn the_positional_flag_round_trips_is_never_mixed_and_unknown_flags_are_refused() {
        let mut old = rec(KeyMode::Symmetric, 1);
        old.positional = false;
        let b = old.encode();
        assert_eq!(b[3], 0, "a record of an older chain encodes as before");
        assert_eq!(EncryptionRecord::decode(&b).unwrap(), old);
        let new = rec(KeyMode::Symmetric, 2);
        assert_eq!(new.encode()[3], FLAG_POSITIONAL_HASH);
        assert_eq!(EncryptionRecord::decode(&new.encode()).unwrap(), new);
        let err = old.clone().merge(&new).unwrap_err().to_string();
        assert!(err.contains("two change-detection hashes"), "{err}");
        for flags in [2u8, 3, 0x80] {
            let mut b = new.encode();
            b[3] = flags;
            let err = EncryptionRecord::decode(&b).unwrap_err().to_string();
            assert!(err.contains("unknown record flags"), "{err}");
        }
        // The hashes: the older one is the plain keyed BLAKE3; the positional one binds the
        // block number, so equal blocks at two positions hash apart.
        let data = [7u8; 4096];
        let k = [9u8; 32];
        let older = ChangeKey::new(k, false);
        assert_eq!(
            older.hash(5, &data).0,
            *blake3::keyed_hash(&k, &data).as_bytes()
        );
        assert_eq!(older.hash(5, &data), older.hash(6, &data));
        let pos = ChangeKey::new(k, true);
        assert_ne!(pos.hash(5, &data), pos.hash(6, &data));
        assert_ne!(pos.hash(5, &data), older.hash(5, &data));
        assert_eq!(pos.hash(5, &data), pos.hash(5, &data));
    }
}
