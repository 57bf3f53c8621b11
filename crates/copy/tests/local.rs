//! The copy engine between two repository folders (no root needed): verbatim copies keep
//! their bytes and root digests, a second copy sends only the new stored bytes, an interrupted
//! copy resumes without re-sending what arrived, a chain whose older files the target lost
//! continues there as a new chain that restores the same content, GFS retention on the
//! target is its own, and `--verify` finds a changed point.

use std::path::Path;

use bulwark_copy::{copy, verify_copies, CopyOptions, LocalSource, LocalTarget, Source, Target};
use bulwark_format::{BlockNo, Digest, PointId, PointKind, StoredBlock};
use bulwark_repository::{
    retention::Policy, CopyMode, NewPoint, ParentMap, PointBuilder, Repository,
};
use bulwark_testkit::system::{one_block_full, DAY};
use bulwark_testkit::Rng;

const BS: usize = 64 * 1024;
const BLOCKS: usize = 24;

/// A disk of random blocks (some zero), deterministic per seed.
fn disk(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..BLOCKS)
        .map(|i| {
            if i % 7 == 3 {
                vec![0; BS]
            } else {
                rng.bytes(BS)
            }
        })
        .collect()
}

/// A new point of `job` on the test disk's geometry: an incremental of `parent`, or an
/// active full without one.
fn begin(repo: &Repository, job: &str, parent: Option<ParentMap>) -> PointBuilder {
    repo.begin_point(NewPoint {
        job: job.into(),
        parent,
        disk_size: (BLOCKS * BS) as u64,
        block_size: BS as u32,
        compression_level: 0,
        client: String::new(),
        full_kind: PointKind::ActiveFull,
    })
    .unwrap()
}

/// Backs `blocks` up as a new point of `job` (an incremental when the job has points):
/// changed blocks stored raw, the rest referenced. Returns the stored bytes of new blocks.
fn backup(repo: &Repository, job: &str, blocks: &[Vec<u8>]) -> u64 {
    let parent = repo.parent_map(job).unwrap();
    let mut b = begin(repo, job, parent.clone());
    let mut new = 0;
    for (i, data) in blocks.iter().enumerate() {
        if data.iter().all(|&x| x == 0) {
            continue;
        }
        let h = Digest::of(data);
        if parent.as_ref().and_then(|p| p.hash_of(BlockNo(i as u64))) == Some(h) {
            b.put_unchanged(BlockNo(i as u64)).unwrap();
        } else {
            b.put_stored(StoredBlock::raw(BlockNo(i as u64), data))
                .unwrap();
            new += data.len() as u64;
        }
    }
    b.finish().unwrap();
    new
}

/// The plain content of a point, block by block (zeros for absent blocks).
fn content(repo: &Repository, job: &str, point: Option<PointId>) -> Vec<Vec<u8>> {
    let c = repo.open_point(job, point).unwrap();
    let mut out = vec![vec![0u8; BS]; BLOCKS];
    let (mut s, mut p) = (Vec::new(), Vec::new());
    for e in c.entries() {
        c.read_block(e, &mut s, &mut p).unwrap();
        out[e.block.0 as usize] = p.clone();
    }
    out
}

fn repos() -> (tempfile::TempDir, Repository, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let src = Repository::init(&dir.path().join("src"), 7).unwrap();
    let dst = Repository::init(&dir.path().join("dst"), 30).unwrap();
    (dir, src, dst)
}

/// The two ends of a copy between the repository folders `src` and `dst`.
fn ends(src: &Path, dst: &Path) -> (LocalSource, LocalTarget) {
    let s = LocalSource {
        repo: Repository::open(src).unwrap(),
    };
    (s, LocalTarget::new(Repository::open(dst).unwrap()))
}

fn run(src: &Path, dst: &Path) -> bulwark_copy::CopyReport {
    let (mut s, mut t) = ends(src, dst);
    let r = copy(&mut s, &mut t, &CopyOptions::default(), &mut |_, _, _| {}).unwrap();
    assert!(r.ok(), "{r:?}");
    r
}

/// Replaces blocks `which` with random data (seeds must be odd and distinct: the generator
/// maps `2k` and `2k+1` to the same stream).
fn change(d: &mut [Vec<u8>], which: &[usize], seed: u64) {
    let mut rng = Rng::new(seed);
    for &i in which {
        d[i] = rng.bytes(BS);
    }
}

/// Backs `d` up as `vm`, then for each of `changes` (blocks, seed: see [`change`]) changes it
/// and backs it up again: a chain of points. Returns the stored bytes of new blocks.
fn chain(repo: &Repository, d: &mut [Vec<u8>], changes: &[(&[usize], u64)]) -> u64 {
    let mut new = backup(repo, "vm", d);
    for &(which, seed) in changes {
        change(d, which, seed);
        new += backup(repo, "vm", d);
    }
    new
}

