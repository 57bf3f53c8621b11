//! Synthetic fulls: built from a full and incrementals, they restore byte-identical to the
//! newest point of the old chain; on XFS with reflink their data is shared (cloned), costs
//! almost no space and works from immutable files; on ext4 the blocks are copied and the
//! outcome says so. The loop-device tests need root and skip with a printed reason otherwise.

use std::path::Path;
use std::process::Command;

use bulwark_format::{
    align_up, BlockNo, Codec, Digest, PointId, PointKind, StoredBlock, HEADER_LEN,
};
use bulwark_repository::{NewPoint, Repository, SynthMethod};
use bulwark_testkit::{can_run, FsKind, LoopFs, Rng};

const BS: u32 = 64 * 1024;
const BLOCKS: u64 = 768; // 48 MiB disk
const JOB: &str = "vm-1";

/// A block from `rng`: random (stored raw), compressible (zstd, unaligned length) or zero.
fn block(rng: &mut Rng) -> Vec<u8> {
    let mut b = vec![0u8; BS as usize];
    match rng.below(10) {
        0 => {}
        1..=3 => {
            let v = rng.next_u64() as u8;
            for (i, x) in b.iter_mut().enumerate() {
                *x = if i % 3 == 0 { v } else { (i / 512) as u8 };
            }
            let k = rng.next_u64() as usize % b.len();
            b[k] ^= 0x5A;
        }
        _ => rng.fill(&mut b),
    }
    b
}

/// The disk as the test sees it: one buffer per block.
type Disk = Vec<Vec<u8>>;

fn flatten(d: &Disk) -> Vec<u8> {
    d.concat()
}

/// Writes one restore point of `disk`: a full, or an incremental storing changed blocks only.
fn backup(repo: &Repository, disk: &Disk, full: bool) -> PointId {
    let parent = if full {
        None
    } else {
        repo.parent_map(JOB).unwrap()
    };
    let mut b = repo
        .begin_point(NewPoint {
            job: JOB.into(),
            parent: parent.clone(),
            disk_size: BLOCKS * u64::from(BS),
            block_size: BS,
            compression_level: 3,
            client: String::new(),
            full_kind: PointKind::ActiveFull,
        })
        .unwrap();
    for (i, data) in disk.iter().enumerate() {
        let no = BlockNo(i as u64);
        if data.iter().all(|&x| x == 0) {
            continue;
        }
        let h = Digest::of(data);
        if parent.as_ref().and_then(|p| p.hash_of(no)) == Some(h) {
            b.put_unchanged(no).unwrap();
            continue;
        }
        let c = zstd::bulk::compress(data, 3).unwrap();
        let (stored, comp) = if c.len() < data.len() {
            (c, true)
        } else {
            (data.clone(), false)
        };
        b.put_stored(StoredBlock {
            block: no,
            plain_len: BS,
            plain_hash: h,
            data: &stored,
            codec: if comp { Codec::Zstd } else { Codec::Raw },
            stored_hash: Digest::of(&stored),
        })
        .unwrap();
    }
    b.finish().unwrap().meta.point
}

/// Restores a point into memory, checking every block.
fn restore(repo: &Repository, point: PointId) -> Vec<u8> {
    let r = repo.open_point(JOB, Some(point)).unwrap();
    let mut out = vec![0u8; (BLOCKS * u64::from(BS)) as usize];
    let (mut stored, mut plain) = (vec![], vec![]);
    for e in r.entries() {
        r.read_block(e, &mut stored, &mut plain).unwrap();
        let at = (e.block.0 * u64::from(BS)) as usize;
        out[at..at + plain.len()].copy_from_slice(&plain);
    }
    out
}

/// A full and `incrementals` incrementals, each changing about a tenth of the blocks.
fn make_chain(repo: &Repository, seed: u64, incrementals: usize) -> (Disk, Vec<PointId>) {
    let mut rng = Rng::new(seed);
    let mut disk: Disk = (0..BLOCKS).map(|_| block(&mut rng)).collect();
    let mut points = vec![backup(repo, &disk, true)];
    for _ in 0..incrementals {
        for _ in 0..BLOCKS / 10 {
            let i = rng.below(BLOCKS) as usize;
            disk[i] = block(&mut rng);
        }
        points.push(backup(repo, &disk, false));
    }
    (disk, points)
}

