//! `bulwark copy` as a program, between two repository folders (any user): its JSON report,
//! `--verify` and its exit codes (0 agree, 1 damage, 2 operational error with advice).

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{backs_up, bulwark, copy, copy_json, copy_to, job_toml, s};

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

/// A scratch folder with two new repositories `src` and `dst` and an image of `mib` MiB of
/// random bytes from `seed`: (folder, source, target, image).
fn two_repositories(seed: u64, mib: usize) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    bulwark_repository::Repository::init(&src, 7).unwrap();
    bulwark_repository::Repository::init(&dst, 7).unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, bulwark_testkit::Rng::new(seed).bytes(mib << 20)).unwrap();
    (dir, src, dst, img)
}

#[test]
fn copy_reports_json_and_verify_exits_1_on_a_changed_target_and_2_on_one_repository() {
    let (_dir, src, dst, img) = two_repositories(77, 3);
    backs_up(&src, "vm", &img);

    let o = copy_json(&src, &dst, &[]);
    assert_eq!(o.status.code(), Some(0));
    let r = json(&o);
    assert_eq!(r["jobs"][0]["job"], "vm");
    assert_eq!(r["jobs"][0]["points_copied"], 1);
    let p = &r["jobs"][0]["points"][0];
    assert_eq!(p["mode"], "verbatim");
    assert_eq!(p["root_digest"], p["source_root_digest"]);
    assert_eq!(
        p["immutable"], false,
        "no immutability service guards this target"
    );

    let o = copy_json(&src, &dst, &["--verify"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["jobs"][0]["same"], 1);

    // A stored byte of the target's copy changes: --verify exits 1 and says where.
    let store = dst.join("store").join("vm");
    let chain = std::fs::read_dir(&store)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = std::fs::read_dir(&chain)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut b = std::fs::read(&file).unwrap();
    b[4096 + 5] ^= 0x10;
    std::fs::write(&file, b).unwrap();
    let o = copy(&src, &dst, &["--verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("DAMAGED on the target"));

    // One repository given twice: an operational error that says what to do.
    let o = copy(&src, &src, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a copy needs a second repository"));
    // A bad rate is refused by the argument parser (exit 2).
    let o = copy(&src, &dst, &["--bwlimit", "fast"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A source point whose metadata is damaged (here: a byte of the header's padding) fails the
/// copy with exit 1, as damage does everywhere, and without the advice to run it again.
#[test]
fn a_damaged_source_point_exits_1_without_advice_to_retry() {
    use std::os::unix::fs::FileExt;
    let (_dir, src, dst, img) = two_repositories(78, 2);
    backs_up(&src, "vm", &img);
    let repo = bulwark_repository::Repository::open(&src).unwrap();
    let path = repo.scan_job("vm").unwrap().points[0].path.clone();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0x77], 200).unwrap();
    let o = copy(&src, &dst, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", bulwark_testkit::text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("FAILED") && out.contains("bulwark verify"),
        "{out}"
    );
    assert!(!out.contains("Run the same command again"), "{out}");
}

/// A copy that would copy nothing is an error, not a success: the same repository spelled
/// another way (a trailing slash, a symbolic link) in `bulwark copy` and in a `[copy]` job
/// file, and a job the source does not have.
#[test]
fn a_copy_into_its_own_source_or_of_a_job_the_source_lacks_fails_with_exit_2() {
    let (dir, src, dst, img) = two_repositories(5, 1);
    let d = dir.path();
    backs_up(&src, "web", &img);
    let link = d.join("link");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    let slash = format!("{}/", s(&src));
    for to in [slash.as_str(), s(&link)] {
        let o = copy(&src, to, &[]);
        assert_eq!(o.status.code(), Some(2), "copy to {to}");
        assert!(bulwark_testkit::text(&o).contains("same repository"));
        let job = job_toml(d, "off", &src, &copy_to(to));
        let state = d.join("state");
        let o = bulwark(&["job", "run", "--state-dir", s(&state), s(&job)]);
        assert_eq!(o.status.code(), Some(2), "job file copying to {to}");
        assert!(bulwark_testkit::text(&o).contains("same repository"));
    }
    let o = copy_json(&src, &dst, &["--job", "web01"]);
    assert_eq!(o.status.code(), Some(2), "a job the source lacks");
    let err = json(&o)["jobs"][0]["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("no job \"web01\"") && err.contains("web"),
        "{err}"
    );
    assert!(bulwark_repository::Repository::open(&dst)
        .unwrap()
        .jobs()
        .unwrap()
        .is_empty());
}

/// `--verify` against a target that has never received a job reports that job's points as
/// missing on the target and goes on to the other jobs, instead of stopping at the first.
#[test]
fn verify_reports_a_job_the_target_lacks_as_missing_and_compares_the_others() {
    let (_dir, src, dst, img) = two_repositories(9, 1);
    for job in ["db", "web"] {
        backs_up(&src, job, &img);
    }
    let o = copy(&src, &dst, &["--job", "web"]);
    assert!(o.status.success());
    let o = copy_json(&src, &dst, &["--verify"]);
    assert_eq!(o.status.code(), Some(0), "nothing differs or is damaged");
    let v = json(&o);
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{v}");
    assert_eq!(jobs[0]["job"], "db");
    assert_eq!(jobs[0]["missing_on_target"], 1);
    assert_eq!(jobs[0]["points"][0]["status"], "missing-on-target");
    assert_eq!(jobs[1]["same"], 1);
}