#[test]
fn copies_are_byte_identical_and_the_second_copy_sends_only_new_blocks() {
    let (_d, src, dst) = repos();
    let mut d = disk(1);
    let new = chain(&src, &mut d, &[(&[2, 5], 3)]);
    let r = run(src.root(), dst.root());
    assert_eq!(r.jobs[0].points_copied, 2);
    assert_eq!(
        r.bytes_sent, new,
        "the first copy sends every stored byte once"
    );
    // Same files, byte for byte, and so the same root digests.
    let (a, b) = (src.scan_job("vm").unwrap(), dst.scan_job("vm").unwrap());
    assert_eq!(a.points.len(), b.points.len());
    for (p, q) in a.points.iter().zip(&b.points) {
        assert_eq!(p.meta.point, q.meta.point);
        assert_eq!(p.root, q.root);
        assert_eq!(
            std::fs::read(&p.path).unwrap(),
            std::fs::read(&q.path).unwrap()
        );
    }
    assert_eq!(content(&dst, "vm", None), d);

    // A third backup changing three blocks: the next copy sends exactly those.
    change(&mut d, &[1, 9, 20], 5);
    let inc = backup(&src, "vm", &d);
    let r = run(src.root(), dst.root());
    assert_eq!(r.jobs[0].points_copied, 1);
    assert_eq!(r.jobs[0].points_skipped, 2);
    assert_eq!(r.bytes_sent, inc);
    assert_eq!(inc, 3 * BS as u64);
    assert_eq!(content(&dst, "vm", None), d);
    // Nothing new: nothing sent.
    let r = run(src.root(), dst.root());
    assert_eq!((r.jobs[0].points_copied, r.bytes_sent), (0, 0));
}

#[test]
fn blocks_the_target_already_holds_are_not_sent() {
    let (_d, src, dst) = repos();
    let d = disk(4);
    backup(&src, "vm", &d);
    run(src.root(), dst.root());
    // An active full of the same disk: every stored block is already on the target.
    let mut b = begin(&src, "vm", None);
    for (i, data) in d.iter().enumerate() {
        if data.iter().any(|&x| x != 0) {
            b.put_stored(StoredBlock::raw(BlockNo(i as u64), data))
                .unwrap();
        }
    }
    let full = b.finish().unwrap();
    let r = run(src.root(), dst.root());
    assert_eq!(r.jobs[0].points_copied, 1);
    assert_eq!(r.bytes_sent, 0, "{r:?}");
    assert_eq!(r.jobs[0].bytes_local, full.meta.stats.bytes_stored);
    let held = dst.scan_job("vm").unwrap();
    let copied = held.points.last().unwrap();
    assert_eq!(copied.root, full.root);
    assert_eq!(
        std::fs::read(&copied.path).unwrap(),
        std::fs::read(&full.path).unwrap()
    );
}

#[test]
fn an_interrupted_copy_resumes_without_resending_what_arrived() {
    let (_d, src, dst) = repos();
    let d = disk(5);
    let total = backup(&src, "vm", &d);
    let (mut s, mut t) = ends(src.root(), dst.root());
    let p = s.points("vm").unwrap()[0].point;
    let head = s.head("vm", p).unwrap();
    let plan = t.begin("vm", &head).unwrap();
    assert_eq!(plan.mode, CopyMode::Verbatim);
    let half = plan.needed.len() / 2;
    let mut delivered = 0;
    s.read("vm", p, &plan.needed[..half], &mut |e, b| {
        delivered += b.len() as u64;
        t.put(e, b)
    })
    .unwrap();
    drop(t); // the copy stops here: a killed process leaves the partial file
    let part = dst
        .root()
        .join("incoming")
        .join(format!(".copy-vm-{}.bwrp", p.to_hex()));
    assert!(part.exists(), "the partial copy is kept for resuming");
    assert!(
        dst.scan_job("vm").unwrap().points.is_empty(),
        "nothing visible"
    );
    let r = run(src.root(), dst.root());
    assert_eq!(r.jobs[0].points[0].bytes_resumed, delivered);
    assert_eq!(
        r.bytes_sent,
        total - delivered,
        "only what had not arrived is sent"
    );
    assert!(!part.exists());
    assert_eq!(content(&dst, "vm", None), d);
    assert_eq!(
        dst.scan_job("vm").unwrap().points[0].root,
        src.scan_job("vm").unwrap().points[0].root
    );
}

