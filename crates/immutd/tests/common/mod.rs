//! Helpers for the root-only integration tests: the shared test kit (a real unprivileged
//! user, real ext4 and XFS filesystems on loop devices, the guarded rig, the real service
//! binary), plus real restore points written the way the repository writes them. Every
//! resource is released by a Drop guard, also when a test fails.
#![allow(dead_code, unused_imports)]

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bulwark_format::{
    BlockNo, Header, PointId, PointKind, PointMeta, PointWriter, RetentionClass, Stats, StoredBlock,
};
use bulwark_immut_msg::layout::incoming_path;

pub use bulwark_testkit::cmd::PATH_ENV;
pub use bulwark_testkit::guarded::*;
pub use bulwark_testkit::LoopFs;

pub const IMMUTD: &str = env!("CARGO_BIN_EXE_bulwark-immutd");
/// `bulwark-immutctl` (its own package) is built next to bulwark-immutd by
/// `cargo test --workspace`.
pub static IMMUTCTL: std::sync::LazyLock<PathBuf> = std::sync::LazyLock::new(immutctl_bin);

/// A guarded rig on ext4 for `test`, or `None` after a printed SKIP when the test does not run
/// as root or one of `tools` is missing: how most of these tests start.
pub fn ext4_rig(test: &str, tools: &[&str]) -> Option<Rig> {
    can_run(test, tools).then(|| Rig::new(FsKind::Ext4))
}

/// Writes a real restore point at `path` (owned by `owner`): a full when `parent` is NONE.
pub fn write_point(
    path: &Path,
    owner: &TestUser,
    job: &str,
    point: PointId,
    chain: PointId,
    parent: PointId,
    fill: u8,
) {
    let block_size = 4096u32;
    let disk_size = 3 * 4096u64;
    let f = File::create(path).unwrap();
    let mut w = PointWriter::new(
        f,
        Header {
            block_size,
            disk_size,
            point_id: point,
        },
    )
    .unwrap();
    for b in 0..3u64 {
        let data = vec![fill.wrapping_add(b as u8); 4096];
        w.put_stored(StoredBlock::raw(BlockNo(b), &data)).unwrap();
    }
    let meta = PointMeta {
        kind: if parent.is_none() {
            PointKind::ActiveFull
        } else {
            PointKind::Incremental
        },
        retention: RetentionClass::Regular,
        compression_level: 0,
        created_unix_secs: 1_800_000_000,
        created_nanos: 0,
        block_size,
        disk_size,
        point,
        parent,
        chain,
        job: job.into(),
        client: String::new(),
        stats: Stats::default(),
        files: vec![],
        extensions: vec![],
    };
    w.finish(meta).unwrap();
    owner.chown(path);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Writes a finished restore point into `incoming/` the way the repository does (temp name,
/// then rename), owned by the service user.
pub fn put_incoming(
    rig: &Rig,
    job: &str,
    point: PointId,
    chain: PointId,
    parent: PointId,
) -> PathBuf {
    let tmp = rig.repo.join("incoming").join(format!(".tmp-{point}"));
    write_point(&tmp, &rig.user, job, point, chain, parent, point.0[15]);
    let dst = incoming_path(&rig.repo, point);
    std::fs::rename(&tmp, &dst).unwrap();
    dst
}

/// Writes and seals a full (or an incremental of `chain` when `parent` is set) as the user.
pub fn seal_new(
    rig: &Rig,
    job: &str,
    chain: Option<PointId>,
    parent: PointId,
) -> (PointId, CtlResult) {
    let point = new_point();
    let chain = chain.unwrap_or(point);
    let p = put_incoming(rig, job, point, chain, parent);
    let r = rig.user.ctl(&rig.socket(), &["seal", p.to_str().unwrap()]);
    (point, r)
}

/// BLAKE3 of a file's bytes, plus its inode, mode, owner and mtime.
pub fn fingerprint(p: &Path) -> (String, u64, u32, u32, i64, i64) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let data = std::fs::read(p).unwrap();
    (
        blake3::hash(&data).to_hex().to_string(),
        m.ino(),
        m.mode(),
        m.uid(),
        m.mtime(),
        m.mtime_nsec(),
    )
}
