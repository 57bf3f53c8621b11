//! The `bulwark` binary end to end: exit codes, damage reports, crash safety, full disks.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bulwark_testkit::cmd::{
    assert_cut_off_quietly, assert_output_failure_said_once, output_into_closed_pipe,
    output_onto_full_device,
};
use bulwark_testkit::system::{job_args, job_file};
use bulwark_testkit::{FsKind, LoopFs, Rng};
use common::{init_repo, s};

fn bulwark() -> Command {
    Command::new(common::bin())
}

fn run(args: &[&str]) -> Output {
    bulwark_testkit::cmd::run(Path::new(common::bin()), args)
}

/// `bulwark backup` of `img` as `job` with `opts`, which must succeed.
fn backup_ok(repo: &Path, job: &str, opts: &[&str], img: &Path) {
    assert!(run(&job_args("backup", s(repo), job, opts, img))
        .status
        .success());
}

/// `bulwark restore` of `job` with `opts` to `out`, which must succeed.
fn restore_ok(repo: &Path, job: &str, opts: &[&str], out: &Path) {
    assert!(run(&job_args("restore", s(repo), job, opts, out))
        .status
        .success());
}

/// The exit code of `bulwark verify` of the whole repository.
fn verify_code(repo: &Path) -> Option<i32> {
    run(&["verify", "--repo", s(repo)]).status.code()
}

/// Runs `bulwark args`, which must fail as an operational error (exit 2) saying `advice`.
fn refused_with(args: &[&str], advice: &str) {
    let o = run(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(advice),
        "{args:?}"
    );
}

fn image(path: &Path, rng: &mut Rng, mib: usize) {
    let mut data = rng.bytes(mib << 20);
    // Half compressible, so both stored forms occur.
    for chunk in data.chunks_mut(256 << 10).step_by(2) {
        chunk.fill(b'a');
    }
    std::fs::write(path, data).unwrap();
}

/// Where most tests here start: a scratch folder with a new repository and an image `d.img`
/// of `mib` MiB from a seeded generator, which the test goes on using.
struct Rig {
    dir: tempfile::TempDir,
    rng: Rng,
    repo: PathBuf,
    img: PathBuf,
}

fn rig(mib: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::seeded();
    let repo = init_repo(dir.path());
    let img = dir.path().join("d.img");
    image(&img, &mut rng, mib);
    Rig {
        dir,
        rng,
        repo,
        img,
    }
}

/// Overwrites a byte of the first stored block of `job`'s first restore point (the
/// repository's only job), so that verify and a restore of it find damage.
fn damage_first_block_of_first_point(repo: &Path, job: &str) {
    let p = &points_json(repo)["jobs"][0]["points"][0];
    let path = repo
        .join("store")
        .join(job)
        .join(p["chain"].as_str().unwrap())
        .join(format!("{}.bwrp", p["point"].as_str().unwrap()));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"X", 4096 + 10).unwrap();
}

