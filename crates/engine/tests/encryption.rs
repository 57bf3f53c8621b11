//! Encrypted backups (issue 17, docs/encryption.md): round trips for every block size, no
//! plaintext and no plain hash in any repository file, blocks moved between positions or
//! points fail authentication, wrong keys are refused before anything is written, write-only
//! clients back up (incrementals too) but only the private restore key reads, verify checks
//! every stored byte without a key, rotation keeps old chains readable, synthetic fulls of
//! encrypted chains stay readable.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bulwark_crypto::KeyFile;
use bulwark_engine::*;
use bulwark_format::{PointReader, PointWriter, StoredBlock};
use bulwark_repository::Repository;
use bulwark_testkit::Rng;

const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a9c-";

/// An image of `size` bytes: random data, a compressible run holding the marker, zeros.
fn make_image(path: &Path, size: u64, seed: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&Rng::new(seed).bytes(600_000), 0).unwrap();
    let text: Vec<u8> = MARKER.iter().copied().cycle().take(900_000).collect();
    f.write_all_at(&text, 2 << 20).unwrap();
    // One raw (incompressible) block that also holds the marker.
    let mut raw = Rng::new(seed + 1).bytes(70_000);
    raw[1000..1000 + MARKER.len()].copy_from_slice(MARKER);
    f.write_all_at(&raw, size - 80_000).unwrap();
}

