//! Backup/restore round trips over generated images: random, compressible, zero and hole
//! regions, several block sizes, and chains of incrementals.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use bulwark_engine::*;
use bulwark_format::{PointId, PointKind};
use bulwark_repository::Repository;
use bulwark_testkit::Rng;

fn compressible(n: usize, seed: u8) -> Vec<u8> {
    b"disk image text, highly compressible; "
        .iter()
        .cycle()
        .take(n)
        .map(|b| b ^ (seed & 1))
        .collect()
}

/// A sparse image: holes, random data, text, explicit zeros, and a tail that is not a
/// multiple of any block size.
fn mixed_image(path: &Path, rng: &mut Rng) -> u64 {
    let mib = 1u64 << 20;
    let size = 40 * mib + 12_345;
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap(); // all hole
    f.write_all_at(&rng.bytes(3 * mib as usize), 0).unwrap();
    f.write_all_at(&compressible(5 * mib as usize, 0), 4 * mib)
        .unwrap();
    f.write_all_at(&vec![0u8; 4 * mib as usize], 10 * mib)
        .unwrap(); // allocated zeros
    f.write_all_at(&rng.bytes(700_000), 16 * mib + 4096)
        .unwrap(); // straddles blocks
    f.write_all_at(&compressible(2 * mib as usize, 1), 30 * mib)
        .unwrap();
    f.write_all_at(&rng.bytes(12_345), 40 * mib).unwrap(); // the tail
    size
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (ma, mb) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    if ma.len() != mb.len() {
        return false;
    }
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let mut off = 0u64;
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    while off < ma.len() {
        let n = ((ma.len() - off) as usize).min(x.len());
        fa.read_exact_at(&mut x[..n], off).unwrap();
        fb.read_exact_at(&mut y[..n], off).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
        off += n as u64;
    }
    true
}

fn seed() -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("rng seed {s}");
    s
}

fn restore_to(
    repo: &Repository,
    job: &str,
    point: Option<PointId>,
    dir: &Path,
    name: &str,
) -> PathBuf {
    let out = dir.join(name);
    restore_local(repo, job, point, &out, &RestoreOptions::default(), &|_| {}).unwrap();
    out
}

/// A scratch folder with a [`mixed_image`] `disk.img` from a new [`seed`]: the folder, the
/// generator, the image and its size.
fn mixed_in_dir() -> (tempfile::TempDir, Rng, PathBuf, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed());
    let img = dir.path().join("disk.img");
    let size = mixed_image(&img, &mut rng);
    (dir, rng, img, size)
}

/// A backup of `img` as job `j` with `opts`, which must succeed.
fn backup_j(repo: &Repository, img: &Path, opts: &BackupOptions) -> BackupSummary {
    backup_local(repo, "j", img, opts, &|_| {}).unwrap()
}

/// A restore of job `j`'s newest point onto `target`, overwriting it when `force`.
fn restore_j(repo: &Repository, target: &Path, force: bool) -> Result<RestoreSummary, EngineError> {
    let opts = RestoreOptions {
        force,
        ..Default::default()
    };
    restore_local(repo, "j", None, target, &opts, &|_| {})
}

#[test]
fn mixed_images_round_trip_for_several_block_sizes() {
    let (dir, _, img, size) = mixed_in_dir();
    for bs in [64u32 << 10, 256 << 10, 1 << 20, 4 << 20] {
        let repo = Repository::init(&dir.path().join(format!("repo-{bs}")), 7).unwrap();
        let opts = BackupOptions {
            block_size: Some(bs),
            ..Default::default()
        };
        let s = backup_local(&repo, "mixed", &img, &opts, &|_| {}).unwrap();
        assert_eq!(s.sealed.meta.kind, PointKind::ActiveFull);
        // Holes are skipped unread, so less than the whole disk is read.
        assert!(
            s.counters.bytes_read < size,
            "block size {bs}: read {} of {size}",
            s.counters.bytes_read
        );
        assert!(
            s.counters.blocks_zero > 0,
            "block size {bs}: allocated zero blocks not recognised"
        );
        // Random data cannot shrink, text must: stored bytes sit between the two.
        assert!(s.counters.bytes_stored < s.counters.bytes_new_plain);
        let out = restore_to(&repo, "mixed", None, dir.path(), &format!("out-{bs}.img"));
        assert!(same_content(&img, &out), "block size {bs}: restore differs");
        // Zero blocks stay holes in the restored file.
        let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            allocated < size - 8 * (1 << 20),
            "block size {bs}: {allocated} bytes allocated of {size}"
        );
    }
}

