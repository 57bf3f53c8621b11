//! Measures the AEAD candidates on this machine, one core, 1 MiB blocks (the default block
//! size): `bench/aead.sh` runs it and docs/encryption.md records the figures.

use std::time::Instant;

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

fn main() {
    let key = [7u8; 32];
    {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        let mut n = 0u64;
        report("ring AES-256-GCM (seal)", &mut |b| {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&n.to_le_bytes());
            k.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&[1u8; 48]),
                b,
            )
            .unwrap();
        });
    }
    {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
        let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap());
        let mut n = 0u64;
        report("ring ChaCha20-Poly1305 (seal)", &mut |b| {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&n.to_le_bytes());
            k.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&[1u8; 48]),
                b,
            )
            .unwrap();
        });
    }
    {
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        let k = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
        let mut n = 0u64;
        report("RustCrypto aes-gcm Aes256Gcm", &mut |b| {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&n.to_le_bytes());
            k.encrypt_in_place((&nonce).into(), &[1u8; 48], b).unwrap();
        });
    }
    {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let k = chacha20poly1305::XChaCha20Poly1305::new_from_slice(&key).unwrap();
        let mut n = 0u64;
        report("RustCrypto XChaCha20-Poly1305", &mut |b| {
            n += 1;
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&n.to_le_bytes());
            k.encrypt_in_place((&nonce).into(), &[1u8; 48], b).unwrap();
        });
    }
    report("BLAKE3 keyed (change-detection hash)", &mut |b| {
        std::hint::black_box(blake3::keyed_hash(&key, b));
    });
    report("BLAKE3 (plain hash, for reference)", &mut |b| {
        std::hint::black_box(blake3::hash(b));
    });
}