#[test]
fn a_chain_whose_older_files_the_target_lost_continues_as_a_new_chain_there() {
    let (_d, src, dst) = repos();
    let mut d = disk(6);
    chain(&src, &mut d, &[(&[4], 21), (&[8], 23)]);
    run(src.root(), dst.root());
    // The target loses the chain's two older files (its retention would take the whole
    // chain; an administrator removing expired files does this).
    let held = dst.scan_job("vm").unwrap();
    for p in &held.points[..2] {
        std::fs::remove_file(&p.path).unwrap();
    }
    change(&mut d, &[10, 11], 25);
    backup(&src, "vm", &d);
    let r = run(src.root(), dst.root());
    assert_eq!(r.jobs[0].points[0].mode, "new-chain", "{r:?}");
    // Blocks of the surviving third file are taken locally, the rest are sent.
    assert!(r.jobs[0].bytes_local >= BS as u64, "{r:?}");
    let newest = dst.scan_job("vm").unwrap().points.pop().unwrap();
    assert_eq!(newest.meta.kind, PointKind::SyntheticFull);
    assert_eq!(newest.meta.chain, newest.meta.point, "a new chain");
    let src_newest = src.scan_job("vm").unwrap().points.pop().unwrap();
    assert_eq!(
        bulwark_repository::decode_origin(&newest.meta),
        Some((
            src_newest.meta.point,
            src_newest.meta.chain,
            src_newest.root
        ))
    );
    assert_eq!(
        content(&dst, "vm", None),
        d,
        "restores the source point's content"
    );
    // The next point continues the new chain as an incremental of it.
    change(&mut d, &[0], 27);
    let inc = backup(&src, "vm", &d);
    let r = run(src.root(), dst.root());
    assert_eq!(r.jobs[0].points[0].mode, "rechained-incremental");
    assert_eq!(r.bytes_sent, inc);
    let last = dst.scan_job("vm").unwrap().points.pop().unwrap();
    assert_eq!(last.meta.chain, newest.meta.point);
    assert_eq!(content(&dst, "vm", None), d);
    // --verify: every source point the target still represents is the same.
    let (mut s, mut t) = ends(src.root(), dst.root());
    let v = verify_copies(&mut s, &mut t, &[]).unwrap();
    assert_eq!(v.jobs[0].same, 3, "{v:?}");
    assert_eq!(v.jobs[0].missing_on_target, 2, "{v:?}");
    // The target's own verify names the surviving old file whose chain lost its files.
    let p3 = held.points[2].meta.point.to_hex();
    assert!(v.damaged(), "{v:?}");
    assert_eq!(v.jobs[0].target_damage.len(), 1, "{v:?}");
    assert!(v.jobs[0].target_damage[0].starts_with(&p3), "{v:?}");
    assert!(v.jobs[0].source_damage.is_empty());
}

#[test]
fn verify_reports_a_point_that_differs_on_the_target() {
    let (_d, src, dst) = repos();
    let mut d = disk(11);
    chain(&src, &mut d, &[(&[3], 31)]);
    run(src.root(), dst.root());
    let (mut s, mut t) = ends(src.root(), dst.root());
    let v = verify_copies(&mut s, &mut t, &[]).unwrap();
    assert!(!v.damaged(), "{v:?}");
    assert_eq!(v.jobs[0].same, 2);
    // Flip one byte of a stored block in the target's copy (an unguarded target: this test
    // plays the storage administrator).
    let victim = dst.scan_job("vm").unwrap().points[1].path.clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[4096 + 100] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let v = verify_copies(&mut s, &mut t, &[]).unwrap();
    assert!(v.damaged(), "{v:?}");
    assert!(!v.jobs[0].target_damage.is_empty(), "{v:?}");
    assert!(v.jobs[0].source_damage.is_empty());
}

/// Writes a sealed full of one random block into an unguarded repository's store, created at
/// `created` (unix seconds): how a source that has run for weeks looks.
fn old_full(repo: &Repository, job: &str, created: i64, seed: u64) {
    one_block_full(job, created, BS as u32, seed, |p| {
        repo.point_path(job, p, p)
    });
}

/// [`old_full`]s of `vm`, one a day for `days` days up to `now` (the newest created now), the
/// n-th from seed `seed + n`.
fn daily_fulls(repo: &Repository, days: i64, now: i64, seed: u64) {
    for i in 0..days {
        old_full(repo, "vm", now - (days - 1 - i) * DAY, seed + i as u64);
    }
}

/// The target's GFS policy: 4 weekly and 3 monthly fulls and the newest point.
fn gfs() -> Policy {
    Policy {
        keep_days: 0,
        keep_points: 1,
        weekly: 4,
        monthly: 3,
        yearly: 0,
    }
}

