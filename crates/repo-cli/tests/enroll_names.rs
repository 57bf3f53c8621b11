//! Names given to `bulwark-repo`. A client name that is enrolled (an active certificate) gets
//! no second token unless `--replace` says the new machine is meant to become that client;
//! a name with only revoked or expired certificates, or only unused tokens, is free. A job
//! name that names no job fails `verify` and warns at `policy`.

use std::path::Path;
use std::process::Output;

use bulwark_format::{BlockNo, StoredBlock};
use bulwark_repository::{NewPoint, Repository};
use bulwark_server::{ClientRecord, Registry};
use bulwark_testkit::cmd::stderr;
use bulwark_testkit::serve::Service;
use bulwark_testkit::{images, need_root};

fn repo_cli(args: &[&str]) -> Output {
    bulwark_testkit::cmd::run(Path::new(env!("CARGO_BIN_EXE_bulwark-repo")), args)
}

/// A new repository with a network identity in a scratch folder.
fn net_repo() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo").to_str().unwrap().to_string();
    assert!(repo_cli(&["init", &dir, "--immutable-days", "7"])
        .status
        .success());
    (tmp, dir)
}

/// `bulwark-repo --json enroll DIR --client CLIENT EXTRA…`.
fn enroll(dir: &str, client: &str, extra: &[&str]) -> Output {
    let mut a = vec!["--json", "enroll", dir, "--client", client];
    a.extend_from_slice(extra);
    repo_cli(&a)
}

/// Asserts `o` is the refusal of a second token for the enrolled `client` whose active
/// certificate is `fp`: exit 2, no token, and what `--replace` would do.
fn assert_refused(o: &Output, client: &str, fp: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("BWT1"));
    let e = stderr(o);
    for what in [
        &format!("client \"{client}\" is enrolled (since "),
        fp,
        "--replace",
        "stays valid",
        &format!("--revoke {fp}"),
    ] {
        assert!(e.contains(what), "the refusal does not say {what:?}: {e}");
    }
}

fn record(name: &str, fp: u8, not_after: i64, revoked: Option<i64>) -> ClientRecord {
    ClientRecord {
        name: name.into(),
        fingerprint: format!("{fp:02x}").repeat(32),
        serial: "01".into(),
        issued_unix: bulwark_server::now_unix() - 60,
        not_after_unix: not_after,
        revoked_unix: revoked,
    }
}

