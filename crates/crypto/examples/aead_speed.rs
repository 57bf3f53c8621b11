//! Measures the AEAD candidates on this machine, one core, 1 MiB blocks (the default block
//! size): `bench/aead.sh` runs it and docs/encryption.md records the figures.

use std::time::Instant;

use aes_gcm::aead::{AeadInPlace, KeyInit, Nonce};

const BLOCK: usize = 1 << 20;
const ROUNDS: usize = 512;

fn report(name: &str, f: &mut dyn FnMut(&mut Vec<u8>)) {
    let mut buf: Vec<u8> = (0..BLOCK).map(|i| (i * 31 % 251) as u8).collect();
    for _ in 0..16 {
        let mut b = buf.clone();
        f(&mut b);
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        buf.truncate(BLOCK);
        f(&mut buf);
    }
    let secs = start.elapsed().as_secs_f64();
    let gib = (BLOCK * ROUNDS) as f64 / (1u64 << 30) as f64;
    println!("{name:<40} {:>7.2} GiB/s", gib / secs);
}

/// A 96-bit nonce holding the counter `n` (each block of a run gets its own).
fn counter_nonce(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&n.to_le_bytes());
    nonce
}

/// Sealing in place with one of ring's AEADs.
fn report_ring(name: &str, alg: &'static ring::aead::Algorithm, key: &[u8; 32]) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
    let k = LessSafeKey::new(UnboundKey::new(alg, key).unwrap());
    let mut n = 0u64;
    report(name, &mut |b| {
        n += 1;
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(counter_nonce(n)),
            Aad::from(&[1u8; 48]),
            b,
        )
        .unwrap();
    });
}

/// Encrypting in place with one of RustCrypto's AEADs, the counter in the nonce's first bytes.
fn report_rustcrypto<A: AeadInPlace + KeyInit>(name: &str, key: &[u8; 32]) {
    let k = A::new_from_slice(key).unwrap();
    let mut n = 0u64;
    let mut nonce = Nonce::<A>::default();
    report(name, &mut |b| {
        n += 1;
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        k.encrypt_in_place(&nonce, &[1u8; 48], b).unwrap();
    });
}

fn main() {
    let key = [7u8; 32];
    report_ring("ring AES-256-GCM (seal)", &ring::aead::AES_256_GCM, &key);
    report_ring(
        "ring ChaCha20-Poly1305 (seal)",
        &ring::aead::CHACHA20_POLY1305,
        &key,
    );
    report_rustcrypto::<aes_gcm::Aes256Gcm>("RustCrypto aes-gcm Aes256Gcm", &key);
    report_rustcrypto::<chacha20poly1305::XChaCha20Poly1305>("RustCrypto XChaCha20-Poly1305", &key);
    report("BLAKE3 keyed (change-detection hash)", &mut |b| {
        std::hint::black_box(blake3::keyed_hash(&key, b));
    });
    report("BLAKE3 (plain hash, for reference)", &mut |b| {
        std::hint::black_box(blake3::hash(b));
    });
}