fn points_json(repo: &Path) -> serde_json::Value {
    let o = run(&["list", "--repo", s(repo), "--json"]);
    assert!(o.status.success());
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `bulwark job plan` of the job file `job`, which must refuse it (exit 2) saying `why`;
/// `case` names what the file holds.
fn plan_refused(job: &Path, why: &str, case: &str) {
    let o = run(&["job", "plan", s(job)]);
    assert_eq!(o.status.code(), Some(2), "{case}");
    assert!(String::from_utf8_lossy(&o.stderr).contains(why), "{case}");
}

/// How many restore points the repository's first job has.
fn point_count(repo: &Path) -> usize {
    points_json(repo)["jobs"][0]["points"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn every_flipped_byte_in_a_stored_block_is_reported_by_verify() {
    let Rig {
        dir: _dir,
        mut rng,
        repo,
        img,
    } = rig(2);
    for _ in 0..2 {
        let o = run(&job_args(
            "backup",
            s(&repo),
            "vm1",
            &["--block-size", "64K"],
            &img,
        ));
        assert!(o.status.success());
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&rng.bytes(200_000), 300_000).unwrap();
    }
    assert_eq!(verify_code(&repo), Some(0));
    // Every stored block of every file: flip one byte, verify must fail naming the point.
    let scan = bulwark_repository::Repository::open(&repo)
        .unwrap()
        .scan_job("vm1")
        .unwrap();
    let mut checked = 0;
    for p in &scan.points {
        let r = bulwark_format::PointReader::open(std::fs::File::open(&p.path).unwrap()).unwrap();
        let own: Vec<_> = r.map.iter().filter(|e| e.file_ref == 0).copied().collect();
        drop(r);
        for e in own {
            let at = e.offset + (rng.next_u64() % u64::from(e.stored_len));
            bulwark_testkit::fs::flip_byte(&p.path, at, 0x10);
            let o = run(&["verify", "--repo", s(&repo)]);
            assert_eq!(
                o.status.code(),
                Some(1),
                "flip at {at} of {} not reported",
                p.path.display()
            );
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.contains(&p.meta.point.to_hex()),
                "damaged point not named"
            );
            assert!(
                out.contains(&format!("block {}", e.block)),
                "damaged block {} not named",
                e.block
            );
            // The same flip again puts the byte back.
            bulwark_testkit::fs::flip_byte(&p.path, at, 0x10);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} blocks exercised");
    assert_eq!(verify_code(&repo), Some(0));
}

#[test]
fn truncated_or_future_version_files_are_named_by_verify() {
    let Rig { dir, repo, img, .. } = rig(1);
    backup_ok(&repo, "a", &[], &img);
    backup_ok(&repo, "b", &[], &img);
    let list = points_json(&repo);
    let path_of = |job: usize| {
        let id = list["jobs"][job]["points"][0]["point"]
            .as_str()
            .unwrap()
            .to_string();
        let chain = list["jobs"][job]["points"][0]["chain"]
            .as_str()
            .unwrap()
            .to_string();
        let name = list["jobs"][job]["job"].as_str().unwrap().to_string();
        (
            id.clone(),
            repo.join("store")
                .join(name)
                .join(chain)
                .join(format!("{id}.bwrp")),
        )
    };
    let (ida, pa) = path_of(0);
    let (idb, pb) = path_of(1);
    let len = std::fs::metadata(&pa).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pa)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pb)
        .unwrap()
        .write_all_at(&[9], 12)
        .unwrap();
    let o = run(&["verify", "--repo", s(&repo)]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&ida) && out.contains(&idb), "{out}");
    assert!(
        out.contains("version 9"),
        "unknown version not named: {out}"
    );
    let o = run(&job_args(
        "restore",
        s(&repo),
        "b",
        &[],
        &dir.path().join("r.img"),
    ));
    assert_eq!(
        o.status.code(),
        Some(1),
        "a restore from a damaged file reports damage"
    );
    assert!(!dir.path().join("r.img").exists());
}

#[test]
fn operational_errors_exit_2_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path());
    let nope = dir.path().join("nope");
    let x = dir.path().join("x");
    for (args, advice) in [
        (
            ["backup", "--repo", s(&nope), "--job", "j", "/dev/null"],
            "bulwark-repo init",
        ),
        (
            [
                "backup",
                "--repo",
                s(&repo),
                "--job",
                "../etc",
                "/etc/hostname",
            ],
            "not allowed",
        ),
        (
            ["restore", "--repo", s(&repo), "--job", "none", s(&x)],
            "run a backup first",
        ),
    ] {
        refused_with(&args, advice);
    }
}

