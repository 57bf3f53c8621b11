//! `bulwark-tier` and `bulwark list` as an administrator runs them, against the real S3
//! store of `.ci/run` (`S3_ENDPOINT`, `S3_ACCESS_KEY`, `S3_SECRET_KEY`); those tests skip
//! loudly without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use bulwark_repository::Repository;
use bulwark_testkit::cmd::run;
use bulwark_testkit::expect_binary;
use bulwark_testkit::skip::{require_s3, S3Env as Env};
use common::one_point;

fn bin_client() -> PathBuf {
    expect_binary("bulwark")
}

/// `bulwark-repo`, built next to `bulwark-tier` by `cargo test --workspace`.
fn bin_repo() -> PathBuf {
    expect_binary("bulwark-repo")
}

fn tier_cli(args: &[&str]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_bulwark-tier")), args)
}

struct Rig {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    creds: PathBuf,
    bucket: String,
    env: Env,
}

impl Rig {
    fn new(env: Env, prefix: &str) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        Repository::init(&dir, 7).unwrap();
        let creds = tmp.path().join("s3.credentials");
        env.write_credentials(&creds);
        let bucket = Env::new_bucket(prefix);
        Rig {
            tmp,
            dir,
            creds,
            bucket,
            env,
        }
    }
    fn target<'a>(&'a self, dir: &'a Path) -> Vec<&'a str> {
        vec![
            dir.to_str().unwrap(),
            "--endpoint",
            &self.env.endpoint,
            "--bucket",
            &self.bucket,
            "--credentials",
            self.creds.to_str().unwrap(),
        ]
    }
    /// `bulwark-tier add … --create-bucket` of the rig's repository.
    fn add(&self) {
        let mut a = vec!["add"];
        a.extend(self.target(&self.dir));
        a.push("--create-bucket");
        assert!(tier_cli(&a).status.success());
    }
    fn add_and_sync(&self) {
        self.add();
        assert!(tier_cli(&["sync", self.dir.to_str().unwrap()])
            .status
            .success());
    }
}

/// A [`Rig`] on the S3 store of the environment, with its repository opened; `None` after a
/// printed SKIP when there is no store.
fn s3_rig(test: &str, prefix: &str) -> Option<(Rig, Repository)> {
    let rig = Rig::new(require_s3(test)?, prefix);
    let repo = Repository::open(&rig.dir).unwrap();
    Some((rig, repo))
}

/// Issue 13 item 6: after `bulwark-tier import`, `bulwark list` said "no restore points yet" and
/// showed no job names. It now lists the tier-only points under their jobs.
#[test]
fn after_tier_import_bulwark_list_shows_tier_only_points_with_their_job_names() {
    let name = "after_tier_import_bulwark_list_shows_tier_only_points_with_their_job_names";
    let Some((rig, repo)) = s3_rig(name, "imp") else {
        return;
    };
    let p1 = one_point(&repo, "web01", 1);
    let p2 = one_point(&repo, "db01", 2);
    rig.add_and_sync();
    // The host is lost; a fresh repository is rebuilt from the bucket alone.
    let fresh = rig.tmp.path().join("rebuilt");
    let mut a = vec!["import"];
    a.extend(rig.target(&fresh));
    assert!(tier_cli(&a).status.success());
    let f = fresh.to_str().unwrap();
    let o = run(&bin_client(), &["list", "--repo", f]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("no restore points yet"), "{text}");
    for (job, p) in [("web01", &p1), ("db01", &p2)] {
        assert!(text.contains(&format!("job {job}")), "{text}");
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(p.as_str()))
            .expect(p);
        assert!(line.contains("in the tier only"), "{line}");
    }
    let o = run(
        &bin_client(),
        &["--json", "list", "--repo", f, "--job", "web01"],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["jobs"][0]["job"], "web01");
    assert_eq!(v["jobs"][0]["points"][0]["point"], p1.as_str());
    assert_eq!(v["jobs"][0]["points"][0]["location"], "tier");
    // The original repository lists its local copies as local, once each.
    let o = run(
        &bin_client(),
        &["--json", "list", "--repo", rig.dir.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let points: Vec<_> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|j| j["points"].as_array().unwrap().clone())
        .collect();
    assert_eq!(points.len(), 2, "{v}");
    assert!(points.iter().all(|p| p["location"] == "local"), "{v}");
}

