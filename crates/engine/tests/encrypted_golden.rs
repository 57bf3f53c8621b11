//! Golden files of encrypted restore points (format version 1 with the encryption record,
//! docs/encryption.md): a symmetric full and a write-only full, with their key files, must
//! keep decrypting to the same image in every later build. Regenerate only for a new format
//! or record version: `BULWARK_WRITE_GOLDEN=1` and run this test.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bulwark_crypto::{Argon2Params, KeyFile, PublicKeyFile};
use bulwark_engine::*;
use bulwark_format::{BlockDecoder, MapEntry, PointReader};
use bulwark_repository::Repository;
use bulwark_testkit::Rng;

const PASSPHRASE: &[u8] = b"golden passphrase";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../format/tests/golden")
}

/// 64 KiB blocks: text (zstd), random (raw), zero (absent), a short text tail.
fn golden_image() -> Vec<u8> {
    let mut img = vec![0u8; 3 * 65536 + 5000];
    let text: Vec<u8> = b"Bulwark encrypted golden file v1. "
        .iter()
        .copied()
        .cycle()
        .take(65536)
        .collect();
    img[..65536].copy_from_slice(&text);
    img[65536..131072].copy_from_slice(&Rng::new(17).bytes(65536));
    img[3 * 65536..].copy_from_slice(&text[..5000]);
    img
}

/// The golden key file `NAME.key`, opened with its passphrase.
fn golden_key(name: &str) -> KeyFile {
    let bytes = std::fs::read(golden_dir().join(format!("{name}.key"))).unwrap();
    KeyFile::decode(&bytes, PASSPHRASE, name).unwrap()
}

/// Decrypts every block of the point file at `path` with `key` into an image.
fn decrypt(path: &Path, key: &KeyFile) -> Vec<u8> {
    let r = PointReader::open(File::open(path).unwrap()).unwrap();
    let dec = Decryptor::for_files(&[&r.meta], key)
        .unwrap()
        .expect("an encrypted point");
    let mut img = vec![0u8; r.header.disk_size as usize];
    let mut bd = BlockDecoder::new().unwrap();
    let (mut stored, mut payload, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for e in &r.map {
        let s = r
            .read_stored(&MapEntry { file_ref: 0, ..*e }, &mut stored)
            .unwrap();
        let p = dec
            .decode(&mut bd, r.meta.point, e, s, &mut payload, &mut plain)
            .unwrap();
        let at = (e.block.0 * u64::from(r.header.block_size)) as usize;
        img[at..at + p.len()].copy_from_slice(p);
    }
    img
}

fn write_golden() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.img");
    File::create(&src)
        .unwrap()
        .write_all_at(&golden_image(), 0)
        .unwrap();
    let repo = Repository::init(&d.path().join("repo"), 7).unwrap();
    let o = BackupOptions {
        block_size: Some(65536),
        threads: 1,
        ..Default::default()
    };
    let sym = KeyFile::new_symmetric(1_790_000_000).unwrap();
    let (restore_key, public) = KeyFile::new_write_only(1_790_000_000).unwrap();
    let g = golden_dir();
    for (name, wk, kf) in [
        (
            "v1-encrypted-symmetric",
            WriteKey::Symmetric(sym.clone()),
            &sym,
        ),
        (
            "v1-encrypted-write-only",
            WriteKey::Public(public.clone()),
            &restore_key,
        ),
    ] {
        let s = backup_local_encrypted(&repo, name, Source::open(&src).unwrap(), &o, &wk, &|_| {})
            .unwrap();
        std::fs::copy(&s.sealed.path, g.join(format!("{name}.bwrp"))).unwrap();
        std::fs::write(
            g.join(format!("{name}.key")),
            kf.encode(PASSPHRASE, Argon2Params::default()).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(g.join("v1-encrypted-write-only.pub"), public.encode()).unwrap();
}

#[test]
fn golden_encrypted_v1_files_still_decrypt() {
    if std::env::var_os("BULWARK_WRITE_GOLDEN").is_some() {
        write_golden();
    }
    let g = golden_dir();
    let want = golden_image();
    for name in ["v1-encrypted-symmetric", "v1-encrypted-write-only"] {
        let kf = golden_key(name);
        let path = g.join(format!("{name}.bwrp"));
        assert!(
            decrypt(&path, &kf) == want,
            "{name} decrypts to the golden image"
        );
        // The plain block hashes of the image appear nowhere in the file.
        let file = std::fs::read(&path).unwrap();
        let h = blake3::hash(&want[..65536]);
        assert!(!file.windows(32).any(|w| w == h.as_bytes()), "{name}");
        // Without a key, the plain decoder refuses (never wrong bytes).
        let r = PointReader::open(File::open(&path).unwrap()).unwrap();
        let mut bd = BlockDecoder::new().unwrap();
        let (mut st, mut out) = (Vec::new(), Vec::new());
        let e = r.map[0];
        let s = r.read_stored(&e, &mut st).unwrap().to_vec();
        let err = bd.decode(&e, &s, &mut out).unwrap_err().to_string();
        assert!(err.contains("is encrypted"), "{err}");
        bd.check(&e, &s, &mut out)
            .expect("the stored hash checks without a key");
    }
    let p = PublicKeyFile::decode(
        &std::fs::read(g.join("v1-encrypted-write-only.pub")).unwrap(),
        "pub",
    )
    .unwrap();
    let kf = golden_key("v1-encrypted-write-only");
    assert_eq!(p.key_id(), kf.current().key_id());
}

/// A chain begun before change-detection hashes bound the block number keeps its hash: an
/// incremental on the golden symmetric full (record flag clear) finds every block unchanged,
/// its record keeps the flag clear, and it restores to the golden image.
#[test]
fn an_incremental_on_a_chain_of_the_older_change_hash_keeps_that_hash() {
    let g = golden_dir();
    let name = "v1-encrypted-symmetric";
    let kf = golden_key(name);
    let golden = g.join(format!("{name}.bwrp"));
    let meta = PointReader::open(File::open(&golden).unwrap())
        .unwrap()
        .meta;
    assert!(!record_of(&meta).unwrap().unwrap().positional);
    let d = tempfile::tempdir().unwrap();
    let repo = Repository::init(&d.path().join("repo"), 7).unwrap();
    let dst = repo.point_path(&meta.job, meta.chain, meta.point);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(&golden, &dst).unwrap();
    let src = d.path().join("src.img");
    File::create(&src)
        .unwrap()
        .write_all_at(&golden_image(), 0)
        .unwrap();
    let o = BackupOptions {
        block_size: Some(65536),
        ..Default::default()
    };
    let wk = WriteKey::Symmetric(kf.clone());
    let inc = backup_local_encrypted(
        &repo,
        &meta.job,
        Source::open(&src).unwrap(),
        &o,
        &wk,
        &|_| {},
    )
    .unwrap();
    assert_eq!(inc.sealed.meta.chain, meta.chain, "an incremental");
    assert_eq!(inc.counters.blocks_new, 0, "{:?}", inc.counters);
    assert!(!record_of(&inc.sealed.meta).unwrap().unwrap().positional);
    let out = d.path().join("out.img");
    restore_local_with(
        &repo,
        &meta.job,
        None,
        &out,
        &RestoreOptions::default(),
        Some(&kf),
        &|_| {},
    )
    .unwrap();
    assert!(std::fs::read(&out).unwrap() == golden_image());
}