/// Kills backups with SIGKILL at random moments; committed points must stay intact, and the
/// next run must clean up and succeed.
#[test]
fn backups_killed_at_random_moments_never_damage_committed_points() {
    let Rig {
        dir,
        mut rng,
        repo,
        img,
    } = rig(48);
    // One committed point to protect, and its expected content.
    backup_ok(&repo, "vm", &[], &img);
    let first = std::fs::read(&img).unwrap();
    let committed_before = point_count(&repo);
    // Time one backup so kills land anywhere within it; every trial that completes times it
    // again, so the kills follow the backup's speed when the machine gets busier or idler
    // (the other tests of this binary run at the same time).
    let t = Instant::now();
    backup_ok(&repo, "vm", &["--full", "--compression", "9"], &img);
    let mut span = t.elapsed().as_micros().max(1000) as u64;
    let mut completed = 1 + committed_before;
    let trials = 24;
    let mut killed = 0;
    for trial in 0..trials {
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&rng.bytes(1 << 20), (rng.next_u64() % 40) << 20)
            .unwrap();
        let mut child = bulwark()
            .args(job_args(
                "backup",
                s(&repo),
                "vm",
                &["--full", "--compression", "9"],
                &img,
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let delay = Duration::from_micros(rng.next_u64() % (span + span / 5));
        // Wait for the moment of the kill, noticing when the backup ends before it.
        let mut ended = None;
        while started.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                ended = Some(started.elapsed());
                break;
            }
            std::thread::sleep(
                Duration::from_micros(500).min(delay - started.elapsed().min(delay)),
            );
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        if let Some(took) = ended {
            // It ran to its end before the kill: the next kills aim within its new duration.
            span = took.as_micros().max(1000) as u64;
        }
        let delay = delay.as_micros();
        if status.success() {
            completed += 1;
        } else {
            killed += 1;
        }
        eprintln!("trial {trial}: killed after {delay} µs, exit {status}");
        assert!(
            point_count(&repo) >= completed,
            "a committed point vanished"
        );
    }
    assert!(
        killed >= trials / 3,
        "only {killed} of {trials} backups were killed mid-way"
    );
    // The next run cleans the leftovers and succeeds; everything verifies.
    backup_ok(&repo, "vm", &[], &img);
    let incoming: Vec<_> = std::fs::read_dir(repo.join("incoming")).unwrap().collect();
    assert!(incoming.is_empty(), "leftovers in incoming/: {incoming:?}");
    assert_eq!(verify_code(&repo), Some(0));
    let first_id = points_json(&repo)["jobs"][0]["points"][0]["point"]
        .as_str()
        .unwrap()
        .to_string();
    let out = dir.path().join("first.img");
    restore_ok(&repo, "vm", &["--point", &first_id], &out);
    assert!(
        std::fs::read(&out).unwrap() == first,
        "the first committed point changed"
    );
}

/// Root-only: a repository on a small loop-mounted filesystem runs out of space mid-backup.
#[test]
fn full_filesystem_gives_a_clear_error_and_damages_nothing() {
    let test = "full_filesystem_gives_a_clear_error_and_damages_nothing";
    if !bulwark_testkit::can_run(test, "a loop mount", &["mkfs.ext4", "mount"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = LoopFs::with_size(FsKind::Ext4, 48 << 20);
    let mnt = &fs.mnt;
    let repo = mnt.join("repo");
    bulwark_repository::Repository::init(&repo, 7).unwrap();
    let mut rng = Rng::seeded();
    let small = dir.path().join("small.img");
    image(&small, &mut rng, 4);
    backup_ok(&repo, "j", &[], &small);
    let big = dir.path().join("big.img");
    std::fs::write(&big, rng.bytes(96 << 20)).unwrap();
    let o = run(&job_args("backup", s(&repo), "j", &["--full"], &big));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        std::fs::read_dir(repo.join("incoming")).unwrap().count(),
        0,
        "partial file left behind"
    );
    assert_eq!(verify_code(&repo), Some(0));
    let out = dir.path().join("back.img");
    restore_ok(&repo, "j", &[], &out);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&small).unwrap());
    drop(fs);
}

#[test]
fn after_verify_finds_damage_the_next_job_run_is_an_active_full_and_says_why() {
    let Rig { dir, repo, img, .. } = rig(2);
    let job = dir.path().join("job.toml");
    job_file(&job, "web", &img, &repo, "");
    let first = run(&["job", "run", s(&job)]);
    assert!(String::from_utf8_lossy(&first.stdout).contains("full — first backup"));
    let second = run(&["job", "run", s(&job)]);
    assert!(String::from_utf8_lossy(&second.stdout).contains("incremental"));
    // Damage one stored block of the full, let verify find it.
    damage_first_block_of_first_point(&repo, "web");
    assert_eq!(verify_code(&repo), Some(1));
    let third = run(&["job", "run", s(&job)]);
    assert!(third.status.success());
    let out = String::from_utf8_lossy(&third.stdout);
    assert!(out.contains("full — verify found restore point"), "{out}");
    // The new chain is healthy: the next run is an incremental again, once verify is clean
    // for the new chain (the old chain stays damaged and named).
    let fourth = run(&["job", "run", s(&job)]);
    assert!(
        String::from_utf8_lossy(&fourth.stdout).contains("incremental"),
        "damage of the old chain must not force fulls forever"
    );
}