/// Checks the synthetic full is a self-contained new chain and restores like the old point.
fn check_new_chain(repo: &Repository, new: PointId, old_newest: PointId, disk: &Disk) {
    let r = repo.open_point(JOB, Some(new)).unwrap();
    let m = &r.point().meta;
    assert_eq!(m.kind, PointKind::SyntheticFull);
    assert!(m.parent.is_none());
    assert_eq!(m.chain, new, "a synthetic full starts its own chain");
    assert!(m.files.is_empty(), "a synthetic full references no file");
    assert!(r.entries().iter().all(|e| e.file_ref == 0));
    let got = restore(repo, new);
    assert!(got == flatten(disk), "synthetic full differs from the disk");
    assert!(
        got == restore(repo, old_newest),
        "synthetic full differs from the old chain's newest point"
    );
    let v = repo.verify(Some(JOB), 2, &|_| {}).unwrap();
    assert!(v.is_clean(), "verify found damage: {:?}", v.damaged);
}

fn free_bytes(dir: &Path) -> u64 {
    let _ = Command::new("sync").status();
    let st = bulwark_sys::statvfs(dir).unwrap();
    st.blocks_available * st.frsize
}

#[test]
fn direct_and_fallback_reads_return_the_stored_bytes_of_every_block_across_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(&tmp.path().join("repo"), 7).unwrap();
    let (disk, points) = make_chain(&repo, 11, 3);
    let r = repo.open_point(JOB, Some(*points.last().unwrap())).unwrap();
    if !r.direct().all_direct() {
        eprintln!(
            "note: {} refuses O_DIRECT; this test checks the ordinary-read fallback only",
            tmp.path().display()
        );
    }
    assert!(
        r.entries().iter().any(|e| e.file_ref != 0),
        "no block of an earlier file"
    );
    for reader in [r.direct(), r.direct().without_direct_io()] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut out = vec![0u8; (BLOCKS * u64::from(BS)) as usize];
        let mut dec = bulwark_format::BlockDecoder::new().unwrap();
        let mut plain = Vec::new();
        for e in r.entries() {
            let at = reader.read(e, &mut a).unwrap();
            let local = bulwark_format::MapEntry { file_ref: 0, ..*e };
            let want = r.file_of(e).read_stored(&local, &mut b).unwrap();
            assert_eq!(&a[at.clone()], want, "block {}", e.block);
            let p = dec.decode(e, &a[at], &mut plain).unwrap();
            let off = (e.block.0 * u64::from(BS)) as usize;
            out[off..off + p.len()].copy_from_slice(p);
        }
        assert!(out == flatten(&disk), "the reads restore a different disk");
    }
}

#[test]
fn synthesize_on_any_filesystem_restores_identically_and_says_how() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(&tmp.path().join("repo"), 7).unwrap();
    let (disk, points) = make_chain(&repo, 7, 3);
    let support = repo.reflink_support().unwrap();
    let out = repo.synthesize(JOB).unwrap();
    assert_eq!(out.source_point, *points.last().unwrap());
    assert_eq!(out.source_chain, points[0]);
    assert_eq!(
        out.method == SynthMethod::Clone,
        support.is_supported(),
        "method {:?} but the probe says {support:?}",
        out.method
    );
    check_new_chain(&repo, out.sealed.meta.point, out.source_point, &disk);
    // A second synthetic full, of the synthetic full, is as good.
    let again = repo.synthesize(JOB).unwrap();
    assert_eq!(again.source_point, out.sealed.meta.point);
    check_new_chain(&repo, again.sealed.meta.point, out.source_point, &disk);
}