/// The source keeps dailies (every file records `regular`); the target's policy keeps GFS
/// fulls. The copy reports, for each point, the class the target's policy gives it — the one
/// its GFS lifetime there follows and its retention plan keeps it for — while the verbatim
/// file keeps the class the source recorded in it.
#[test]
fn a_copy_reports_the_class_the_targets_policy_gives_each_point_not_the_sources() {
    use bulwark_repository::retention::{gfs_class_for_new_full, gfs_lifetime_secs, KeepReason};
    let (_d, src, dst) = repos();
    let now = bulwark_time::UnixTime::now().secs();
    daily_fulls(&src, 40, now, 300);
    let policy = gfs();
    dst.set_policy("vm", &policy).unwrap();
    let r = run(src.root(), dst.root());
    let points = &r.jobs[0].points;
    assert_eq!(points.len(), 40);
    let plan = dst.apply_retention("vm", now, true).unwrap();
    let mut before = Vec::new();
    let mut gfs = 0;
    for (p, (mark, facts)) in points.iter().zip(&plan.marks) {
        assert_eq!(p.target_point, mark.point.to_hex());
        let want = gfs_class_for_new_full(&before, facts.created, &policy);
        before.push(facts.created);
        assert_eq!(p.retention, Some(want.as_str()), "{p:?}");
        // Within its GFS lifetime the target's retention keeps it for that class.
        if facts.created + gfs_lifetime_secs(want, &policy) <= now {
            continue;
        }
        let has = |f: fn(&KeepReason) -> bool| mark.reasons.iter().any(f);
        match want.as_str() {
            "monthly" => assert!(has(|r| matches!(r, KeepReason::GfsMonthly(_)))),
            "weekly" => assert!(has(|r| matches!(r, KeepReason::GfsWeekly(_)))),
            _ => continue,
        }
        gfs += 1;
    }
    assert!(
        gfs >= 5,
        "40 days hold 5 or more weekly or monthly fulls, got {gfs}"
    );
    // The file itself is the source's, byte for byte, class included.
    let held = dst.scan_job("vm").unwrap().points;
    assert!(held
        .iter()
        .all(|p| p.meta.retention == bulwark_format::RetentionClass::Regular));
}

#[test]
fn the_target_keeps_its_own_gfs_retention_where_the_source_keeps_dailies() {
    let (_d, src, dst) = repos();
    let now = bulwark_time::UnixTime::now().secs();
    // A full every day for 100 days.
    daily_fulls(&src, 100, now, 100);
    run(src.root(), dst.root());
    assert_eq!(dst.scan_job("vm").unwrap().points.len(), 100);
    src.set_policy(
        "vm",
        &Policy {
            keep_days: 7,
            keep_points: 1,
            ..Default::default()
        },
    )
    .unwrap();
    dst.set_policy("vm", &gfs()).unwrap();
    let rs = src.apply_retention("vm", now, false).unwrap();
    let rd = dst.apply_retention("vm", now, false).unwrap();
    let kept_src = src.scan_job("vm").unwrap().points;
    let kept_dst = dst.scan_job("vm").unwrap().points;
    // The source: its last 7 days (8 points at most, today included).
    assert!(
        kept_src.len() <= 8 && kept_src.len() >= 7,
        "{}",
        kept_src.len()
    );
    assert!(kept_src
        .iter()
        .all(|p| p.meta.created_unix_secs >= now - 8 * DAY));
    // The target: 4 weekly and 3 monthly fulls (some may coincide) plus the newest, and
    // points older than a week the source no longer has.
    assert!(
        kept_dst.len() >= 4 && kept_dst.len() <= 8,
        "{}",
        kept_dst.len()
    );
    assert!(kept_dst
        .iter()
        .any(|p| p.meta.created_unix_secs < now - 45 * DAY));
    assert_eq!(rs.removed.len() + kept_src.len(), 100);
    assert_eq!(rd.removed.len() + kept_dst.len(), 100);
    // A later copy does not bring back what the target's retention removed.
    let r = run(src.root(), dst.root());
    assert_eq!(r.jobs[0].points_copied, 0, "{r:?}");
    assert_eq!(dst.scan_job("vm").unwrap().points.len(), kept_dst.len());
}

#[test]
fn a_head_whose_blocks_do_not_pack_the_data_region_is_refused_and_leaves_nothing() {
    let (_d, src, dst) = repos();
    backup(&src, "vm", &disk(41));
    let (mut s, mut t) = ends(src.root(), dst.root());
    let p = s.points("vm").unwrap()[0].point;
    let mut head = s.head("vm", p).unwrap();
    // A block claimed a petabyte into the file: a huge sparse file if it were written.
    let last = head.map.len() - 1;
    head.map[last].offset = 1 << 50;
    let e = t
        .begin("vm", &head)
        .expect_err("a gap in the data region was accepted");
    assert!(e.to_string().contains("copied restore point"), "{e}");
    let incoming: Vec<_> = std::fs::read_dir(dst.root().join("incoming"))
        .unwrap()
        .flatten()
        .collect();
    assert!(incoming.is_empty(), "{incoming:?}");
}
