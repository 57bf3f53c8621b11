//! Round trips, damage detection and golden files of format version 1.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use bulwark_format::*;
use common::read_all;
use proptest::prelude::*;

fn meta_for(h: &Header, job: &str) -> PointMeta {
    PointMeta {
        created_nanos: 5,
        job: job.into(),
        ..common::meta_for(h, PointKind::ActiveFull)
    }
}

/// Writes `bytes` as the file at `p` and opens it as a restore point.
fn open_bytes(p: &Path, bytes: &[u8]) -> Result<PointReader, FormatError> {
    std::fs::write(p, bytes).unwrap();
    PointReader::open(File::open(p).unwrap())
}

/// Writes a point holding `blocks` (block number → plain data), compressing when it helps.
fn write_point(path: &Path, disk_size: u64, block_size: u32, blocks: &[(u64, Vec<u8>)]) -> Trailer {
    let h = Header {
        block_size,
        disk_size,
        point_id: PointId::new(42, [7; 8]),
    };
    let f = File::create(path).unwrap();
    let mut w = PointWriter::new(f, h).unwrap();
    for (no, data) in blocks {
        let c = zstd::bulk::compress(data, 3).unwrap();
        let (stored, comp) = if c.len() < data.len() {
            (c, true)
        } else {
            (data.clone(), false)
        };
        w.put_stored(StoredBlock::encoded(
            BlockNo(*no),
            data,
            &stored,
            if comp { Codec::Zstd } else { Codec::Raw },
        ))
        .unwrap();
    }
    let (_, t, _) = w.finish(meta_for(&h, "job-1")).unwrap();
    t
}

#[test]
fn round_trip_keeps_blocks_aligned_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.bwrp");
    let bs = 64 * 1024;
    let blocks = vec![
        (0u64, vec![1u8; bs]),
        (3, (0..bs).map(|i| (i * 7 % 251) as u8).collect()),
        (5, vec![9u8; 1000]),
    ];
    let disk = 5 * bs as u64 + 1000;
    write_point(&p, disk, bs as u32, &blocks);
    let r = PointReader::open(File::open(&p).unwrap()).unwrap();
    assert!(r.map.iter().all(|e| e.offset % ALIGN == 0));
    assert_eq!(r.meta.job, "job-1");
    assert_eq!(read_all(&p), blocks);
}

#[test]
fn every_flipped_byte_of_metadata_map_header_or_trailer_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.bwrp");
    write_point(
        &p,
        3 * 8192,
        8192,
        &[(1, vec![5u8; 8192]), (2, vec![6u8; 8192])],
    );
    let orig = std::fs::read(&p).unwrap();
    let t = Trailer::read_from(&File::open(&p).unwrap()).unwrap();
    // Header's checked bytes, then everything from the map to the end.
    let positions: Vec<usize> = (0..80).chain(t.map_offset as usize..orig.len()).collect();
    for pos in positions {
        let mut bad = orig.clone();
        bad[pos] ^= 0x01;
        assert!(open_bytes(&p, &bad).is_err(), "flip at {pos} not detected");
    }
}

#[test]
fn flipped_block_byte_is_detected_when_the_block_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.bwrp");
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 13) as u8).collect();
    write_point(&p, 8192, 8192, &[(0, data)]);
    let r = PointReader::open(File::open(&p).unwrap()).unwrap();
    let e = r.map[0];
    drop(r);
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(e.offset + 3)).unwrap();
    let mut b = [0u8];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(e.offset + 3)).unwrap();
    f.write_all(&[b[0] ^ 0x40]).unwrap();
    drop(f);
    let r = PointReader::open(File::open(&p).unwrap()).unwrap();
    let (mut s, mut out) = (vec![], vec![]);
    let s = r.read_stored(&r.map[0], &mut s).unwrap();
    assert!(matches!(
        decode_block(&r.map[0], s, &mut out),
        Err(FormatError::StoredHash { .. })
    ));
}

#[test]
fn truncated_files_are_refused_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.bwrp");
    write_point(&p, 2 * 4096, 4096, &[(0, vec![1u8; 4096])]);
    let orig = std::fs::read(&p).unwrap();
    for len in (0..orig.len()).step_by(97).chain([orig.len() - 1]) {
        assert!(
            open_bytes(&p, &orig[..len]).is_err(),
            "length {len} accepted"
        );
    }
}

#[test]
fn unknown_version_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.bwrp");
    write_point(&p, 4096, 4096, &[]);
    let mut b = std::fs::read(&p).unwrap();
    b[12] = 2; // header version field
    let err = open_bytes(&p, &b).err().unwrap();
    assert!(
        matches!(err, FormatError::UnsupportedVersion { found: 2 }),
        "{err}"
    );
}

