//! Client-side encryption for Bulwark (`docs/encryption.md` is the normative spec).
//!
//! Blocks are compressed, then sealed with AES-256-GCM under a per-session key derived from
//! the chain's (or, for write-only clients, the point's) data key; the block number, the plain
//! length, the codec and the keyed change-detection hash are associated data. The repository
//! stores and verifies ciphertext only. Data keys are wrapped for their readers: under a
//! symmetric master key (key file, Argon2id passphrase), or for an X25519 restore key whose
//! private half stays offline (write-only clients).

mod block;
mod error;
mod keyfile;
mod wrap;

pub use block::{associated_data, BlockKey, SessionSealer, AD_LEN, BLOCK_OVERHEAD, SALT_LEN};
pub use error::CryptoError;
pub use keyfile::{
    kind_of, Argon2Params, Generation, KeyFile, KeyKind, PublicKeyFile, Secret, KEY_ID_LEN,
    MAX_GENERATIONS,
};
pub use wrap::{
    unwrap_symmetric, unwrap_x25519, wrap_symmetric, wrap_x25519, WrappedKey,
    SYMMETRIC_WRAPPED_LEN, X25519_WRAPPED_LEN,
};

/// Result type of this crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

/// 32 random bytes from the operating system.
pub fn random32() -> Result<[u8; 32]> {
    let mut k = [0u8; 32];
    getrandom::getrandom(&mut k).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(k)
}

/// 16 random bytes from the operating system.
pub fn random16() -> Result<[u8; 16]> {
    let mut k = [0u8; 16];
    getrandom::getrandom(&mut k).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(k)
}