/// `bulwark … | head -1`: a closed standard output neither panics (exit 101) nor fails the
/// command. `bulwark … > /dev/full`: a standard output that fails otherwise is said once on
/// stderr and the command exits 2, because its answer did not arrive (a verify that found
/// nothing wrong too). Either way the work stands: each backup still makes its point.
#[test]
fn a_closed_standard_output_neither_panics_nor_fails_the_command() {
    let Rig {
        dir: _dir,
        repo,
        img,
        ..
    } = rig(2);
    backup_ok(&repo, "vm", &[], &img);
    let commands = [
        vec!["list", "--repo", s(&repo)],
        vec!["--json", "list", "--repo", s(&repo)],
        job_args("backup", s(&repo), "vm", &[], &img),
        vec!["verify", "--repo", s(&repo)],
    ];
    for args in &commands {
        let o = output_into_closed_pipe(bulwark().args(args));
        assert_cut_off_quietly(&format!("{args:?} | head -0"), &o, 0);
        let o = output_onto_full_device(bulwark().args(args));
        assert_output_failure_said_once(&format!("{args:?} > /dev/full"), &o, "bulwark");
    }
    assert_eq!(
        point_count(&repo),
        3,
        "each backup whose output was closed or failed made its point"
    );
}

/// Ctrl-C (SIGINT) or SIGTERM during a backup of a raw image stops it between blocks: exit 2
/// saying so, its unfinished file removed from `incoming/`, no restore point.
#[test]
fn an_interrupted_raw_backup_removes_its_file_and_makes_no_point() {
    let Rig {
        dir: _dir,
        repo,
        img,
        ..
    } = rig(96);
    for signal in ["-INT", "-TERM"] {
        let child = bulwark()
            .args(job_args(
                "backup",
                s(&repo),
                "vm",
                &["--threads", "1", "--compression", "19"],
                &img,
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the backup is writing its file, then interrupt it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_dir(repo.join("incoming")).unwrap().count() == 0 {
            assert!(
                Instant::now() < deadline,
                "the backup never started writing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{signal}: {err}");
        assert!(err.contains("interrupted"), "{signal}: {err}");
        let left: Vec<_> = std::fs::read_dir(repo.join("incoming")).unwrap().collect();
        assert!(left.is_empty(), "{signal}: left in incoming/: {left:?}");
        let list = run(&["list", "--repo", s(&repo)]);
        assert!(
            String::from_utf8_lossy(&list.stdout).contains("no restore points"),
            "{signal}: a point was made"
        );
    }
}

/// A plain `bulwark backup` (not only `job run`) after verify found damage in the current
/// chain starts a new chain, says why, and restores; an incremental would have referenced the
/// bad block and failed to restore.
#[test]
fn a_backup_after_verify_found_damage_starts_a_new_chain_that_restores() {
    let Rig { dir, repo, img, .. } = rig(2);
    backup_ok(&repo, "web", &[], &img);
    damage_first_block_of_first_point(&repo, "web");
    assert_eq!(verify_code(&repo), Some(1));
    let o = run(&job_args("backup", s(&repo), "web", &[], &img));
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("active full because verify found restore point"),
        "{out}"
    );
    let restored = dir.path().join("r.img");
    restore_ok(&repo, "web", &[], &restored);
    assert!(std::fs::read(&restored).unwrap() == std::fs::read(&img).unwrap());
}

/// Restore targets and sources that cannot work are refused up front with what to do, and
/// nothing is written: a folder as the target (also with --force), a target in a folder that
/// does not exist, a FIFO as the source (which would block the open forever), an unknown
/// `--format`.
#[test]
fn impossible_targets_and_sources_are_refused_up_front() {
    let Rig { dir, repo, img, .. } = rig(1);
    backup_ok(&repo, "vm", &[], &img);
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let missing = dir.path().join("nope/disk.img");
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (args, advice) in [
        (
            job_args("restore", s(&repo), "vm", &[], &folder),
            "is a folder",
        ),
        (
            job_args("restore", s(&repo), "vm", &["--force"], &folder),
            "is a folder",
        ),
        (
            job_args("restore", s(&repo), "vm", &[], &missing),
            "does not exist",
        ),
        (
            job_args("backup", s(&repo), "pipe", &[], &fifo),
            "not a regular file or block device",
        ),
        (
            job_args("backup", s(&repo), "fmt", &["--format", "nonsense"], &img),
            "is not an image format",
        ),
    ] {
        let t = Instant::now();
        refused_with(&args, advice);
        assert!(t.elapsed() < Duration::from_secs(20), "{args:?} took long");
    }
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
    assert!(!missing.parent().unwrap().exists());
}

/// `bulwark job plan` refuses a job file that `bulwark job run` would refuse (a block size
/// that is no power of two), instead of planning runs that cannot happen.
#[test]
fn job_plan_refuses_a_block_size_job_run_would_refuse() {
    let Rig { dir, repo, img, .. } = rig(1);
    let job = dir.path().join("bj.toml");
    for (bs, ok) in [("3M", false), ("8M", false), ("256K", true)] {
        job_file(&job, "bj", &img, &repo, &format!("block_size = \"{bs}\"\n"));
        if ok {
            assert!(run(&["job", "plan", s(&job)]).status.success(), "{bs}");
        } else {
            plan_refused(&job, "power of two from 64K to 4M", bs);
        }
    }
}

/// `bulwark job plan` also refuses what `job run` would refuse later: a compression level out
/// of range, and both kinds of key at once.
#[test]
fn job_plan_refuses_a_bad_compression_and_two_kinds_of_key() {
    let Rig { dir, repo, img, .. } = rig(1);
    let job = dir.path().join("cj.toml");
    for (extra, why) in [
        ("compression = 99\n", "compression 99 is out of range"),
        ("key = \"/k.key\"\npublic_key = \"/k.pub\"\n", "not both"),
    ] {
        job_file(&job, "cj", &img, &repo, extra);
        plan_refused(&job, why, extra);
    }
    job_file(&job, "cj", &img, &repo, "compression = 19\n");
    assert!(run(&["job", "plan", s(&job)]).status.success());
}

/// The clock stepped back between two backups (a bad NTP source, a host restored from a
/// snapshot): the second backup still sorts after the first, so the default restore gives
/// the disk as it is now, and the incremental is not dated before its parent.
#[test]
fn a_backup_after_the_clock_stepped_back_is_still_the_newest_restore_point() {
    let t = "a_backup_after_the_clock_stepped_back_is_still_the_newest_restore_point";
    let Some(lib) = bulwark_testkit::skip::require_faketime(t) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path());
    let img = dir.path().join("disk.img");
    let mut rng = Rng::new(11);
    let first = rng.bytes(4 << 20);
    std::fs::write(&img, &first).unwrap();
    let backup = job_args("backup", s(&repo), "vm", &["--json"], &img);
    // A year ahead, then the real clock.
    let o = bulwark()
        .args(&backup)
        .env("LD_PRELOAD", &lib)
        .env("TZ", "UTC")
        .env("FAKETIME", "+365d")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let ahead: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut second = first.clone();
    second[..1 << 20].copy_from_slice(&rng.bytes(1 << 20));
    std::fs::write(&img, &second).unwrap();
    let o = run(&backup);
    assert!(o.status.success());
    let now: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(now["kind"], "incremental", "{now}");
    assert!(
        bulwark_testkit::text(&o).contains("clock is behind"),
        "the step is reported"
    );
    assert!(
        now["created_unix"].as_i64() >= ahead["created_unix"].as_i64(),
        "{now} after {ahead}"
    );
    let out = dir.path().join("out.img");
    restore_ok(&repo, "vm", &[], &out);
    assert!(
        std::fs::read(&out).unwrap() == second,
        "restored the older point"
    );
}
