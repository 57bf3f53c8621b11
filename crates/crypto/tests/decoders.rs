//! Property tests of the decoders that read bytes from disk: key files, public key files and
//! wrapped keys never panic on arbitrary input, round-trip what the encoders write, and
//! refuse every truncation or single flipped byte.

use bulwark_crypto::*;
use proptest::prelude::*;

fn fast() -> Argon2Params {
    Argon2Params {
        m_kib: 1024,
        t: 1,
        p: 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn key_file_decoders_never_panic_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = KeyFile::decode(&b, b"pass", "fuzz");
        let _ = PublicKeyFile::decode(&b, "fuzz");
        let _ = kind_of(&b, "fuzz");
    }

    #[test]
    fn wrapped_key_decoders_never_panic_and_refuse_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..120), k in any::<[u8; 32]>()) {
        prop_assert!(unwrap_symmetric(&k, &[0; 16], &b).is_err());
        prop_assert!(unwrap_x25519(&k, &b).is_err());
    }

    #[test]
    fn a_mutated_public_key_file_is_refused(flip in 0usize..200, bit in 0u8..8) {
        let (_, p) = KeyFile::new_write_only(7).unwrap();
        let good = p.encode();
        prop_assert_eq!(&PublicKeyFile::decode(&good, "p").unwrap(), &p);
        let mut bad = good.clone();
        let i = flip % bad.len();
        bad[i] ^= 1 << bit;
        prop_assert!(PublicKeyFile::decode(&bad, "p").is_err());
        prop_assert!(PublicKeyFile::decode(&good[..i], "p").is_err());
    }

    #[test]
    fn wrapped_keys_round_trip_and_refuse_any_flipped_bit(flip in 0usize..80, bit in 0u8..8) {
        let dk = BlockKey::generate().unwrap();
        let m = random32().unwrap();
        let w = wrap_symmetric(&m, &[3; 16], &dk).unwrap();
        prop_assert_eq!(*unwrap_symmetric(&m, &[3; 16], &w).unwrap().bytes(), *dk.bytes());
        let mut bad = w.clone();
        bad[flip % w.len()] ^= 1 << bit;
        prop_assert!(unwrap_symmetric(&m, &[3; 16], &bad).is_err());

        let (rk, p) = KeyFile::new_write_only(1).unwrap();
        let Secret::X25519 { secret, .. } = &rk.current().secret else { unreachable!() };
        let w = wrap_x25519(&p.public, &dk).unwrap();
        prop_assert_eq!(*unwrap_x25519(secret, &w).unwrap().bytes(), *dk.bytes());
        let mut bad = w.clone();
        bad[flip % w.len()] ^= 1 << bit;
        prop_assert!(unwrap_x25519(secret, &bad).is_err());
    }
}

#[test]
fn a_secret_key_file_refuses_every_flipped_byte_and_every_truncation() {
    let mut k = KeyFile::new_symmetric(1).unwrap();
    k.rotate(2).unwrap();
    let good = k.encode(b"pw", fast()).unwrap();
    assert_eq!(KeyFile::decode(&good, b"pw", "k").unwrap(), k);
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        assert!(
            KeyFile::decode(&bad, b"pw", "k").is_err(),
            "flipped byte {i}"
        );
        assert!(
            KeyFile::decode(&good[..i], b"pw", "k").is_err(),
            "cut at {i}"
        );
    }
    let (rk, _) = KeyFile::new_write_only(3).unwrap();
    let b = rk.encode(b"pw", fast()).unwrap();
    assert_eq!(KeyFile::decode(&b, b"pw", "r").unwrap(), rk);
}

#[test]
fn hostile_argon2_costs_are_refused_before_any_work() {
    let k = KeyFile::new_symmetric(1).unwrap();
    let mut b = k.encode(b"pw", fast()).unwrap();
    // Memory 4 GiB: refused, not attempted.
    b[12..16].copy_from_slice(&(4u32 << 20).to_le_bytes());
    let n = b.len() - 32;
    let check = *blake3::hash(&b[..n]).as_bytes();
    b[n..].copy_from_slice(&check);
    let e = KeyFile::decode(&b, b"pw", "k").unwrap_err().to_string();
    assert!(e.contains("Argon2id parameters"), "{e}");
}
