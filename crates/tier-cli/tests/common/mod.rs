//! What the `bulwark-tier` tests share: a small restore point to copy.

use bulwark_format::{BlockNo, PointKind, StoredBlock};
use bulwark_repository::{NewPoint, Repository};

/// One small restore point of `job` (4 blocks of 64 KiB, varied by `seed`); returns its id.
pub fn one_point(repo: &Repository, job: &str, seed: u8) -> String {
    let bs = 64 * 1024u32;
    let mut b = repo
        .begin_point(NewPoint {
            job: job.into(),
            parent: None,
            disk_size: 4 * u64::from(bs),
            block_size: bs,
            compression_level: 0,
            client: String::new(),
            full_kind: PointKind::ActiveFull,
        })
        .unwrap();
    for i in 0..4u64 {
        let data: Vec<u8> = (0..bs as usize)
            .map(|k| (k as u64 * 13 + i) as u8 ^ seed)
            .collect();
        b.put_stored(StoredBlock::raw(BlockNo(i), &data)).unwrap();
    }
    b.finish().unwrap().meta.point.to_hex()
}
