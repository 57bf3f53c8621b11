//! `bulwark verify` and `bulwark list` of a local repository: a job name that names no job is
//! an error (exit 2) listing the jobs there are, as is a name backup would refuse; a verify
//! records when each restore point was last verified, as `bulwark-repo verify` does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use bulwark_testkit::cmd::stderr;
use bulwark_testkit::system::job_args;
use common::{bulwark_ok, init_repo, s};

fn run(args: &[&str]) -> Output {
    bulwark_testkit::cmd::run(Path::new(common::bin()), args)
}

/// A repository with jobs `a` and `b`, one restore point each, in a scratch folder.
fn two_jobs() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path());
    let img = dir.path().join("d.img");
    bulwark_testkit::images::mixed(&img, 7, 2);
    for job in ["a", "b"] {
        bulwark_ok(&job_args("backup", s(&repo), job, &[], &img));
    }
    (dir, repo)
}

/// The `last_verified_unix` of every listed point of `job`.
fn verified_times(repo: &Path, job: &str) -> Vec<Option<i64>> {
    let o = bulwark_ok(&["--json", "list", "--repo", s(repo), "--job", job]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let points = v["jobs"][0]["points"].as_array().unwrap().clone();
    assert!(!points.is_empty(), "job {job} lists no points: {v}");
    points
        .iter()
        .map(|p| p["last_verified_unix"].as_i64())
        .collect()
}

/// Asserts `o` is the exit-2 refusal of a job that does not exist, naming the real ones.
fn assert_no_such_job(o: &Output, job: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    let e = stderr(o);
    assert!(
        e.contains(&format!("no job \"{job}\" in repository")) && e.contains("its jobs: a, b"),
        "{e}"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("all good"));
}

#[test]
fn verify_and_list_of_a_mistyped_job_fail_naming_the_jobs() {
    let (_dir, repo) = two_jobs();
    let r = s(&repo);
    assert_no_such_job(&run(&["verify", "--repo", r, "--job", "typo"]), "typo");
    assert_no_such_job(&run(&["list", "--repo", r, "--job", "nosuch"]), "nosuch");
    for cmd in ["list", "verify"] {
        let o = run(&[cmd, "--repo", r, "--job", "../x"]);
        assert_eq!(o.status.code(), Some(2), "{cmd} ../x: {}", stderr(&o));
        assert!(stderr(&o).contains("is not allowed"), "{}", stderr(&o));
    }
    // The real jobs still verify and list.
    assert!(run(&["verify", "--repo", r, "--job", "a"]).status.success());
    assert!(run(&["list", "--repo", r, "--job", "b"]).status.success());
}

#[test]
fn a_verify_job_file_naming_a_missing_job_fails() {
    let (dir, repo) = two_jobs();
    let file = dir.path().join("verify.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"nightly\"\nrepository = \"{}\"\n[verify]\njobs = [\"typo\"]\n",
            s(&repo)
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let o = run(&["job", "run", s(&file), "--state-dir", s(&state)]);
    assert_eq!(o.status.code(), Some(2), "{}", bulwark_testkit::text(&o));
    let out = bulwark_testkit::text(&o);
    assert!(
        out.contains("no job \"typo\" in repository") && out.contains("its jobs: a, b"),
        "{out}"
    );
}

#[test]
fn a_local_verify_records_when_each_point_was_verified() {
    let (_dir, repo) = two_jobs();
    let r = s(&repo);
    assert!(verified_times(&repo, "a").iter().all(Option::is_none));
    bulwark_ok(&["verify", "--repo", r, "--job", "a"]);
    assert!(verified_times(&repo, "a").iter().all(Option::is_some));
    assert!(
        verified_times(&repo, "b").iter().all(Option::is_none),
        "only job a was verified"
    );
    bulwark_ok(&["verify", "--repo", r]);
    assert!(verified_times(&repo, "b").iter().all(Option::is_some));
}

#[test]
fn a_verify_whose_record_cannot_be_written_warns_and_succeeds() {
    let (_dir, repo) = two_jobs();
    // A folder where the record goes: it can be neither read nor replaced (as root, file
    // modes do not stop writes).
    std::fs::create_dir_all(repo.join("health/verified.json/x")).unwrap();
    let o = run(&["verify", "--repo", s(&repo)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("all good"));
    assert!(
        stderr(&o).contains("the verify times of this run are not recorded"),
        "{}",
        stderr(&o)
    );
}