/// Overwrites `len` bytes of the image at `at` with random bytes from `seed` (a change
/// between two backups).
fn overwrite(img: &Path, seed: u64, len: usize, at: u64) {
    File::options()
        .write(true)
        .open(img)
        .unwrap()
        .write_all_at(&Rng::new(seed).bytes(len), at)
        .unwrap();
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn opts(bs: u32) -> BackupOptions {
    BackupOptions {
        block_size: Some(bs),
        ..Default::default()
    }
}

fn sym(kf: &KeyFile) -> WriteKey {
    WriteKey::Symmetric(kf.clone())
}

fn backup(
    repo: &Repository,
    job: &str,
    img: &Path,
    o: &BackupOptions,
    key: &WriteKey,
) -> BackupSummary {
    backup_local_encrypted(repo, job, Source::open(img).unwrap(), o, key, &|_| {}).unwrap()
}

fn restore(
    repo: &Repository,
    job: &str,
    point: Option<bulwark_format::PointId>,
    target: &Path,
    key: &KeyFile,
) -> Result<RestoreSummary, EngineError> {
    restore_local_encrypted(
        repo,
        job,
        point,
        target,
        &RestoreOptions::default(),
        key,
        &|_| {},
    )
}

/// [`restore`], which must fail: its error.
fn restore_err(
    repo: &Repository,
    point: Option<bulwark_format::PointId>,
    target: &Path,
    key: &KeyFile,
) -> String {
    restore(repo, "vm", point, target, key)
        .unwrap_err()
        .to_string()
}

/// A restore of job `vm` without any key, which must fail: its error.
fn keyless_restore_err(repo: &Repository, target: &Path) -> String {
    restore_local(
        repo,
        "vm",
        None,
        target,
        &RestoreOptions::default(),
        &|_| {},
    )
    .unwrap_err()
    .to_string()
}

/// Where the tests start: a scratch folder with a new repository `repo` and the path of its
/// image `disk.img`.
fn rig() -> (tempfile::TempDir, Repository, PathBuf) {
    rig_in(tempfile::tempdir().unwrap())
}

/// [`rig`] in the scratch folder `d`.
fn rig_in(d: tempfile::TempDir) -> (tempfile::TempDir, Repository, PathBuf) {
    let repo = Repository::init(&d.path().join("repo"), 7).unwrap();
    let img = d.path().join("disk.img");
    (d, repo, img)
}

/// [`rig`] with a 6 MiB [`make_image`] from `seed` and a write-only key pair: the private
/// restore key and the write key clients back up with.
fn write_only_rig(seed: u64) -> (tempfile::TempDir, Repository, PathBuf, KeyFile, WriteKey) {
    let (d, repo, img) = rig();
    let (private, public) = KeyFile::new_write_only(1).unwrap();
    make_image(&img, 6 << 20, seed);
    (d, repo, img, private, WriteKey::Public(public))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn point_files(repo: &Path) -> Vec<PathBuf> {
    bulwark_testkit::fs::point_files_under(&repo.join("store"))
}

#[test]
fn encrypted_round_trips_for_every_block_size_with_working_incrementals() {
    let (d, repo, _) = rig();
    let kf = KeyFile::new_symmetric(1).unwrap();
    for (i, bs) in [
        64u32 << 10,
        128 << 10,
        256 << 10,
        512 << 10,
        1 << 20,
        2 << 20,
        4 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let job = format!("bs{}", bs >> 10);
        let img = d.path().join(format!("{job}.img"));
        // Not a multiple of any block size: the last block is short.
        make_image(&img, (9 << 20) + 12_345, i as u64);
        let full = backup(&repo, &job, &img, &opts(bs), &sym(&kf));
        let first = read(&img);
        // Change one block's worth of bytes in the middle.
        overwrite(&img, 99, 5000, 5 << 20);
        let inc = backup(&repo, &job, &img, &opts(bs), &sym(&kf));
        assert!(
            inc.counters.blocks_unchanged > 0,
            "{job}: change detection with the keyed hash finds unchanged blocks"
        );
        assert!(
            inc.counters.blocks_new >= 1 && inc.counters.blocks_new <= 2,
            "{job}: {:?}",
            inc.counters
        );
        let out = d.path().join(format!("{job}.out"));
        restore(&repo, &job, Some(full.sealed.meta.point), &out, &kf).unwrap();
        assert!(
            read(&out) == first,
            "{job}: the full restores byte for byte"
        );
        std::fs::remove_file(&out).unwrap();
        restore(&repo, &job, None, &out, &kf).unwrap();
        assert!(
            read(&out) == read(&img),
            "{job}: the incremental restores byte for byte"
        );
    }
}

#[test]
fn a_plaintext_marker_and_the_plain_block_hashes_appear_in_no_repository_file() {
    let (d, repo, img) = rig();
    let kf = KeyFile::new_symmetric(1).unwrap();
    make_image(&img, 8 << 20, 3);
    backup(&repo, "vm", &img, &opts(64 << 10), &sym(&kf));
    let data = read(&img);
    let hashes: Vec<[u8; 32]> = data
        .chunks(64 << 10)
        .filter(|c| c.iter().any(|&b| b != 0))
        .map(|c| *blake3::hash(c).as_bytes())
        .collect();
    assert!(!point_files(repo.root()).is_empty());
    for f in bulwark_testkit::fs::files_under(repo.root()) {
        let b = read(&f);
        assert!(
            !contains(&b, &MARKER[..16]),
            "{} holds plaintext",
            f.display()
        );
        for h in &hashes {
            assert!(!contains(&b, h), "{} holds a plain block hash", f.display());
        }
    }
    // The same backup unencrypted does hold both: the check above can fail.
    let plain = Repository::init(&d.path().join("plain"), 7).unwrap();
    backup_local(&plain, "vm", &img, &opts(64 << 10), &|_| {}).unwrap();
    let b = read(&point_files(&d.path().join("plain"))[0]);
    assert!(contains(&b, &MARKER[..16]) && contains(&b, &hashes[0]));
}

/// Gives, for own entry `i`, the entry and stored bytes to write in its place.
type Forger<'a> =
    dyn Fn(usize, &bulwark_format::MapEntry) -> (bulwark_format::MapEntry, Vec<u8>) + 'a;

/// Rewrites the point file at `path` as a repository could (map, root digest and every hash
/// recomputed), with `swap` telling which entry's stored bytes each own block gets.
fn forge(path: &Path, data_for: &Forger) {
    let r = PointReader::open(File::open(path).unwrap()).unwrap();
    let meta = r.meta.clone();
    let tmp = path.with_extension("forged");
    let mut w = PointWriter::new(File::create(&tmp).unwrap(), r.header).unwrap();
    for f in &meta.files {
        w.add_file(*f);
    }
    for (i, e) in r.map.iter().enumerate() {
        if e.file_ref != 0 {
            w.put_ref(*e).unwrap();
            continue;
        }
        let (like, bytes) = data_for(i, e);
        w.put_stored(StoredBlock {
            block: e.block,
            plain_len: e.plain_len,
            plain_hash: like.plain_hash,
            data: &bytes,
            codec: like.codec(),
            stored_hash: bulwark_format::Digest::of(&bytes),
        })
        .unwrap();
    }
    w.finish(meta).unwrap();
    make_writable(path);
    std::fs::rename(&tmp, path).unwrap();
}

/// Gives the owner write permission on a sealed file (mode 0600), as the tests' attacker.
fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn stored_of(path: &Path, e: &bulwark_format::MapEntry) -> Vec<u8> {
    let r = PointReader::open(File::open(path).unwrap()).unwrap();
    let mut buf = Vec::new();
    r.read_stored(e, &mut buf).unwrap().to_vec()
}

#[test]
fn a_block_moved_to_another_position_or_another_point_fails_authentication() {
    let (d, repo, img) = rig();
    let kf = KeyFile::new_symmetric(1).unwrap();
    let f = File::create(&img).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(&Rng::new(1).bytes(256 << 10), 0).unwrap();
    backup(&repo, "vm", &img, &opts(64 << 10), &sym(&kf));
    // The incremental changes block 0 only.
    f.write_all_at(&Rng::new(2).bytes(64 << 10), 0).unwrap();
    let inc = backup(&repo, "vm", &img, &opts(64 << 10), &sym(&kf));
    assert_eq!(inc.counters.blocks_new, 1);
    let files = point_files(repo.root());
    let (full_path, inc_path) = (files[0].clone(), inc.sealed.path.clone());
    let full_id = files[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(full_path, inc_path);
    let out = d.path().join("out.img");

    // Position: blocks 1 and 2 of the full swap places (with their entries' hashes).
    let saved = read(&full_path);
    let full = PointReader::open(File::open(&full_path).unwrap()).unwrap();
    let map = full.map.clone();
    drop(full);
    forge(&full_path, &|i, e| {
        let j = match i {
            1 => 2,
            2 => 1,
            _ => i,
        };
        let _ = e;
        (map[j], stored_of(&full_path, &map[j]))
    });
    let err = restore_err(&repo, Some(full_id), &out, &kf);
    assert!(err.contains("does not authenticate"), "{err}");
    assert!(!out.exists());
    std::fs::write(&full_path, &saved).unwrap();
    restore(&repo, "vm", Some(full_id), &out, &kf).unwrap();
    std::fs::remove_file(&out).unwrap();

    // Point: the incremental's block 0 replaced by the full's block 0 with the full's entry
    // (same chain key, same position, a consistent map): the rollback is refused.
    let full_b0 = map[0];
    let old_b0 = stored_of(&full_path, &full_b0);
    forge(&inc_path, &|_, e| {
        assert_eq!(e.block.0, 0);
        (full_b0, old_b0.clone())
    });
    let err = restore_err(&repo, None, &out, &kf);
    assert!(
        err.contains("another restore point's session") && err.contains("does not authenticate"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn a_wrong_key_is_refused_clearly_and_nothing_is_written() {
    let (d, repo, img) = rig();
    let (kf, other) = (
        KeyFile::new_symmetric(1).unwrap(),
        KeyFile::new_symmetric(1).unwrap(),
    );
    make_image(&img, 4 << 20, 5);
    backup(&repo, "vm", &img, &opts(64 << 10), &sym(&kf));
    let out = d.path().join("out.img");
    let err = restore_err(&repo, None, &out, &other);
    assert!(err.contains("wrong key"), "{err}");
    assert!(!out.exists());
    let err = keyless_restore_err(&repo, &out);
    assert!(
        err.contains("is encrypted") && err.contains("--key"),
        "{err}"
    );
    assert!(!out.exists());
    let before = point_files(repo.root()).len();
    let err = backup_local_encrypted(
        &repo,
        "vm",
        Source::open(&img).unwrap(),
        &opts(64 << 10),
        &sym(&other),
        &|_| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("wrong key"), "{err}");
    let err = backup_local(&repo, "vm", &img, &opts(64 << 10), &|_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("is encrypted") && err.contains("refused"),
        "{err}"
    );
    assert_eq!(
        point_files(repo.root()).len(),
        before,
        "nothing was written"
    );
}

#[test]
fn a_write_only_client_backs_up_incrementals_but_only_the_private_restore_key_reads() {
    let (d, repo, img, private, wk) = write_only_rig(8);
    let full = backup(&repo, "vm", &img, &opts(128 << 10), &wk);
    let first = read(&img);
    overwrite(&img, 5, 9000, 3 << 20);
    let inc = backup(&repo, "vm", &img, &opts(128 << 10), &wk);
    assert_eq!(
        inc.sealed.meta.chain, full.sealed.meta.chain,
        "an incremental, not a new chain"
    );
    assert!(
        inc.counters.blocks_unchanged > 0 && inc.counters.blocks_new == 1,
        "{:?}",
        inc.counters
    );
    let out = d.path().join("out.img");
    // Without the private key: refused (with the symmetric kind or without any key).
    let err = keyless_restore_err(&repo, &out);
    assert!(err.contains("encrypted"), "{err}");
    let err = restore_err(&repo, None, &out, &KeyFile::new_symmetric(1).unwrap());
    assert!(
        err.contains("write-only") && err.contains("restore key"),
        "{err}"
    );
    let (stranger, _) = KeyFile::new_write_only(1).unwrap();
    let err = restore_err(&repo, None, &out, &stranger);
    assert!(err.contains("wrong key"), "{err}");
    assert!(!out.exists());
    // With it: both points.
    restore(&repo, "vm", None, &out, &private).unwrap();
    assert!(read(&out) == read(&img));
    std::fs::remove_file(&out).unwrap();
    restore(&repo, "vm", Some(full.sealed.meta.point), &out, &private).unwrap();
    assert!(read(&out) == first);
    std::fs::remove_file(&out).unwrap();
    // A synthetic full (built without any key) of the incremental stays readable.
    let synth = repo.synthesize("vm").unwrap();
    restore(&repo, "vm", Some(synth.sealed.meta.point), &out, &private).unwrap();
    assert!(read(&out) == read(&img));
}

#[test]
fn verify_without_any_key_detects_every_flipped_byte_of_an_encrypted_point() {
    // On tmpfs where there is one: verify fsyncs its state, and this runs it once per byte.
    let shm = Path::new("/dev/shm");
    let (_d, repo, img) = rig_in(if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    });
    let kf = KeyFile::new_symmetric(1).unwrap();
    let f = File::create(&img).unwrap();
    f.set_len(64 << 10).unwrap();
    f.write_all_at(&MARKER.repeat(40), 100).unwrap();
    f.write_all_at(&Rng::new(4).bytes(300), 30_000).unwrap();
    backup(&repo, "vm", &img, &opts(64 << 10), &sym(&kf));
    assert!(repo.verify(None, 1, &|_| {}).unwrap().is_clean());
    let path = point_files(repo.root())[0].clone();
    let good = read(&path);
    make_writable(&path);
    let mut missed = Vec::new();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let clean = repo
            .verify(None, 1, &|_| {})
            .map(|r| r.is_clean())
            .unwrap_or(false);
        if clean {
            missed.push(i);
        }
    }
    std::fs::write(&path, &good).unwrap();
    assert!(
        missed.is_empty(),
        "flips verify missed at offsets {missed:?} of {}",
        good.len()
    );
}

#[test]
fn key_rotation_keeps_old_chains_readable_and_new_chains_use_the_new_key() {
    let (d, repo, img) = rig();
    let old = KeyFile::new_symmetric(1).unwrap();
    make_image(&img, 4 << 20, 2);
    let a = backup(&repo, "vm", &img, &opts(64 << 10), &sym(&old));
    let mut rotated = old.clone();
    rotated.rotate(2).unwrap();
    // The running chain continues under its own key generation.
    let b = backup(&repo, "vm", &img, &opts(64 << 10), &sym(&rotated));
    assert_eq!(b.sealed.meta.chain, a.sealed.meta.chain);
    let rec = record_of(&b.sealed.meta).unwrap().unwrap();
    assert_eq!(rec.key_id, old.current().key_id());
    // A new chain uses the new generation.
    let full = BackupOptions {
        force_full: true,
        ..opts(64 << 10)
    };
    let c = backup(&repo, "vm", &img, &full, &sym(&rotated));
    assert_eq!(
        record_of(&c.sealed.meta).unwrap().unwrap().key_id,
        rotated.current().key_id()
    );
    let out = d.path().join("out.img");
    for p in [
        a.sealed.meta.point,
        b.sealed.meta.point,
        c.sealed.meta.point,
    ] {
        restore(&repo, "vm", Some(p), &out, &rotated).unwrap();
        assert!(read(&out) == read(&img));
        std::fs::remove_file(&out).unwrap();
    }
    restore(&repo, "vm", Some(a.sealed.meta.point), &out, &old).unwrap();
    std::fs::remove_file(&out).unwrap();
    let err = restore_err(&repo, Some(c.sealed.meta.point), &out, &old);
    assert!(err.contains("wrong key"), "{err}");
}

#[test]
fn an_encrypted_backup_after_plain_ones_starts_a_new_chain() {
    let (_d, repo, img) = rig();
    let kf = KeyFile::new_symmetric(1).unwrap();
    make_image(&img, 4 << 20, 6);
    let plain = backup_local(&repo, "vm", &img, &opts(64 << 10), &|_| {}).unwrap();
    let enc = backup(&repo, "vm", &img, &opts(64 << 10), &sym(&kf));
    assert_ne!(enc.sealed.meta.chain, plain.sealed.meta.chain);
    assert!(enc.full_reason.unwrap().contains("not encrypted"));
}

#[test]
fn an_encrypted_point_is_randomly_readable_with_its_key_for_instant_access() {
    let (_d, repo, img, private, wk) = write_only_rig(11);
    backup(&repo, "vm", &img, &opts(64 << 10), &wk);
    overwrite(&img, 12, 3000, 2 << 20);
    backup(&repo, "vm", &img, &opts(64 << 10), &wk);
    let want = read(&img);
    let chain = repo.open_point("vm", None).unwrap();
    let image = PointImage::new(
        Decrypting::chain(chain, &private).unwrap(),
        DEFAULT_CACHE_BYTES,
    );
    for (at, len) in [
        (0u64, 4096usize),
        ((2 << 20) - 100, 5000),
        (3 << 20, 70_000),
        ((6 << 20) - 9000, 9000),
    ] {
        let mut buf = vec![0u8; len];
        image.read_at(at, &mut buf).unwrap();
        assert!(buf == want[at as usize..at as usize + len], "read at {at}");
    }
    // The wrong key is refused when the image is built.
    let (stranger, _) = KeyFile::new_write_only(1).unwrap();
    let chain = repo.open_point("vm", None).unwrap();
    let err = Decrypting::chain(chain, &stranger)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("wrong key"), "{err}");
}

/// Review finding: every synthetic full listed every session of the synthetic full before it,
/// blocks or no blocks, so a write-only job continued by synthetic fulls grew its record by
/// a session a point until it hit the 512-session limit and every synthetic full failed. A
/// synthetic full now lists only the sessions its blocks carry; every point stays readable.
#[test]
fn synthetic_fulls_of_a_write_only_chain_list_only_the_sessions_their_blocks_use() {
    let (d, repo, img) = rig();
    let (private, public) = KeyFile::new_write_only(1).unwrap();
    let wk = WriteKey::Public(public);
    let bs = 64u32 << 10;
    let f = File::create(&img).unwrap();
    f.set_len(3 * u64::from(bs)).unwrap();
    f.write_all_at(&Rng::new(1).bytes(3 * bs as usize), 0)
        .unwrap();
    backup(&repo, "vm", &img, &opts(bs), &wk);
    let out = d.path().join("out.img");
    for round in 0..5u64 {
        for i in 0..3u64 {
            // Block 0 changes every time; block 2 once a round; block 1 never.
            overwrite(&img, 100 + round * 10 + i, 1000, 0);
            if i == 0 {
                overwrite(&img, 500 + round, 1000, 2 * u64::from(bs));
            }
            backup(&repo, "vm", &img, &opts(bs), &wk);
        }
        let synth = repo.synthesize("vm").unwrap();
        let chain = repo
            .open_point("vm", Some(synth.sealed.meta.point))
            .unwrap();
        let record = record_of(&chain.point().meta).unwrap().unwrap();
        // Block 0 from the newest point (its own session), block 2 from this round's first
        // incremental, block 1 from the first full.
        assert_eq!(record.sessions.len(), 3, "round {round}: {record:?}");
        restore(&repo, "vm", Some(synth.sealed.meta.point), &out, &private).unwrap();
        assert!(read(&out) == read(&img), "round {round}");
        std::fs::remove_file(&out).unwrap();
    }
    assert!(repo.verify(None, 1, &|_| {}).unwrap().is_clean());
}

/// Review finding: the change-detection hash was the keyed BLAKE3 of the plain block alone,
/// so the map showed the repository every pair of equal blocks — within a disk, across its
/// points and across every job sharing a key. A new chain's hash binds the block number:
/// equal blocks at two positions hash apart (in both modes), while the same block of the
/// next incremental still compares equal.
#[test]
fn equal_blocks_at_different_positions_show_different_change_hashes() {
    let (_d, repo, img) = rig();
    let kf = KeyFile::new_symmetric(1).unwrap();
    let (_, public) = KeyFile::new_write_only(1).unwrap();
    let bs = 64u32 << 10;
    let block = Rng::new(3).bytes(bs as usize);
    let f = File::create(&img).unwrap();
    for i in 0..4 {
        f.write_all_at(&block, i * u64::from(bs)).unwrap();
    }
    for (job, wk) in [("sym", sym(&kf)), ("wo", WriteKey::Public(public))] {
        let full = backup(&repo, job, &img, &opts(bs), &wk);
        let r = PointReader::open(File::open(&full.sealed.path).unwrap()).unwrap();
        assert!(record_of(&r.meta).unwrap().unwrap().positional);
        let mut hashes: Vec<_> = r.map.iter().map(|e| e.plain_hash).collect();
        assert_eq!(hashes.len(), 4);
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), 4, "{job}: equal blocks show equal hashes");
        let inc = backup(&repo, job, &img, &opts(bs), &wk);
        assert_eq!(inc.sealed.meta.chain, full.sealed.meta.chain);
        assert_eq!(
            (inc.counters.blocks_unchanged, inc.counters.blocks_new),
            (4, 0),
            "{job}"
        );
    }
}

/// Review finding: when the only point of an encrypted job was damaged (a byte of its trailer
/// flipped), a backup without the key went ahead as a plain active full — and every later
/// keyless backup followed it. A damaged point whose metadata still shows its encryption
/// record now counts: the keyless backup is refused and writes nothing; with the key, the
/// backup starts a new encrypted chain. A plain job in the same state still gets its new full
/// (`roundtrip::damaged_newest_point_makes_the_next_backup_a_full`).
#[test]
fn a_keyless_backup_is_refused_when_the_encrypted_jobs_only_point_is_damaged() {
    let (_d, repo, img) = rig();
    make_image(&img, 2 << 20, 11);
    let kf = KeyFile::new_symmetric(1).unwrap();
    let first = backup(&repo, "vm", &img, &opts(64 << 10), &sym(&kf));
    let path = first.sealed.path.clone();
    make_writable(&path);
    let f = File::options().read(true).write(true).open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, len - 100).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], len - 100).unwrap();
    assert!(PointReader::open(File::open(&path).unwrap()).is_err());
    let before = point_files(repo.root()).len();
    let err = backup_local(&repo, "vm", &img, &opts(64 << 10), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is encrypted") && err.contains(&hex::encode(kf.current().key_id())),
        "{err}"
    );
    assert_eq!(
        point_files(repo.root()).len(),
        before,
        "nothing was written"
    );
    let next = backup(&repo, "vm", &img, &opts(64 << 10), &sym(&kf));
    assert_ne!(
        next.sealed.meta.chain, first.sealed.meta.chain,
        "a new chain"
    );
    assert!(record_of(&next.sealed.meta).unwrap().is_some());
}
