//! An encrypted job stays encrypted: a backup without its key is refused not only as an
//! incremental but wherever it would start a new chain (a forced full, another block size or
//! disk size, a damaged newest point, a job file's scheduled full), for symmetric and
//! write-only jobs, and nothing reaches the repository.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bulwark_testkit::system::{job_args, job_file};
use common::{bulwark_pass as bulwark, create_write_only_key, err, init_repo, ok, s};

const PASS: &str = "correct horse battery";
const MARKER: &[u8] = b"BULWARK-PLAINTEXT-MARKER-7d1c";

/// An 8 MiB image of random data with the marker at a few places.
fn image(path: &Path, seed: u64) {
    let mut rng = bulwark_testkit::Rng::new(seed);
    let mut data = rng.bytes(8 << 20);
    for at in [4096usize, 3 << 20, (8 << 20) - 4096] {
        data[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    std::fs::write(path, data).unwrap();
}

/// The restore-point files of the repository.
fn point_files(repo: &Path) -> usize {
    bulwark_testkit::fs::files_under(repo)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bwrp"))
        .count()
}

/// Every keyless backup of `job` with each of `extras` is refused, names the key to give,
/// and leaves the repository as it was.
fn keyless_refused(repo: &Path, job: &str, img: &Path, extras: &[&[&str]], give: &str) {
    let before = point_files(repo);
    for extra in extras {
        let e = err(&bulwark(
            &job_args("backup", s(repo), job, extra, img),
            Some(PASS),
            None,
        ));
        assert!(
            e.contains("is encrypted") && e.contains(give) && e.contains("nothing was written"),
            "{extra:?}: {e}"
        );
    }
    assert_eq!(point_files(repo), before, "a refused backup wrote a point");
    let incoming = std::fs::read_dir(repo.join("incoming")).unwrap().count();
    assert_eq!(incoming, 0, "a refused backup left a file in incoming/");
    bulwark_testkit::fs::assert_no_marker(repo, MARKER);
}

#[test]
fn a_keyless_backup_of_an_encrypted_job_is_refused_also_where_it_would_start_a_new_chain() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path());
    let key = dir.path().join("sym.key");
    ok(&bulwark(
        &["key", "create", "--out", s(&key)],
        Some(PASS),
        None,
    ));
    let img = dir.path().join("disk.img");
    image(&img, 1);
    for _ in 0..2 {
        ok(&bulwark(
            &job_args("backup", s(&repo), "db", &["--key", s(&key)], &img),
            Some(PASS),
            None,
        ));
    }
    let cases: &[&[&str]] = &[&[], &["--full"], &["--block-size", "64K"]];
    keyless_refused(&repo, "db", &img, cases, "--key KEYFILE");
    // Another disk size.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(12 << 20).unwrap();
    keyless_refused(&repo, "db", &img, &[&[]], "--key KEYFILE");
    f.set_len(8 << 20).unwrap();
    // A damaged newest point: the older, readable point still says the job is encrypted.
    let scan = bulwark_repository::Repository::open(&repo)
        .unwrap()
        .scan_job("db")
        .unwrap();
    let newest = &scan.points.last().unwrap().path;
    let g = std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .unwrap();
    g.write_all_at(b"\0", 2).unwrap();
    keyless_refused(&repo, "db", &img, &[&[]], "--key KEYFILE");
    // A job file without its key (its run plans the full that the damaged point asks for) is
    // refused as well.
    let job = dir.path().join("db.toml");
    job_file(&job, "db", &img, &repo, "");
    let before = point_files(&repo);
    let o = bulwark(
        &[
            "job",
            "run",
            "--state-dir",
            s(&dir.path().join("state")),
            s(&job),
        ],
        Some(PASS),
        None,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success() && out.contains("is encrypted"), "{out}");
    assert_eq!(point_files(&repo), before);
    bulwark_testkit::fs::assert_no_marker(&repo, MARKER);
    // With its key the job goes on (a new chain: the newest point is damaged).
    ok(&bulwark(
        &job_args("backup", s(&repo), "db", &["--key", s(&key)], &img),
        Some(PASS),
        None,
    ));
}

/// A scratch folder with a repository, a write-only key pair, an image (seed 2) and one
/// write-only backup of it as `job`: (folder, repository, public key, image).
fn write_only_job(job: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(dir.path());
    let (private, public) = (dir.path().join("wo.priv"), dir.path().join("wo.pub"));
    create_write_only_key(&private, &public, PASS);
    let img = dir.path().join("disk.img");
    image(&img, 2);
    ok(&bulwark(
        &job_args("backup", s(&repo), job, &["--public-key", s(&public)], &img),
        None,
        None,
    ));
    (dir, repo, public, img)
}

#[test]
fn a_keyless_backup_of_a_write_only_job_is_refused_also_as_a_new_full() {
    let (_dir, repo, _public, img) = write_only_job("vm");
    let cases: &[&[&str]] = &[&[], &["--full"], &["--block-size", "256K"]];
    keyless_refused(&repo, "vm", &img, cases, "--public-key PUBLIC");
}

/// `bulwark list` says which chains are encrypted, how, and with which key (the
/// fingerprint `bulwark key show` prints), so an administrator knows which key file a chain
/// needs after rotations; a plain chain says nothing of the kind.
#[test]
fn list_names_the_encryption_mode_and_key_of_each_chain() {
    let (_dir, repo, public, img) = write_only_job("enc");
    ok(&bulwark(
        &job_args("backup", s(&repo), "plain", &[], &img),
        None,
        None,
    ));
    let shown = ok(&bulwark(&["key", "show", s(&public)], None, None));
    let v: serde_json::Value = serde_json::from_str(&ok(&bulwark(
        &["--json", "list", "--repo", s(&repo)],
        None,
        None,
    )))
    .unwrap();
    let point = |job: &str| {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == job)
            .unwrap()["points"][0]
            .clone()
    };
    let enc = point("enc");
    assert_eq!(enc["encryption"], "write-only", "{enc}");
    let fp = enc["key_fingerprint"].as_str().unwrap();
    assert!(shown.contains(fp), "key show {shown} does not name {fp}");
    assert!(point("plain").get("encryption").is_none());
    let text = ok(&bulwark(&["list", "--repo", s(&repo)], None, None));
    assert!(
        text.contains(&format!("(encrypted, write-only, key {fp})")),
        "{text}"
    );
}