#[test]
fn writer_refuses_out_of_order_and_wrong_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let h = Header {
        block_size: 4096,
        disk_size: 3 * 4096,
        point_id: PointId::new(1, [1; 8]),
    };
    let mut w = PointWriter::new(File::create(dir.path().join("x")).unwrap(), h).unwrap();
    let d = vec![1u8; 4096];
    w.put_stored(StoredBlock::raw(BlockNo(1), &d)).unwrap();
    assert!(w.put_stored(StoredBlock::raw(BlockNo(1), &d)).is_err());
    assert!(w
        .put_stored(StoredBlock {
            plain_len: 100,
            ..StoredBlock::raw(BlockNo(2), &d)
        })
        .is_err());
    assert!(w.put_stored(StoredBlock::raw(BlockNo(3), &d)).is_err());
}

#[test]
fn names_with_slashes_dots_or_control_characters_are_refused() {
    for bad in [
        "",
        "a/b",
        "..",
        "../x",
        ".hidden",
        "a\nb",
        "a\u{7f}",
        "a b",
        &"x".repeat(65),
    ] {
        assert!(validate_name("job", bad).is_err(), "{bad:?} accepted");
    }
    for good in ["web01", "db.main", "disk_0-a", &"x".repeat(64)] {
        validate_name("job", good).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn arbitrary_points_round_trip(
        shift in 12u32..17,
        picks in proptest::collection::btree_map(0u64..40, (any::<u8>(), any::<bool>()), 0..12),
        tail in 1u32..4096,
    ) {
        let bs = 1u32 << shift;
        let nblocks = 40u64;
        let disk = (nblocks - 1) * u64::from(bs) + u64::from(tail);
        let blocks: Vec<(u64, Vec<u8>)> = picks.iter().map(|(&no, &(seed, random))| {
            let len = plain_len_of(BlockNo(no), disk, bs) as usize;
            let data = if random {
                (0..len).map(|i| (i as u64).wrapping_mul(6364136223846793005).wrapping_add(u64::from(seed)).to_le_bytes()[7]).collect()
            } else { vec![seed; len] };
            (no, data)
        }).collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.bwrp");
        write_point(&p, disk, bs, &blocks);
        prop_assert_eq!(read_all(&p), blocks);
    }

    #[test]
    fn random_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk");
        prop_assert!(open_bytes(&p, &bytes).is_err());
    }
}

/// The golden files of format v1 and what they must decode to. Regenerate only when adding a
/// new format version (`BULWARK_WRITE_GOLDEN=1 cargo test -p bulwark-format golden`); files of
/// older versions stay and must keep reading.
fn golden_blocks() -> (u64, u32, Vec<(u64, Vec<u8>)>) {
    let bs = 4096u32;
    let text: Vec<u8> = b"Bulwark golden file v1. "
        .iter()
        .cycle()
        .take(4096)
        .copied()
        .collect();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    (
        4 * 4096 + 100,
        bs,
        vec![(0, text), (2, noise), (4, vec![0xAB; 100])],
    )
}

#[test]
fn golden_v1_files_still_read() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let p = dir.join("v1-full.bwrp");
    let (disk, bs, blocks) = golden_blocks();
    if std::env::var_os("BULWARK_WRITE_GOLDEN").is_some() {
        write_point(&p, disk, bs, &blocks);
    }
    let r = PointReader::open(File::open(&p).unwrap()).unwrap();
    assert_eq!(r.header.disk_size, disk);
    assert_eq!(r.meta.job, "job-1");
    assert_eq!(r.meta.kind, PointKind::ActiveFull);
    let expected_root = std::fs::read_to_string(dir.join("v1-full.root")).unwrap();
    assert_eq!(r.trailer.root_digest.to_hex(), expected_root.trim());
    r.check_padding().unwrap();
    assert_eq!(read_all(&p), blocks);
}

#[test]
fn plain_only_decoding_still_rejects_damaged_raw_and_compressed_blocks() {
    let raw: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let text = b"compressible text ".repeat(400);
    let packed = zstd::bulk::compress(&text, 3).unwrap();
    let entry = |plain: &[u8], stored: &[u8], compressed: bool| MapEntry {
        block: BlockNo(0),
        file_ref: 0,
        flags: if compressed { ENTRY_FLAG_ZSTD } else { 0 },
        offset: 4096,
        stored_len: stored.len() as u32,
        plain_len: plain.len() as u32,
        plain_hash: Digest::of(plain),
        stored_hash: Digest::of(stored),
    };
    let mut dec = BlockDecoder::new().unwrap();
    let mut out = Vec::new();
    for (plain, stored, compressed) in [(&raw[..], &raw[..], false), (&text[..], &packed[..], true)]
    {
        let e = entry(plain, stored, compressed);
        assert_eq!(
            dec.decode_checking_plain(&e, stored, &mut out).unwrap(),
            plain
        );
        let mut bad = stored.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x20;
        assert!(
            dec.decode_checking_plain(&e, &bad, &mut out).is_err(),
            "damage not caught (compressed: {compressed})"
        );
        assert!(dec.decode(&e, &bad, &mut out).is_err());
    }
    // A raw block is returned in place, and only when its length is its plain length.
    let e = entry(&raw, &raw, false);
    let got = dec.decode(&e, &raw, &mut out).unwrap();
    assert!(std::ptr::eq(got, &raw[..]));
    let short = MapEntry {
        plain_len: e.plain_len - 1,
        ..e
    };
    assert!(dec.decode(&short, &raw, &mut out).is_err());
    assert!(dec.decode_checking_plain(&short, &raw, &mut out).is_err());
}

