//! Wrapping data keys for their readers (docs/encryption.md, "Wrapped data keys").
//!
//! Symmetric: `nonce (12) ‖ AES-256-GCM(kek, data key) ‖ tag (16)`, 60 bytes, with
//! `kek = BLAKE3-derive_key(WRAP_CONTEXT, master)` and the key id as associated data.
//! Write-only (X25519, the construction of age's X25519 recipient stanza with this project's
//! primitives): `ephemeral public key (32) ‖ AES-256-GCM(k, data key) ‖ tag (16)`, 80 bytes,
//! with `k = BLAKE3-derive_key(X25519_CONTEXT, shared secret ‖ ephemeral ‖ recipient)` and a
//! zero nonce (every wrap has a fresh key); a non-contributory shared secret is refused.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::keyfile::public_of;
use crate::{BlockKey, CryptoError, Result, KEY_ID_LEN};

const WRAP_CONTEXT: &str = "bulwark 2026-12 symmetric key wrapping";
const X25519_CONTEXT: &str = "bulwark 2026-12 x25519 key wrapping";
/// Length of a symmetric wrapped key.
pub const SYMMETRIC_WRAPPED_LEN: usize = 12 + 32 + 16;
/// Length of an X25519 wrapped key.
pub const X25519_WRAPPED_LEN: usize = 32 + 32 + 16;

/// A wrapped data key as stored in an encryption record.
pub type WrappedKey = Vec<u8>;

fn aead(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"))
}

/// Wraps `data_key` under a symmetric master key with id `key_id`.
pub fn wrap_symmetric(
    master: &[u8; 32],
    key_id: &[u8; KEY_ID_LEN],
    data_key: &BlockKey,
) -> Result<WrappedKey> {
    let kek = Zeroizing::new(blake3::derive_key(WRAP_CONTEXT, master));
    let nonce: [u8; 12] = crate::random16()?[..12].try_into().expect("12");
    let mut out = nonce.to_vec();
    let mut body = data_key.bytes().to_vec();
    aead(&kek)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&key_id[..]),
            &mut body,
        )
        .map_err(|_| CryptoError::Usage("AES-GCM refused to wrap a key".into()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Unwraps a symmetric wrapped key; a wrong master key fails authentication.
pub fn unwrap_symmetric(
    master: &[u8; 32],
    key_id: &[u8; KEY_ID_LEN],
    wrapped: &[u8],
) -> Result<BlockKey> {
    if wrapped.len() != SYMMETRIC_WRAPPED_LEN {
        return Err(CryptoError::Wrapped(format!(
            "a symmetric wrapped key is {SYMMETRIC_WRAPPED_LEN} bytes, not {}",
            wrapped.len()
        )));
    }
    let kek = Zeroizing::new(blake3::derive_key(WRAP_CONTEXT, master));
    let nonce: [u8; 12] = wrapped[..12].try_into().expect("12");
    let mut body = Zeroizing::new(wrapped[12..].to_vec());
    let plain = aead(&kek)
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&key_id[..]), &mut body)
        .map_err(|_| CryptoError::WrongKey("the data key does not unwrap with this key: the key file holds another key than the one this restore point was written with".into()))?;
    Ok(BlockKey::from_bytes(plain.try_into().expect("32 bytes")))
}

fn x25519_key(shared: &[u8; 32], eph: &[u8; 32], recipient: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key(X25519_CONTEXT);
    h.update(shared);
    h.update(eph);
    h.update(recipient);
    Zeroizing::new(*h.finalize().as_bytes())
}

/// Wraps `data_key` for the X25519 public key `recipient`.
pub fn wrap_x25519(recipient: &[u8; 32], data_key: &BlockKey) -> Result<WrappedKey> {
    let eph_secret = x25519_dalek::StaticSecret::from(crate::random32()?);
    let eph = *x25519_dalek::PublicKey::from(&eph_secret).as_bytes();
    let shared = eph_secret.diffie_hellman(&x25519_dalek::PublicKey::from(*recipient));
    if !shared.was_contributory() {
        return Err(CryptoError::Usage(
            "the public key is not a valid X25519 key (low-order point); create a new key pair"
                .into(),
        ));
    }
    let k = x25519_key(shared.as_bytes(), &eph, recipient);
    let mut body = data_key.bytes().to_vec();
    aead(&k)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::empty(),
            &mut body,
        )
        .map_err(|_| CryptoError::Usage("AES-GCM refused to wrap a key".into()))?;
    let mut out = eph.to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Unwraps an X25519 wrapped key with the private key `secret`.
pub fn unwrap_x25519(secret: &[u8; 32], wrapped: &[u8]) -> Result<BlockKey> {
    if wrapped.len() != X25519_WRAPPED_LEN {
        return Err(CryptoError::Wrapped(format!(
            "an X25519 wrapped key is {X25519_WRAPPED_LEN} bytes, not {}",
            wrapped.len()
        )));
    }
    let eph: [u8; 32] = wrapped[..32].try_into().expect("32");
    let s = x25519_dalek::StaticSecret::from(*secret);
    let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(eph));
    if !shared.was_contributory() {
        return Err(CryptoError::Wrapped(
            "the ephemeral key is a low-order point".into(),
        ));
    }
    let k = x25519_key(shared.as_bytes(), &eph, &public_of(secret));
    let mut body = Zeroizing::new(wrapped[32..].to_vec());
    let plain = aead(&k)
        .open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut body)
        .map_err(|_| CryptoError::WrongKey("the data key does not unwrap with this restore key: the point was written for another public key".into()))?;
    Ok(BlockKey::from_bytes(plain.try_into().expect("32 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_unwrap_only_with_their_key() {
        let dk = BlockKey::generate().unwrap();
        let (m, other) = ([1u8; 32], [2u8; 32]);
        let w = wrap_symmetric(&m, &[9; 16], &dk).unwrap();
        assert_eq!(w.len(), SYMMETRIC_WRAPPED_LEN);
        assert_eq!(
            unwrap_symmetric(&m, &[9; 16], &w).unwrap().bytes(),
            dk.bytes()
        );
        assert!(unwrap_symmetric(&other, &[9; 16], &w).is_err());
        assert!(
            unwrap_symmetric(&m, &[8; 16], &w).is_err(),
            "key id is bound"
        );

        let sk = crate::random32().unwrap();
        let w = wrap_x25519(&public_of(&sk), &dk).unwrap();
        assert_eq!(w.len(), X25519_WRAPPED_LEN);
        assert_eq!(unwrap_x25519(&sk, &w).unwrap().bytes(), dk.bytes());
        assert!(unwrap_x25519(&crate::random32().unwrap(), &w).is_err());
        assert!(wrap_x25519(&[0; 32], &dk).is_err(), "low-order recipient");
    }
}
