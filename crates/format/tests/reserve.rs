//! `PointWriter::reserve_stored`: blocks whose bytes the caller fills in (a synthetic full
//! clones them from earlier files).

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;

use bulwark_format::*;
use common::read_all;

const BS: usize = 64 * 1024;

fn header(disk_size: u64, id: u8) -> Header {
    Header {
        block_size: BS as u32,
        disk_size,
        point_id: PointId::new(u64::from(id), [id; 8]),
    }
}

fn meta_for(h: &Header) -> PointMeta {
    common::meta_for(h, PointKind::SyntheticFull)
}

/// Stored form of a block: a zstd frame when it is smaller (so lengths are unaligned).
fn stored_of(data: &[u8]) -> (Vec<u8>, bool) {
    let c = zstd::bulk::compress(data, 3).unwrap();
    if c.len() < data.len() {
        (c, true)
    } else {
        (data.to_vec(), false)
    }
}

/// Writes block `no` of `data` in its stored form.
fn put(w: &mut PointWriter, data: &[Vec<u8>], no: usize) {
    let (s, c) = stored_of(&data[no]);
    w.put_stored(StoredBlock::encoded(
        BlockNo(no as u64),
        &data[no],
        &s,
        if c { Codec::Zstd } else { Codec::Raw },
    ))
    .unwrap();
}

fn blocks() -> Vec<Vec<u8>> {
    let mut x = 0x1234_5678u32;
    let mut random = || {
        (0..BS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect::<Vec<u8>>()
    };
    vec![
        random(),
        vec![3u8; BS],
        (0..BS).map(|i| (i % 97) as u8).collect(),
        random(),
    ]
}

#[test]
fn reserved_blocks_filled_from_another_file_read_back_between_written_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = blocks();
    let disk = (data.len() * BS) as u64;
    // The source: blocks 1 and 2, stored normally.
    let src_path = dir.path().join("src.bwrp");
    let hs = header(disk, 1);
    let mut w = PointWriter::new(File::create(&src_path).unwrap(), hs).unwrap();
    for no in [1usize, 2] {
        put(&mut w, &data, no);
    }
    w.finish(meta_for(&hs)).unwrap();
    let src = PointReader::open(File::open(&src_path).unwrap()).unwrap();

    // The new file: block 0 written, 1 and 2 reserved and filled from the source, 3 written.
    let dst_path = dir.path().join("dst.bwrp");
    let hd = header(disk, 2);
    let mut w = PointWriter::new(File::create(&dst_path).unwrap(), hd).unwrap();
    put(&mut w, &data, 0);
    let mut fills = vec![];
    for se in &src.map {
        let e = w
            .reserve_stored(
                se.block,
                se.plain_len,
                se.plain_hash,
                se.stored_len,
                se.is_compressed(),
                se.stored_hash,
            )
            .unwrap();
        assert_eq!(e.offset % ALIGN, 0);
        fills.push((*se, e));
    }
    assert_eq!(
        fills[1].1.offset,
        fills[0].1.offset + align_up(u64::from(fills[0].0.stored_len)),
        "consecutive reservations are contiguous"
    );
    put(&mut w, &data, 3);
    for (se, e) in &fills {
        let mut buf = vec![0u8; align_up(u64::from(se.stored_len)) as usize];
        src.file().read_exact_at(&mut buf, se.offset).unwrap();
        w.file().write_all_at(&buf, e.offset).unwrap();
    }
    let (_, _, meta) = w.finish(meta_for(&hd)).unwrap();
    assert_eq!(meta.stats.blocks_new, 4);
    let expected: Vec<(u64, Vec<u8>)> = data
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u64, d.clone()))
        .collect();
    assert_eq!(read_all(&dst_path), expected);
}

#[test]
fn a_reservation_left_unfilled_is_detected_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = blocks();
    let path = dir.path().join("a.bwrp");
    let h = header((2 * BS) as u64, 3);
    let mut w = PointWriter::new(File::create(&path).unwrap(), h).unwrap();
    let (s, c) = stored_of(&data[0]);
    w.reserve_stored(
        BlockNo(0),
        BS as u32,
        Digest::of(&data[0]),
        s.len() as u32,
        c,
        Digest::of(&s),
    )
    .unwrap();
    w.finish(meta_for(&h)).unwrap();
    let r = PointReader::open(File::open(&path).unwrap()).unwrap();
    let (mut stored, mut plain) = (vec![], vec![]);
    let stored = r.read_stored(&r.map[0], &mut stored).unwrap();
    let err = decode_block(&r.map[0], stored, &mut plain).unwrap_err();
    assert!(matches!(err, FormatError::StoredHash { .. }), "{err}");
}

#[test]
fn reserve_refuses_what_put_stored_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let h = header((2 * BS) as u64, 4);
    let mut w = PointWriter::new(File::create(dir.path().join("b.bwrp")).unwrap(), h).unwrap();
    let d = Digest::of(b"x");
    // Empty, longer than the plain block, uncompressed with a differing length.
    assert!(w
        .reserve_stored(BlockNo(0), BS as u32, d, 0, true, d)
        .is_err());
    assert!(w
        .reserve_stored(BlockNo(0), BS as u32, d, BS as u32 + 1, true, d)
        .is_err());
    assert!(w
        .reserve_stored(BlockNo(0), BS as u32, d, 10, false, d)
        .is_err());
    w.reserve_stored(BlockNo(1), BS as u32, d, 10, true, d)
        .unwrap();
    // Out of order.
    assert!(w
        .reserve_stored(BlockNo(0), BS as u32, d, 10, true, d)
        .is_err());
}
