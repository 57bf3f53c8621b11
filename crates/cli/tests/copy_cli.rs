//! `bulwark copy` as a program, between two repository folders (any user): its JSON report,
//! `--verify` and its exit codes (0 agree, 1 damage, 2 operational error with advice).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bulwark(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .output()
        .unwrap();
    bulwark_testkit::show(&format!("bulwark {}", args.join(" ")), &o);
    o
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn copy_reports_json_and_verify_exits_1_on_a_changed_target_and_2_on_one_repository() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    bulwark_repository::Repository::init(&src, 7).unwrap();
    bulwark_repository::Repository::init(&dst, 7).unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, bulwark_testkit::Rng::new(77).bytes(3 << 20)).unwrap();
    let o = bulwark(&["backup", "--repo", s(&src), "--job", "vm", s(&img)]);
    assert!(o.status.success());

    let o = bulwark(&["--json", "copy", "--from", s(&src), "--to", s(&dst)]);
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

    let o = bulwark(&[
        "--json",
        "copy",
        "--verify",
        "--from",
        s(&src),
        "--to",
        s(&dst),
    ]);
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
    let o = bulwark(&["copy", "--verify", "--from", s(&src), "--to", s(&dst)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("DAMAGED on the target"));

    // One repository given twice: an operational error that says what to do.
    let o = bulwark(&["copy", "--from", s(&src), "--to", s(&src)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a copy needs a second repository"));
    // A bad rate is refused by the argument parser (exit 2).
    let o = bulwark(&[
        "copy",
        "--from",
        s(&src),
        "--to",
        s(&dst),
        "--bwlimit",
        "fast",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

/// A source point whose metadata is damaged (here: a byte of the header's padding) fails the
/// copy with exit 1, as damage does everywhere, and without the advice to run it again.
#[test]
fn a_damaged_source_point_exits_1_without_advice_to_retry() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let repo = bulwark_repository::Repository::init(&src, 7).unwrap();
    bulwark_repository::Repository::init(&dst, 7).unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, bulwark_testkit::Rng::new(78).bytes(2 << 20)).unwrap();
    assert!(
        bulwark(&["backup", "--repo", s(&src), "--job", "vm", s(&img)])
            .status
            .success()
    );
    let path = repo.scan_job("vm").unwrap().points[0].path.clone();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0x77], 200).unwrap();
    let o = bulwark(&["copy", "--from", s(&src), "--to", s(&dst)]);
    assert_eq!(o.status.code(), Some(1), "{}", bulwark_testkit::text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("FAILED") && out.contains("bulwark verify"),
        "{out}"
    );
    assert!(!out.contains("Run the same command again"), "{out}");
}

/// A scratch folder with two new repositories `src` and `dst` and a 1 MiB image of random
/// bytes from `seed`: (folder, source, target, image).
fn two_repositories(seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    bulwark_repository::Repository::init(&src, 7).unwrap();
    bulwark_repository::Repository::init(&dst, 7).unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, bulwark_testkit::Rng::new(seed).bytes(1 << 20)).unwrap();
    (dir, src, dst, img)
}

/// A copy that would copy nothing is an error, not a success: the same repository spelled
/// another way (a trailing slash, a symbolic link) in `bulwark copy` and in a `[copy]` job
/// file, and a job the source does not have.
#[test]
fn a_copy_into_its_own_source_or_of_a_job_the_source_lacks_fails_with_exit_2() {
    let (dir, src, dst, img) = two_repositories(5);
    let d = dir.path();
    assert!(
        bulwark(&["backup", "--repo", s(&src), "--job", "web", s(&img)])
            .status
            .success()
    );
    let link = d.join("link");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    let slash = format!("{}/", s(&src));
    for to in [slash.as_str(), s(&link)] {
        let o = bulwark(&["copy", "--from", s(&src), "--to", to]);
        assert_eq!(o.status.code(), Some(2), "copy to {to}");
        assert!(bulwark_testkit::text(&o).contains("same repository"));
        let job = d.join("self.toml");
        std::fs::write(
            &job,
            format!(
                "name = \"off\"\nrepository = \"{}\"\n[copy]\nto = \"{to}\"\n",
                s(&src)
            ),
        )
        .unwrap();
        let state = d.join("state");
        let o = bulwark(&["job", "run", "--state-dir", s(&state), s(&job)]);
        assert_eq!(o.status.code(), Some(2), "job file copying to {to}");
        assert!(bulwark_testkit::text(&o).contains("same repository"));
    }
    let o = bulwark(&[
        "--json",
        "copy",
        "--from",
        s(&src),
        "--to",
        s(&dst),
        "--job",
        "web01",
    ]);
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
    let (_dir, src, dst, img) = two_repositories(9);
    for job in ["db", "web"] {
        assert!(
            bulwark(&["backup", "--repo", s(&src), "--job", job, s(&img)])
                .status
                .success()
        );
    }
    let o = bulwark(&["copy", "--from", s(&src), "--to", s(&dst), "--job", "web"]);
    assert!(o.status.success());
    let o = bulwark(&[
        "--json",
        "copy",
        "--verify",
        "--from",
        s(&src),
        "--to",
        s(&dst),
    ]);
    assert_eq!(o.status.code(), Some(0), "nothing differs or is damaged");
    let v = json(&o);
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{v}");
    assert_eq!(jobs[0]["job"], "db");
    assert_eq!(jobs[0]["missing_on_target"], 1);
    assert_eq!(jobs[0]["points"][0]["status"], "missing-on-target");
    assert_eq!(jobs[1]["same"], 1);
}
