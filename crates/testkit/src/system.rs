//! Rigs shared by the system tests that start several binaries: the store's sealed files,
//! root's hand on their bytes, a `bulwark-immutd` whose wall clock the test moves, the first
//! line of `bulwark-repo serve`, enrollment tokens, retention plans, folders for a user.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Child;

use bulwark_format::{
    BlockNo, Header, PointId, PointKind, PointMeta, PointReader, PointWriter, RetentionClass,
    Stats, StoredBlock,
};

use crate::cmd::sh;
use crate::guarded::{immutd_bin, wait_for, FsKind, Rig, System};
use crate::immutd::Immutd;
use crate::rng::Rng;
use crate::skip::{libfaketime, require_faketime};
use crate::user::TestUser;

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// Every sealed file of `job` (`store/<job>/<chain>/<point>.bwrp`), oldest first (file names
/// are time-ordered point ids); none when the job has no folder.
pub fn sealed_files(repo: &Path, job: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(chains) = std::fs::read_dir(repo.join("store").join(job)) else {
        return out;
    };
    for c in chains {
        for f in std::fs::read_dir(c.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "bwrp") {
                out.push(p);
            }
        }
    }
    out.sort_by_key(|p| p.file_name().unwrap().to_owned());
    out
}

/// The point id a sealed file is named after.
pub fn point_of(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

/// The byte at `offset` of a file.
pub fn peek(path: &Path, offset: u64) -> u8 {
    let mut b = [0u8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    b[0]
}

/// Overwrites the byte at `offset` with `byte`, synced (as root: the service user cannot);
/// returns the byte it replaced.
pub fn poke(path: &Path, offset: u64, byte: u8) -> u8 {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut old = [0u8];
    f.read_exact_at(&mut old, offset).unwrap();
    f.write_all_at(&[byte], offset).unwrap();
    f.sync_all().unwrap();
    old[0]
}

/// [`poke`] into a sealed file, clearing its immutable attribute around the write.
pub fn poke_sealed(path: &Path, offset: u64, byte: u8) -> u8 {
    sh(&format!("chattr -i '{}'", path.display()));
    let old = poke(path, offset, byte);
    sh(&format!("chattr +i '{}'", path.display()));
    old
}

/// Flips one bit of the byte at `offset` (as root).
pub fn flip_byte(path: &Path, offset: u64) {
    poke(path, offset, peek(path, offset) ^ 0x40);
}

/// An offset in the middle of the first stored block of the restore point at `path`.
pub fn first_block_middle(path: &Path) -> u64 {
    let r = PointReader::open(std::fs::File::open(path).unwrap()).unwrap();
    let e = *r.map.iter().find(|e| e.file_ref == 0).unwrap();
    e.offset + u64::from(e.stored_len) / 2
}

/// [`flip_byte`] in a sealed file, clearing its immutable attribute around the write.
pub fn flip_sealed_byte(path: &Path, offset: u64) {
    poke_sealed(path, offset, peek(path, offset) ^ 0x40);
}

/// Flips one byte inside the first stored block of the sealed restore point at `path`, as
/// root (clearing and restoring the immutable attribute around it).
pub fn flip_a_stored_byte(path: &Path) {
    flip_sealed_byte(path, first_block_middle(path));
}

/// A libfaketime timestamp file that moves the wall clock of a rig's `bulwark-immutd`, its
/// monotonic and boot-time clocks left real: what a wall-clock attack looks like to it.
pub struct WallClock {
    pub file: PathBuf,
}

impl WallClock {
    /// The clock file beside `rig`'s service folder, at the real time.
    pub fn new(rig: &Rig) -> WallClock {
        let file = rig.setup.dir.parent().unwrap().join("faketime");
        std::fs::write(&file, "+0\n").unwrap();
        WallClock { file }
    }

    /// Starts `rig`'s service on this clock (libfaketime must be installed).
    pub fn start(&self, rig: &Rig) -> Immutd {
        let mut s = rig.setup.clone();
        s.env = vec![
            ("LD_PRELOAD".into(), libfaketime().unwrap().into()),
            ("FAKETIME_TIMESTAMP_FILE".into(), self.file.clone().into()),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
        s.spawn(&immutd_bin()).expect("starting bulwark-immutd")
    }

    /// Sets the wall clock `secs` ahead of the real one.
    pub fn jump(&self, secs: i64) {
        std::fs::write(&self.file, format!("+{secs}\n")).unwrap();
    }
}

/// [`System::guarded`] with its service started on a [`WallClock`] (libfaketime required as
/// well as `tools`); `None` after a printed SKIP.
pub fn guarded_on_wall_clock(
    test: &str,
    tools: &[&str],
    kind: FsKind,
) -> Option<(System, WallClock, Immutd)> {
    require_faketime(test)?;
    let sys = System::guarded(test, tools, kind)?;
    let clock = WallClock::new(&sys.rig);
    let svc = clock.start(&sys.rig);
    Some((sys, clock, svc))
}

/// Whether `svc` reports within `secs` that it froze every unlock.
pub fn unlocks_frozen_within(svc: &Immutd, secs: u64) -> bool {
    wait_for(secs, || {
        svc.client()
            .and_then(|mut c| c.status())
            .is_ok_and(|s| s.unlocks_frozen)
    })
}

/// The address `bulwark-repo serve` announces on its first line (`listening on ADDR`);
/// panics with the line, and the text of `log` when given, if it said anything else.
pub fn listening_addr(serve: &mut Child, log: Option<&Path>) -> String {
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            let log = log.map(|l| std::fs::read_to_string(l).unwrap_or_default());
            panic!("serve said {line:?}: {}", log.unwrap_or_default())
        })
        .to_string()
}

/// `bulwark-repo --json enroll REPO --client CLIENT --expires 10m` as the service user
/// `admin`: what it printed (`token`, `fingerprint`).
pub fn enrollment(
    admin: &TestUser,
    repo_bin: &Path,
    repo: &str,
    client: &str,
) -> serde_json::Value {
    enrollment_with(admin, repo_bin, repo, client, &[])
}

/// [`enrollment`] with further arguments (`--replace`: a second certificate for a name
/// already enrolled).
pub fn enrollment_with(
    admin: &TestUser,
    repo_bin: &Path,
    repo: &str,
    client: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec![
        "--json",
        "enroll",
        repo,
        "--client",
        client,
        "--expires",
        "10m",
    ];
    args.extend_from_slice(extra);
    let o = admin.run(repo_bin, &args);
    assert!(o.status.success(), "{}", crate::text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The arguments of `bulwark backup` or `restore` (`command`) of `job` between `repo` and
/// `path` (a backup's source, a restore's target): `COMMAND --repo REPO --job JOB extra… PATH`.
pub fn job_args<'a>(
    command: &'a str,
    repo: &'a str,
    job: &'a str,
    extra: &[&'a str],
    path: &'a Path,
) -> Vec<&'a str> {
    let mut args = vec![command, "--repo", repo, "--job", job];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    args
}

/// Writes the job file `path` of job `name`, which backs up `source` to `repository` (a
/// folder or a service's address), with the TOML lines `extra` after those three.
pub fn job_file(
    path: &Path,
    name: &str,
    source: impl AsRef<Path>,
    repository: impl AsRef<Path>,
    extra: &str,
) {
    std::fs::write(
        path,
        format!(
            "name = \"{name}\"\nsource = \"{}\"\nrepository = \"{}\"\n{extra}",
            source.as_ref().display(),
            repository.as_ref().display()
        ),
    )
    .unwrap();
}

/// The mark of `point` in a `bulwark-repo --json retention` plan of one job.
pub fn mark<'a>(plan: &'a serde_json::Value, point: &str) -> &'a serde_json::Value {
    plan[0]["marks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["point"] == point)
        .unwrap_or_else(|| panic!("no mark of {point}: {plan}"))
}

/// The reasons a retention mark gives.
pub fn reasons(mark: &serde_json::Value) -> Vec<&str> {
    mark["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect()
}

/// A new folder `path` owned by `owner`.
pub fn user_dir(owner: &TestUser, path: PathBuf) -> PathBuf {
    std::fs::create_dir(&path).unwrap();
    owner.chown(&path);
    path
}

/// The metadata of a full restore point of `job` created at `created` (seconds): no parent,
/// stored uncompressed, no files referenced, no extensions, no client.
pub fn full_meta(
    point: PointId,
    job: &str,
    created: i64,
    block_size: u32,
    disk_size: u64,
) -> PointMeta {
    PointMeta {
        kind: PointKind::ActiveFull,
        retention: RetentionClass::Regular,
        compression_level: 0,
        created_unix_secs: created,
        created_nanos: 0,
        block_size,
        disk_size,
        point,
        parent: PointId::NONE,
        chain: point,
        job: job.into(),
        client: String::new(),
        stats: Stats::default(),
        files: vec![],
        extensions: vec![],
    }
}

/// Writes a full restore point of `job` created at `created` (seconds) holding one random
/// block of `block_size` bytes (from `seed`) to the file `path` names for its point id, its
/// folder created: a file no backup made (an old source's, a lying source's). Returns the
/// file and the block's bytes.
pub fn one_block_full(
    job: &str,
    created: i64,
    block_size: u32,
    seed: u64,
    path: impl FnOnce(PointId) -> PathBuf,
) -> (PathBuf, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let point = PointId::new(
        created as u64 * 1_000_000_000,
        rng.bytes(8).try_into().unwrap(),
    );
    let path = path(point);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let disk_size = u64::from(block_size);
    let header = Header {
        block_size,
        disk_size,
        point_id: point,
    };
    let mut w = PointWriter::new(std::fs::File::create(&path).unwrap(), header).unwrap();
    let data = rng.bytes(block_size as usize);
    w.put_stored(StoredBlock::raw(BlockNo(0), &data)).unwrap();
    w.finish(full_meta(point, job, created, block_size, disk_size))
        .unwrap();
    (path, data)
}