/// A thin disk: 16 KiB of random data every 128 KiB, so each 1 MiB block holds eight pieces
/// among holes. The restore is identical and stays thin: the all-zero pages inside blocks
/// are left as holes, not written.
#[test]
fn a_thin_disk_with_holes_inside_its_blocks_round_trips_and_comes_back_thin() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed());
    let img = dir.path().join("thin.img");
    let size = 16u64 << 20;
    let f = File::create(&img).unwrap();
    f.set_len(size).unwrap();
    let (piece, every) = (16u64 << 10, 128u64 << 10);
    for at in (0..size).step_by(every as usize) {
        f.write_all_at(&rng.bytes(piece as usize), at).unwrap();
    }
    f.sync_all().unwrap();
    let data = size / every * piece;
    let repo = Repository::init(&dir.path().join("repo"), 7).unwrap();
    backup_j(&repo, &img, &BackupOptions::default());
    let out = dir.path().join("out.img");
    restore_j(&repo, &out, false).unwrap();
    assert!(same_content(&img, &out), "the restore differs");
    let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        allocated <= 2 * data,
        "{allocated} bytes allocated for {data} bytes of data in a {size}-byte disk"
    );
}

#[test]
fn chain_of_five_incrementals_restores_every_point() {
    let (dir, mut rng, img, size) = mixed_in_dir();
    let repo = Repository::init(&dir.path().join("repo"), 7).unwrap();
    let opts = BackupOptions {
        block_size: Some(64 << 10),
        ..Default::default()
    };
    let mut points = Vec::new();
    for day in 0..6 {
        if day > 0 {
            let f = OpenOptions::new().write(true).open(&img).unwrap();
            for _ in 0..5 {
                let off = rng.below(size - 70_000);
                let len = 1 + rng.below(65_536) as usize;
                f.write_all_at(&rng.bytes(len), off).unwrap();
            }
        }
        let s = backup_local(&repo, "chain", &img, &opts, &|_| {}).unwrap();
        let expect = if day == 0 {
            PointKind::ActiveFull
        } else {
            PointKind::Incremental
        };
        assert_eq!(s.sealed.meta.kind, expect);
        if day > 0 {
            assert!(
                s.counters.blocks_unchanged > 0 && s.counters.blocks_new <= 12,
                "day {day}: {:?}",
                s.counters
            );
        }
        let snap = dir.path().join(format!("day{day}.img"));
        std::fs::copy(&img, &snap).unwrap();
        points.push((s.sealed.meta.point, snap));
    }
    let chain = repo.scan_job("chain").unwrap();
    assert_eq!(chain.points.len(), 6);
    assert!(chain.points.iter().all(|p| p.meta.chain == points[0].0));
    for (i, (point, snap)) in points.iter().enumerate() {
        let out = restore_to(
            &repo,
            "chain",
            Some(*point),
            dir.path(),
            &format!("r{i}.img"),
        );
        assert!(same_content(snap, &out), "point {i} restores differently");
    }
    assert!(repo.verify(None, 2, &|_| {}).unwrap().is_clean());
}

#[test]
fn full_flag_and_size_change_start_new_chains() {
    let (_dir, img, repo) = compressible_in_repo("disk.img", 3 << 20);
    let a = backup_j(&repo, &img, &BackupOptions::default());
    let b = backup_j(
        &repo,
        &img,
        &BackupOptions {
            force_full: true,
            ..Default::default()
        },
    );
    assert_eq!(b.sealed.meta.kind, PointKind::ActiveFull);
    assert_ne!(a.sealed.meta.chain, b.sealed.meta.chain);
    std::fs::write(&img, compressible(4 << 20, 0)).unwrap();
    let c = backup_j(&repo, &img, &BackupOptions::default());
    assert_eq!(c.sealed.meta.kind, PointKind::ActiveFull);
    assert!(c.full_reason.unwrap().contains("bytes"));
}