#[test]
fn a_name_with_only_revoked_expired_or_unused_credentials_is_free() {
    let (_tmp, dir) = net_repo();
    // A token not used yet enrolls nobody: a second one for the name is fine.
    assert!(enroll(&dir, "c1", &[]).status.success());
    assert!(enroll(&dir, "c1", &[]).status.success());
    let reg = Registry::new(Path::new(&dir));
    let now = bulwark_server::now_unix();
    reg.add(&record("c1", 1, now + 86_400, Some(now - 10)))
        .unwrap();
    reg.add(&record("c1", 2, now - 1, None)).unwrap();
    assert!(
        enroll(&dir, "c1", &[]).status.success(),
        "a revoked and an expired certificate blocked the name"
    );
    let active = record("c1", 3, now + 86_400, None);
    reg.add(&active).unwrap();
    assert_refused(&enroll(&dir, "c1", &[]), "c1", &active.fingerprint);
    assert!(
        enroll(&dir, "c10", &[]).status.success(),
        "another name is free"
    );
    let o = enroll(&dir, "c1", &["--replace"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["replaces"], serde_json::json!([active.fingerprint]));
    assert!(v["token"].as_str().unwrap().starts_with("BWT1-"));
    assert!(stderr(&o).contains("stays valid"), "{}", stderr(&o));
    // Revoked, the name is free again.
    assert!(repo_cli(&["clients", &dir, "--revoke", "c1"])
        .status
        .success());
    let o = enroll(&dir, "c1", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["replaces"], serde_json::json!([]));
}

/// `bulwark-repo clients` says what the service does with each certificate now: an expired
/// one is not shown as active.
#[test]
fn clients_shows_expired_and_revoked_certificates_as_such() {
    let (_tmp, dir) = net_repo();
    let reg = Registry::new(Path::new(&dir));
    let now = bulwark_server::now_unix();
    reg.add(&record("live", 1, now + 86_400, None)).unwrap();
    reg.add(&record("old", 2, now - 1, None)).unwrap();
    reg.add(&record("gone", 3, now + 86_400, Some(now - 5)))
        .unwrap();
    let o = repo_cli(&["--json", "clients", &dir]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let status =
        |name: &str| bulwark_testkit::cmd::element(&v["clients"], "client", name)["status"].clone();
    assert_eq!(status("live"), "active");
    assert_eq!(status("old"), "expired");
    assert_eq!(status("gone"), "revoked");
    let text = String::from_utf8_lossy(&repo_cli(&["clients", &dir]).stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("old "))
        .unwrap()
        .to_string();
    assert!(
        line.contains("EXPIRED") && !line.contains("active"),
        "{line}"
    );
}

#[test]
fn a_second_machine_becomes_an_enrolled_client_only_with_replace() {
    need_root!("a_second_machine_becomes_an_enrolled_client_only_with_replace");
    let svc = Service::start(&[]);
    svc.enroll("c1");
    let img = svc.path("a.img");
    images::mixed(&img, 3, 2);
    assert!(svc.bulwark("c1").backup("web", &img, &[]).status.success());
    let repo = svc.repo.to_str().unwrap();
    let o = svc.admin(&["--json", "clients", repo]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let old_fp = v["clients"][0]["fingerprint"].as_str().unwrap().to_string();

    let o = svc.admin(&["enroll", repo, "--client", "c1"]);
    assert_refused(&o, "c1", &old_fp);

    // On purpose: the new machine is c1 and sees c1's job; the old one keeps working until
    // its certificate is revoked by fingerprint.
    let o = svc.admin(&["--json", "enroll", repo, "--client", "c1", "--replace"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let token = v["token"].as_str().unwrap();
    assert!(svc.enroll_with("c1-new", token).status.success());
    let jobs = |who: &str| svc.bulwark(who).list_json()["jobs"][0]["job"].clone();
    assert_eq!(jobs("c1-new"), "web");
    assert_eq!(jobs("c1"), "web", "the old certificate stays valid");
    assert!(svc
        .admin(&["clients", repo, "--revoke", &old_fp])
        .status
        .success());
    let l = svc.bulwark("c1").run(&["list", "--repo", &svc.addr]);
    assert!(!l.status.success(), "a revoked certificate still lists");
    assert_eq!(jobs("c1-new"), "web");
}

/// Two tokens for a free name, both issued before either is used: the first enrolls the
/// name, the second is refused when it is used (the name is checked again then), so two
/// machines never become the same client without `--replace`.
#[test]
fn of_two_unused_tokens_for_one_name_only_the_first_used_enrolls() {
    need_root!("of_two_unused_tokens_for_one_name_only_the_first_used_enrolls");
    let svc = Service::start(&[]);
    let t1 = svc.token("c2", "10m");
    let t2 = svc.token("c2", "10m");
    assert!(svc.enroll_with("c2", &t1).status.success());
    let o = svc.enroll_with("c2-other", &t2);
    assert!(!o.status.success(), "a second machine became c2");
    let e = bulwark_testkit::text(&o);
    assert!(
        e.contains("was enrolled by another machine after this token was issued")
            && e.contains("--replace"),
        "{e}"
    );
    let repo = svc.repo.to_str().unwrap();
    let o = svc.admin(&["--json", "clients", repo]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let active: Vec<_> = v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["client"] == "c2" && c["revoked_unix"].is_null())
        .collect();
    assert_eq!(active.len(), 1, "{v}");
}

/// Enrolling a machine again with the same repository (another token, another name) replaces
/// its identity there, but keeps the previous key and certificate beside it and says so: a
/// mistaken enrollment loses no key whose certificate is still valid.
#[test]
fn enrolling_again_keeps_the_previous_identity_and_says_which_it_was() {
    need_root!("enrolling_again_keeps_the_previous_identity_and_says_which_it_was");
    let svc = Service::start(&[]);
    svc.enroll("m");
    let t = svc.token("carol", "10m");
    let o = svc.enroll_with("m", &t);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let e = stderr(&o);
    assert!(
        e.contains("as client \"m\"") && e.contains("\"carol\""),
        "{e}"
    );
    let creds = std::fs::read_dir(svc.config("m").join("repositories"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let kept = bulwark_testkit::fs::entries_starting_with(&creds, "previous-");
    assert_eq!(kept.len(), 1, "{creds:?}");
    let old = std::fs::read_to_string(kept[0].join("repository.toml")).unwrap();
    assert!(
        old.contains("\"m\"") && kept[0].join("client.key").exists(),
        "{old}"
    );
    // The new identity works.
    let l = svc.bulwark("m").run(&["list", "--repo", &svc.addr]);
    assert!(l.status.success(), "{}", bulwark_testkit::text(&l));
}

/// A repository without network identity holding one restore point of job `a`.
fn job_a() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = Repository::init(&dir, 7).unwrap();
    let mut b = repo
        .begin_point(NewPoint::active_full("a", 65_536, 65_536))
        .unwrap();
    b.put_stored(StoredBlock::raw(BlockNo(0), &[7u8; 65_536]))
        .unwrap();
    b.finish().unwrap();
    (tmp, dir.to_str().unwrap().to_string())
}

#[test]
fn verify_of_a_mistyped_job_fails_and_a_policy_for_it_warns() {
    let (_tmp, dir) = job_a();
    let o = repo_cli(&["verify", &dir, "--job", "typo"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("no job \"typo\" in repository {dir}; its jobs: a")),
        "{}",
        stderr(&o)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("verified 0"));
    assert_eq!(
        repo_cli(&["verify", &dir, "--job", "../x"]).status.code(),
        Some(2)
    );
    assert!(repo_cli(&["verify", &dir, "--job", "a"]).status.success());
    // A policy may come before the first backup: set, with a warning naming the jobs.
    let o = repo_cli(&["policy", &dir, "--job", "nosuchjob", "--keep-points", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: no job \"nosuchjob\"") && stderr(&o).contains("its jobs: a"),
        "{}",
        stderr(&o)
    );
    let o = repo_cli(&["--json", "policy", &dir, "--job", "nosuchjob"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["keep_points"], 1);
    let o = repo_cli(&["policy", &dir, "--job", "a", "--keep-points", "1"]);
    assert!(
        o.status.success() && !stderr(&o).contains("warning"),
        "{}",
        stderr(&o)
    );
}