/// Issue 13 item 6: `bulwark-tier verify` exits 1 and names a version planted over a
/// recorded key (it said all was well).
#[test]
fn tier_verify_exits_1_naming_a_version_planted_over_a_recorded_key() {
    let name = "tier_verify_exits_1_naming_a_version_planted_over_a_recorded_key";
    let Some((rig, repo)) = s3_rig(name, "plant") else {
        return;
    };
    let p = one_point(&repo, "web01", 3);
    rig.add_and_sync();
    let d = rig.dir.to_str().unwrap();
    assert_eq!(tier_cli(&["verify", d]).status.code(), Some(0));
    // Both status commands read the same local catalog; bulwark-repo links no S3 SDK.
    let o = tier_cli(&["--json", "status", d]);
    assert_eq!(o.status.code(), Some(0));
    let tiers = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["tiers"].clone();
    assert_eq!(tiers[0]["copied"], 1, "{tiers}");
    assert_eq!(tiers[0]["pending"], 0, "{tiers}");
    assert_eq!(tiers[0]["mode"], "copy", "{tiers}");
    let o = run(&bin_repo(), &["--json", "status", d]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tiers"], tiers);
    let o = run(&bin_repo(), &["status", d]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("tier s3: bucket ") && l.contains("1 copied, 0 pending")),
        "{text}"
    );
    let rec = bulwark_tier_s3::record::load_all(&rig.dir, "s3")
        .unwrap()
        .remove(0);
    let tier = bulwark_tier_s3::Tier::open(&repo, "s3").unwrap();
    let planted = tier
        .store()
        .put_locked(
            &rec.key,
            b"planted".to_vec(),
            rec.retain_until,
            &Default::default(),
        )
        .unwrap();
    let o = tier_cli(&["verify", d]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("BAD"))
        .expect("a BAD line");
    assert!(
        line.contains(&p) && line.contains(&planted) && line.contains("not the recorded one"),
        "{line}"
    );
}

/// `bulwark-repo tier …` moved to `bulwark-tier …`: the old spelling says so and exits 2, and
/// `bulwark-tier status` of a repository without a tier says how to add one (no store needed).
#[test]
fn the_old_bulwark_repo_tier_spelling_names_bulwark_tier_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    Repository::init(&dir, 7).unwrap();
    let d = dir.to_str().unwrap();
    let o = run(&bin_repo(), &["tier", "sync", d]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("bulwark-tier sync {d}")), "{err}");
    let o = tier_cli(&["status", d]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("tiers: none") && text.contains("bulwark-tier add"),
        "{text}"
    );
    let o = tier_cli(&["--json", "status", d]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tiers"], serde_json::json!([]));
    let o = tier_cli(&["sync", d]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no tier; add one with `bulwark-tier add"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A restore point damaged on the local disk is not copied to the tier, where its copy would
/// be locked and could not be replaced: sync exits 1 naming it, it stays pending, the healthy
/// points are copied, and once the file is repaired the next sync copies it.
#[test]
fn tier_sync_refuses_to_lock_a_damaged_point_and_copies_it_once_repaired() {
    let name = "tier_sync_refuses_to_lock_a_damaged_point_and_copies_it_once_repaired";
    let Some((rig, repo)) = s3_rig(name, "dmg") else {
        return;
    };
    let good = one_point(&repo, "web01", 1);
    let bad = one_point(&repo, "db01", 2);
    let path = repo.scan_job("db01").unwrap().points[0].path.clone();
    let e = bulwark_format::PointReader::open(std::fs::File::open(&path).unwrap())
        .unwrap()
        .map[1];
    bulwark_testkit::fs::flip_byte(&path, e.offset + 100, 0x40);
    rig.add();
    let d = rig.dir.to_str().unwrap();
    let o = tier_cli(&["--json", "sync", d]);
    assert_eq!(o.status.code(), Some(1), "{}", bulwark_testkit::text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["uploaded"], serde_json::json!([good]));
    let damaged = v["damaged"][0].as_str().unwrap();
    assert!(
        damaged.contains(&bad) && damaged.contains(&format!("block {}", e.block)),
        "{damaged}"
    );
    let status = tier_cli(&["status", d]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("1 copied, 1 pending"), "{text}");
    // Repaired (restored from elsewhere, here: the byte put back): copied by the next sync.
    bulwark_testkit::fs::flip_byte(&path, e.offset + 100, 0x40);
    let o = tier_cli(&["--json", "sync", d]);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["uploaded"], serde_json::json!([bad]));
    assert_eq!(v["damaged"], serde_json::json!([]));
}

/// A `bulwark-tier import` that fails before importing anything (here: nothing listens at
/// the endpoint) leaves no empty repository folder behind, so the retry starts clean.
#[test]
fn a_failed_import_leaves_no_folder_behind() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("s3.credentials");
    std::fs::write(&creds, "access_key_id = \"x\"\nsecret_access_key = \"y\"\n").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tmp.path().join("rebuilt");
    let o = tier_cli(&[
        "import",
        dir.to_str().unwrap(),
        "--endpoint",
        &format!("http://127.0.0.1:{port}"),
        "--bucket",
        "bulwark-import-test",
        "--credentials",
        creds.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", bulwark_testkit::text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot reach the store"),
        "{}",
        bulwark_testkit::text(&o)
    );
    assert!(!dir.exists(), "the failed import left {}", dir.display());
}