#[test]
fn synthetic_full_on_xfs_clones_from_immutable_files_and_costs_no_data_space() {
    let name = "synthetic_full_on_xfs_clones_from_immutable_files_and_costs_no_data_space";
    if !can_run(name, "loop mounts", &["mkfs.xfs"]) {
        return;
    }
    let size = 512 << 20;
    let fs = LoopFs::with_size(FsKind::Xfs, size);
    let repo = Repository::init(&fs.mnt.join("repo"), 7).unwrap();
    assert!(repo.reflink_support().unwrap().is_supported());
    let (disk, points) = make_chain(&repo, 42, 4);

    // Seal the sources the hard way: immutable, even for root.
    let files = bulwark_testkit::fs::point_files_under(&repo.root().join("store"));
    assert_eq!(files.len(), points.len());
    for f in &files {
        let h = std::fs::File::open(f).unwrap();
        bulwark_sys::set_flag(&h, bulwark_sys::FS_IMMUTABLE_FL, true).unwrap();
        assert!(std::fs::OpenOptions::new().write(true).open(f).is_err());
    }

    let before = free_bytes(&fs.mnt);
    let out = repo.synthesize(JOB).unwrap();
    let used = before.saturating_sub(free_bytes(&fs.mnt));
    eprintln!(
        "xfs: {} blocks, {} bytes cloned in {} calls, {:?}, free space dropped by {used} bytes",
        out.blocks, out.bytes_cloned, out.clone_calls, out.elapsed
    );
    assert_eq!(out.method, SynthMethod::Clone, "{:?}", out.fallback_reason);
    assert_eq!(out.bytes_copied, 0);
    assert!(out.fallback_reason.is_none());
    assert!(
        out.clone_calls >= 1 && out.clone_calls < out.blocks,
        "runs are coalesced"
    );
    let data: u64 = repo
        .open_point(JOB, Some(out.sealed.meta.point))
        .unwrap()
        .entries()
        .iter()
        .map(|e| align_up(u64::from(e.stored_len)))
        .sum();
    assert_eq!(out.bytes_cloned, data);
    assert!(
        data > size / 20,
        "the test must hold more data ({data}) than the 1 % threshold"
    );
    assert!(
        used < size / 100,
        "free space dropped by {used} bytes, more than 1 % of the {} byte filesystem",
        size
    );

    // FIEMAP: every extent of the new file's data region is shared with the old files.
    let r = repo.open_point(JOB, Some(out.sealed.meta.point)).unwrap();
    let data_end = r.point().trailer.map_offset;
    let ex = bulwark_sys::fiemap(r.point().file()).unwrap();
    let (mut shared, mut unshared) = (0u64, 0u64);
    for e in &ex {
        let start = e.logical.max(HEADER_LEN);
        let end = (e.logical + e.length).min(data_end);
        if end > start {
            if e.is_shared() {
                shared += end - start;
            } else {
                unshared += end - start;
            }
        }
    }
    assert_eq!(unshared, 0, "unshared data extents: {ex:?}");
    assert_eq!(shared, data_end - HEADER_LEN);

    check_new_chain(&repo, out.sealed.meta.point, out.source_point, &disk);

    // The space report sees the sharing: physical once, not twice.
    let s = repo.space().unwrap();
    assert_eq!(s.filesystem.name, "xfs");
    let chains = &s.jobs[0].chains;
    assert_eq!(chains.len(), 2);
    let new = chains
        .iter()
        .find(|c| c.chain == out.sealed.meta.point)
        .unwrap();
    assert!(new.shared_bytes >= data, "{new:?}");
    assert!(new.exclusive_bytes < data / 10, "{new:?}");
    assert!(
        s.physical_bytes + data <= s.allocated_bytes + 64 * 1024,
        "{s:?}"
    );
}

#[test]
fn synthetic_full_on_ext4_falls_back_to_copying_and_says_so() {
    let name = "synthetic_full_on_ext4_falls_back_to_copying_and_says_so";
    if !can_run(name, "loop mounts", &["mkfs.ext4"]) {
        return;
    }
    let fs = LoopFs::with_size(FsKind::Ext4, 256 << 20);
    let repo = Repository::init(&fs.mnt.join("repo"), 7).unwrap();
    let support = repo.reflink_support().unwrap();
    assert!(!support.is_supported());
    assert!(format!("{support:?}").contains("ext4"), "{support:?}");
    let (disk, _) = make_chain(&repo, 9, 3);
    let files = bulwark_testkit::fs::point_files_under(&repo.root().join("store"));
    for f in &files {
        let h = std::fs::File::open(f).unwrap();
        bulwark_sys::set_flag(&h, bulwark_sys::FS_IMMUTABLE_FL, true).unwrap();
    }
    let before = free_bytes(&fs.mnt);
    let out = repo.synthesize(JOB).unwrap();
    let used = before.saturating_sub(free_bytes(&fs.mnt));
    eprintln!(
        "ext4: {} bytes copied in {:?}: {:?}",
        out.bytes_copied, out.elapsed, out.fallback_reason
    );
    assert_eq!(out.method, SynthMethod::Copy);
    assert_eq!(out.bytes_cloned, 0);
    let why = out.fallback_reason.clone().unwrap();
    assert!(why.contains("ext4") && why.contains("copied"), "{why}");
    assert!(
        used >= out.bytes_copied,
        "a copy takes space: {used} < {}",
        out.bytes_copied
    );
    check_new_chain(&repo, out.sealed.meta.point, out.source_point, &disk);
    let s = repo.space().unwrap();
    assert_eq!(s.shared_bytes, 0);
    assert_eq!(s.physical_bytes, s.allocated_bytes);
}