/// A scratch folder with a compressible image `name` of `len` bytes and a new repository.
fn compressible_in_repo(name: &str, len: usize) -> (tempfile::TempDir, PathBuf, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join(name);
    std::fs::write(&img, compressible(len, 0)).unwrap();
    let repo = Repository::init(&dir.path().join("repo"), 7).unwrap();
    (dir, img, repo)
}

/// Backs up `img` as job `j`, setting its length to `len` once the backup has begun (at its
/// first progress report); the backup's error.
fn backup_resized_midway(
    repo: &Repository,
    img: &Path,
    opts: &BackupOptions,
    len: u64,
) -> EngineError {
    let resize = std::sync::Once::new();
    backup_local(repo, "j", img, opts, &|_| {
        resize.call_once(|| {
            File::options()
                .write(true)
                .open(img)
                .unwrap()
                .set_len(len)
                .unwrap()
        })
    })
    .unwrap_err()
}

#[test]
fn source_that_shrinks_during_backup_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let mut rng = Rng::new(seed());
    std::fs::write(&img, rng.bytes(16 << 20)).unwrap();
    let repo = Repository::init(&dir.path().join("repo"), 7).unwrap();
    let opts = BackupOptions {
        block_size: Some(64 << 10),
        threads: 1,
        ..Default::default()
    };
    let err = backup_resized_midway(&repo, &img, &opts, 1 << 20);
    assert!(matches!(err, EngineError::SourceChanged { .. }), "{err}");
    assert!(err.to_string().contains("changed size"));
    assert!(repo.jobs().unwrap().is_empty());
    let leftovers = std::fs::read_dir(repo.root().join("incoming"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "temporary file left behind");
}

#[test]
fn source_that_grows_during_backup_is_refused() {
    let (_dir, img, repo) = compressible_in_repo("disk.img", 4 << 20);
    let err = backup_resized_midway(&repo, &img, &BackupOptions::default(), 8 << 20);
    assert!(matches!(err, EngineError::SourceChanged { .. }), "{err}");
    assert!(repo.jobs().unwrap().is_empty());
}

#[test]
fn unusable_sources_and_names_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(&dir.path().join("repo"), 7).unwrap();
    let o = BackupOptions::default();
    let e = backup_local(&repo, "j", dir.path(), &o, &|_| {}).unwrap_err();
    assert!(
        e.to_string().contains("not a regular file or block device"),
        "{e}"
    );
    let e = backup_local(&repo, "j", &dir.path().join("missing.img"), &o, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("opening"), "{e}");
    let img = dir.path().join("d.img");
    std::fs::write(&img, b"x").unwrap();
    for bad in ["a/b", "..", "x\u{1}y"] {
        let e = backup_local(&repo, bad, &img, &o, &|_| {}).unwrap_err();
        assert!(e.to_string().contains("not allowed"), "{bad:?}: {e}");
    }
    let bad_options = [
        (
            BackupOptions {
                block_size: Some(12345),
                ..o.clone()
            },
            "block size",
        ),
        (
            BackupOptions {
                compression_level: 99,
                ..o
            },
            "compression level",
        ),
    ];
    for (opts, says) in bad_options {
        let e = backup_local(&repo, "j", &img, &opts, &|_| {}).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn restore_refuses_to_overwrite_without_force() {
    let (dir, img, repo) = compressible_in_repo("d.img", 1 << 20);
    backup_j(&repo, &img, &BackupOptions::default());
    let target = dir.path().join("existing");
    std::fs::write(&target, b"precious").unwrap();
    let e = restore_j(&repo, &target, false).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    restore_j(&repo, &target, true).unwrap();
    assert!(same_content(&img, &target));
}

#[test]
fn damaged_newest_point_makes_the_next_backup_a_full() {
    let (_dir, img, repo) = compressible_in_repo("d.img", 2 << 20);
    let a = backup_j(&repo, &img, &BackupOptions::default());
    // Damage the trailer of the only point (the repository is not guarded, so this is possible).
    let f = OpenOptions::new().write(true).open(&a.sealed.path).unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(&[0xFF], len - 100).unwrap();
    let b = backup_j(&repo, &img, &BackupOptions::default());
    assert_eq!(b.sealed.meta.kind, PointKind::ActiveFull);
    assert!(b.full_reason.unwrap().contains("damaged"));
}
