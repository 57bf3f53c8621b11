//! What the format tests share: the metadata of a test point, reading every block back.
#![allow(dead_code)]

use std::fs::File;
use std::path::Path;

use bulwark_format::*;

/// The metadata of a `kind` point of job `job-1` with `h`'s geometry and id, starting its own
/// chain (zstd level 3, created at 1 790 000 000 s).
pub fn meta_for(h: &Header, kind: PointKind) -> PointMeta {
    PointMeta {
        kind,
        retention: RetentionClass::Regular,
        compression_level: 3,
        created_unix_secs: 1_790_000_000,
        created_nanos: 0,
        block_size: h.block_size,
        disk_size: h.disk_size,
        point: h.point_id,
        parent: PointId::NONE,
        chain: h.point_id,
        job: "job-1".into(),
        client: String::new(),
        stats: Stats::default(),
        files: vec![],
        extensions: vec![],
    }
}

/// Every block of the point at `path`, decoded: (block number, plain data) in map order.
pub fn read_all(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let r = PointReader::open(File::open(path).unwrap()).unwrap();
    let (mut stored, mut plain, mut out) = (vec![], vec![], vec![]);
    for e in &r.map {
        let stored = r.read_stored(e, &mut stored).unwrap();
        decode_block(e, stored, &mut plain).unwrap();
        out.push((e.block.0, plain.clone()));
    }
    out
}
