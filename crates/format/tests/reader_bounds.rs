//! Regression tests for what fuzzing the reader found (`fuzz/`, target `point_reader`).

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use bulwark_format::*;

/// A full of one disk block stored raw (4096 bytes, incompressible), as the writer makes it.
fn one_raw_block() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.bwrp");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    let h = Header {
        block_size: 4096,
        disk_size: 4096,
        point_id: PointId([1; 16]),
    };
    let mut w = PointWriter::new(f, h).unwrap();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 131 % 251) as u8).collect();
    w.put_stored(StoredBlock::raw(BlockNo(0), &data)).unwrap();
    let meta = PointMeta {
        compression_level: 0,
        ..common::meta_for(&h, PointKind::ActiveFull)
    };
    w.finish(meta).unwrap();
    std::fs::read(&p).unwrap()
}

/// Rewrites the trailer's root digest as anyone who writes the file can (docs/format.md).
fn reseal(b: &mut [u8]) {
    let end = b.len() - TRAILER_LEN;
    let mut t = Trailer::decode(&b[end..]).unwrap();
    let (map, meta) = (
        t.map_offset as usize..t.meta_offset as usize,
        t.meta_offset as usize..end,
    );
    let mut h = blake3::Hasher::new_derive_key("bulwark 2026-11 restore point v1 root digest");
    h.update(&b[..48]);
    h.update(&(meta.len() as u64).to_le_bytes());
    h.update(&b[meta]);
    h.update(&b[map]);
    t.root_digest = h.finalize().into();
    b[end..].copy_from_slice(&t.encode());
}

fn open(b: &[u8]) -> Result<PointReader> {
    let f = tempfile::tempfile().unwrap();
    f.write_all_at(b, 0).unwrap();
    PointReader::open(f)
}

#[test]
fn a_block_offset_that_wraps_past_2_pow_64_is_outside_the_data_region() {
    let mut b = one_raw_block();
    assert!(open(&b).is_ok());
    let t = Trailer::decode(&b[b.len() - TRAILER_LEN..]).unwrap();
    // The entry's offset field (bytes 16..24 of the entry): offset + 4096 wraps to 0, which
    // an unchecked addition (release builds) took for "ends before the map".
    let at = t.map_offset as usize + 16;
    b[at..at + 8].copy_from_slice(&(u64::MAX - 4095).to_le_bytes());
    reseal(&mut b);
    let err = open(&b)
        .err()
        .expect("a block at 2^64 - 4096 must not open");
    assert!(
        err.to_string().contains("data outside the data region"),
        "{err}"
    );
}