#[test]
fn disk_sizes_over_1_pib_are_refused_when_a_backup_begins() {
    assert_eq!(bulwark_format::MAX_DISK_SIZE, 1 << 50);
    bulwark_format::check_disk_size(0).unwrap();
    bulwark_format::check_disk_size(1 << 50).unwrap();
    for size in [(1u64 << 50) + 1, 1 << 60, u64::MAX] {
        let e = bulwark_format::check_disk_size(size)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 PiB"), "{e}");
    }
}

/// A point whose first block compresses well, so it is followed by padding; returns its bytes
/// and map.
fn padded_point(p: &Path) -> (Vec<u8>, Vec<MapEntry>) {
    let noise: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write_point(p, 3 * 8192, 8192, &[(0, vec![5u8; 8192]), (1, noise)]);
    let r = PointReader::open(File::open(p).unwrap()).unwrap();
    assert!(r.map[0].is_compressed() && r.map[0].stored_len < 4096);
    r.check_padding().unwrap();
    assert!(r.gaps().is_empty());
    (std::fs::read(p).unwrap(), r.map.clone())
}

#[test]
fn a_flipped_header_padding_byte_is_refused_naming_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.bwrp");
    let (orig, _) = padded_point(&p);
    for pos in [80usize, 1000, 4095] {
        let mut bad = orig.clone();
        bad[pos] ^= 0x20;
        let e = open_bytes(&p, &bad).err().unwrap();
        assert!(
            matches!(e, FormatError::Padding { offset, value: 0x20, .. } if offset == pos as u64),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(&format!("byte {pos} ")) && text.contains("header's padding"),
            "{text}"
        );
    }
}

#[test]
fn a_flipped_block_padding_byte_is_found_by_the_padding_check_and_the_padded_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.bwrp");
    let (orig, map) = padded_point(&p);
    let e0 = map[0];
    let end = (e0.offset + u64::from(e0.stored_len)) as usize;
    for pos in [end, end + 7, align_up(end as u64) as usize - 1] {
        let mut bad = orig.clone();
        bad[pos] = 0x01;
        // The root digest does not cover padding: the file still opens, and its blocks decode.
        let r = open_bytes(&p, &bad).unwrap();
        let mut buf = vec![];
        let stored = r.read_stored(&r.map[0], &mut buf).unwrap().to_vec();
        decode_block(&r.map[0], &stored, &mut vec![]).unwrap();
        for e in [
            r.check_padding().unwrap_err(),
            r.read_stored_padded(&r.map[0], &mut buf).unwrap_err(),
        ] {
            assert!(
                matches!(e, FormatError::Padding { offset, .. } if offset == pos as u64),
                "{e}"
            );
            assert!(e.to_string().contains("the padding after block 0"), "{e}");
        }
        // The other block's padding is untouched; its read is unaffected.
        assert_eq!(
            r.read_stored_padded(&r.map[1], &mut buf).unwrap().len(),
            r.map[1].stored_len as usize
        );
    }
}

#[test]
fn a_reserved_block_never_filled_reads_as_zeros_and_passes_the_padding_check() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.bwrp");
    // A reservation never filled is a hole: zeros, so its padding is zero too.
    let h = Header {
        block_size: 4096,
        disk_size: 3 * 4096,
        point_id: PointId::new(42, [7; 8]),
    };
    let mut w = PointWriter::new(File::create(&p).unwrap(), h).unwrap();
    let d = vec![3u8; 4096];
    w.reserve_stored(
        BlockNo(0),
        4096,
        Digest::of(&d),
        4096,
        false,
        Digest::of(&d),
    )
    .unwrap();
    w.put_stored(StoredBlock::raw(BlockNo(1), &d)).unwrap();
    w.finish(meta_for(&h, "job-1")).unwrap();
    let r = PointReader::open(File::open(&p).unwrap()).unwrap();
    assert!(r.gaps().is_empty());
    r.check_padding().unwrap();
}
