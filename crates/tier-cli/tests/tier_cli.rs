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

/// `bulwark-tier --json import …` of the rig's bucket into `dir`, with `extra` arguments;
/// the output and its JSON (`Null` when it printed none).
fn import_json(rig: &Rig, dir: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let mut a = vec!["--json", "import"];
    a.extend(rig.target(dir));
    a.extend(extra);
    let o = tier_cli(&a);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_default();
    (o, v)
}

fn repo_id(dir: &Path) -> String {
    Repository::open(dir).unwrap().config().id.clone()
}

/// `bulwark restore --repo dir --job job out` into a new `out` (which may fail).
fn try_restore(dir: &Path, job: &str, out: &Path) -> Output {
    let _ = std::fs::remove_file(out);
    run(
        &bin_client(),
        &[
            "restore",
            "--repo",
            dir.to_str().unwrap(),
            "--job",
            job,
            out.to_str().unwrap(),
        ],
    )
}

/// [`try_restore`], which must succeed.
fn restore(dir: &Path, job: &str, out: &Path) {
    let o = try_restore(dir, job, out);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
}

/// QA: `bulwark-tier import` kept the lost repository's key prefix, so the rebuilt repository
/// (another id) synced its new points under `bulwark/<lost id>/`, mixed with the lost host's
/// objects — and with a lost host that is still running (a recovery drill) two repositories
/// wrote under one prefix, which the next import merged as one. The documented flow now runs
/// end to end with each repository under its own prefix: host lost → import into a new
/// repository → restore from the tier → back up and sync under the new id, while the old
/// host's later copies stay alone under its prefix; status and verify see both.
#[test]
fn after_tier_import_the_rebuilt_repository_syncs_under_its_own_prefix_never_the_lost_ones() {
    let name =
        "after_tier_import_the_rebuilt_repository_syncs_under_its_own_prefix_never_the_lost_ones";
    let Some((rig, old)) = s3_rig(name, "own") else {
        return;
    };
    let p1 = one_point(&old, "web01", 1);
    rig.add_and_sync();
    let old_prefix = format!("bulwark/{}", old.config().id);

    // The host is lost: a new repository is rebuilt from the bucket alone.
    let new = rig.tmp.path().join("rebuilt");
    let (o, v) = import_json(&rig, &new, &[]);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let new_id = repo_id(&new);
    let new_prefix = format!("bulwark/{new_id}");
    assert_ne!(new_id, old.config().id);
    let settings = bulwark_tier_s3::TierSettings::load(&new, "s3").unwrap();
    assert_eq!(
        settings.prefix, new_prefix,
        "the import kept the lost prefix"
    );
    assert_eq!(v["source_prefix"], old_prefix.as_str(), "{v}");
    assert_eq!(v["prefix"], new_prefix.as_str(), "{v}");
    assert_eq!(v["imported"], serde_json::json!([p1]), "{v}");
    // The text says which prefix each repository uses, and why.
    let mut a = vec!["import"];
    a.extend(rig.target(&new));
    let o = tier_cli(&a);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("this repository's id is {new_id}"))
            && text.contains(&format!("under {new_prefix}/"))
            && text.contains(&format!("stay under {old_prefix}/"))
            && text.contains("1 were recorded already"),
        "{text}"
    );

    // Restore a point from the tier: byte-identical to what the lost host restores.
    restore(&rig.dir, "web01", &rig.tmp.path().join("a.img"));
    restore(&new, "web01", &rig.tmp.path().join("b.img"));
    assert_eq!(
        std::fs::read(rig.tmp.path().join("a.img")).unwrap(),
        std::fs::read(rig.tmp.path().join("b.img")).unwrap()
    );

    // Continue: the rebuilt repository backs up and syncs; the lost host, still running in
    // this drill, does too.
    let p2 = one_point(&Repository::open(&new).unwrap(), "web01", 2);
    let n = new.to_str().unwrap();
    let o = tier_cli(&["--json", "sync", n]);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["uploaded"], serde_json::json!([p2]), "{v}");
    let p3 = one_point(&old, "web01", 3);
    assert!(tier_cli(&["sync", rig.dir.to_str().unwrap()])
        .status
        .success());
    let rec = |dir: &Path, p: &str| {
        bulwark_tier_s3::record::load_all(dir, "s3")
            .unwrap()
            .into_iter()
            .find(|r| r.point == p)
            .unwrap()
            .key
    };
    assert!(rec(&new, &p2).starts_with(&format!("{new_prefix}/")));
    assert!(rec(&new, &p1).starts_with(&format!("{old_prefix}/")));
    assert!(rec(&rig.dir, &p3).starts_with(&format!("{old_prefix}/")));
    // Every restore point under the lost repository's prefix is one of its own.
    let tier = bulwark_tier_s3::Tier::open(&old, "s3").unwrap();
    let mut under_old: Vec<String> = tier
        .store()
        .list_versions(&format!("{old_prefix}/"))
        .unwrap()
        .into_iter()
        .map(|v| v.key)
        .filter(|k| !k.contains("/probe/"))
        .collect();
    under_old.sort();
    assert_eq!(under_old, vec![rec(&rig.dir, &p1), rec(&rig.dir, &p3)]);

    // Status and verify of the rebuilt repository: its own copy and the imported one.
    let o = tier_cli(&["--json", "status", n]);
    let t = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["tiers"][0].clone();
    assert_eq!(t["prefix"], new_prefix.as_str(), "{t}");
    assert_eq!(t["imported_from"], serde_json::json!([old_prefix]), "{t}");
    assert_eq!(
        (&t["copied"], &t["pending"], &t["remote_only"]),
        (&2.into(), &0.into(), &1.into()),
        "{t}"
    );
    let o = tier_cli(&["--json", "verify", n]);
    assert_eq!(o.status.code(), Some(0), "{}", bulwark_testkit::text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["checked"], 2, "{v}");

    // The rebuilt host is lost too: both repositories are in the bucket, each named, and
    // imported one after the other into the same folder.
    let third = rig.tmp.path().join("third");
    let (o, _) = import_json(&rig, &third, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&new_id) && err.contains(&old.config().id) && err.contains("--source-id"),
        "{err}"
    );
    assert!(!third.exists());
    for (id, points) in [(&new_id, vec![&p2]), (&old.config().id, vec![&p1, &p3])] {
        let (o, v) = import_json(&rig, &third, &["--source-id", id]);
        assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
        assert_eq!(v["imported"], serde_json::json!(points), "{v}");
    }
    let o = tier_cli(&["--json", "verify", third.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", bulwark_testkit::text(&o));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["checked"],
        3
    );
}

/// Two repositories on the store, each with one point synced to a tier `s3` of its own
/// bucket: "lost" (job web01) and "mine" (job db01). `None` after a printed SKIP.
#[allow(clippy::type_complexity)]
fn lost_and_mine(test: &str) -> Option<((Rig, Repository), (Rig, Repository))> {
    let (lost, lost_repo) = s3_rig(test, "lost")?;
    one_point(&lost_repo, "web01", 1);
    lost.add_and_sync();
    let (mine, mine_repo) = s3_rig(test, "mine").unwrap();
    one_point(&mine_repo, "db01", 2);
    mine.add_and_sync();
    Some(((lost, lost_repo), (mine, mine_repo)))
}

/// QA: importing into an existing repository whose tier `s3` copies to another bucket
/// rewrote that tier's settings to the imported bucket, so the repository's own records named
/// keys the new bucket does not hold (`tier verify`: NotFound) and its next sync wrote under
/// the imported repository's prefix. It is refused, changing nothing; `--name` imports into a
/// tier of its own.
#[test]
fn tier_import_into_a_tier_of_another_bucket_is_refused_and_changes_nothing() {
    let name = "tier_import_into_a_tier_of_another_bucket_is_refused_and_changes_nothing";
    let Some(((lost, _), (mine, mine_repo))) = lost_and_mine(name) else {
        return;
    };
    let settings_file = mine.dir.join("tiers/s3.toml");
    let before = std::fs::read(&settings_file).unwrap();
    let (o, _) = import_json(&lost, &mine.dir, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", bulwark_testkit::text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("copies to bucket {}", mine.bucket)) && err.contains("--name"),
        "{err}"
    );
    assert_eq!(std::fs::read(&settings_file).unwrap(), before);
    let d = mine.dir.to_str().unwrap();
    assert_eq!(tier_cli(&["verify", d]).status.code(), Some(0));
    let (o, v) = import_json(&lost, &mine.dir, &["--name", "lost"]);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    assert_eq!(
        v["prefix"],
        format!("bulwark/{}", mine_repo.config().id).as_str()
    );
    assert_eq!(std::fs::read(&settings_file).unwrap(), before);
    for tier in ["s3", "lost"] {
        let o = tier_cli(&["verify", d, "--name", tier]);
        assert_eq!(o.status.code(), Some(0), "{}", bulwark_testkit::text(&o));
    }
}

/// A catalog written by an earlier `bulwark-tier import`, which kept the lost repository's
/// prefix in the tier's settings: the next sync copies under the repository's own prefix,
/// says so, and corrects the setting.
#[test]
fn a_tier_naming_another_repositorys_prefix_syncs_under_its_own_and_says_so() {
    let name = "a_tier_naming_another_repositorys_prefix_syncs_under_its_own_and_says_so";
    let Some((rig, old)) = s3_rig(name, "stale") else {
        return;
    };
    one_point(&old, "web01", 1);
    rig.add_and_sync();
    let new = rig.tmp.path().join("rebuilt");
    let (o, _) = import_json(&rig, &new, &[]);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    // What the earlier import wrote.
    let mut s = bulwark_tier_s3::TierSettings::load(&new, "s3").unwrap();
    let old_prefix = format!("bulwark/{}", old.config().id);
    s.prefix = old_prefix.clone();
    s.save(&new).unwrap();
    let p = one_point(&Repository::open(&new).unwrap(), "web01", 2);
    let o = tier_cli(&["sync", new.to_str().unwrap()]);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let own = format!("bulwark/{}", repo_id(&new));
    let r = bulwark_tier_s3::record::load_all(&new, "s3")
        .unwrap()
        .into_iter()
        .find(|r| r.point == p)
        .unwrap();
    assert!(r.key.starts_with(&format!("{own}/")), "{}", r.key);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("key prefix {old_prefix}/ of another repository"))
            && err.contains(&format!("under its own prefix {own}/")),
        "{err}"
    );
    assert_eq!(
        bulwark_tier_s3::TierSettings::load(&new, "s3")
            .unwrap()
            .prefix,
        own
    );
    let o = tier_cli(&["sync", new.to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("another repository"));
}

/// The restore point files of `job` in the local store of `dir`.
fn local_point_files(dir: &Path, job: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.join("store").join(job)];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "bwrp") {
                out.push(p);
            }
        }
    }
    out
}

/// Restores read only the first tier by name: with the lost host's copies imported as a
/// second tier named before the repository's own, a point whose local file was gone could
/// not be restored from its own copy, and a second copy in another store was no help when
/// the first store refused. Now every tier is read: a point comes from the first tier that
/// records it, and from the next one recording it when that copy cannot be had.
#[test]
fn restores_read_every_tier_and_fall_back_when_one_store_refuses() {
    let name = "restores_read_every_tier_and_fall_back_when_one_store_refuses";
    let Some(((lost, _), (mine, _))) = lost_and_mine(name) else {
        return;
    };
    let d = mine.dir.to_str().unwrap();
    let out = mine.tmp.path().join("out.img");
    let o = try_restore(&mine.dir, "db01", &out);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let db01 = std::fs::read(&out).unwrap();
    let o = try_restore(&lost.dir, "web01", &out);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let web01 = std::fs::read(&out).unwrap();
    // The lost host's copies as tier "lost" (before "s3" by name); a second copy of this
    // repository's own points in another bucket, tier "s3b", with credentials of its own.
    let (o, _) = import_json(&lost, &mine.dir, &["--name", "lost"]);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let creds_b = mine.tmp.path().join("b.credentials");
    mine.env.write_credentials(&creds_b);
    let bucket_b = Env::new_bucket("mineb");
    let o = tier_cli(&[
        "add",
        d,
        "--name",
        "s3b",
        "--endpoint",
        &mine.env.endpoint,
        "--bucket",
        &bucket_b,
        "--credentials",
        creds_b.to_str().unwrap(),
        "--create-bucket",
    ]);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let o = tier_cli(&["sync", d, "--name", "s3b"]);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    let files = local_point_files(&mine.dir, "db01");
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::remove_file(&files[0]).unwrap();
    // Both jobs are listed with their tier-only points, each once.
    let o = run(&bin_client(), &["--json", "list", "--repo", d]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for j in v["jobs"].as_array().unwrap() {
        let points = j["points"].as_array().unwrap();
        assert_eq!(points.len(), 1, "{v}");
        assert_eq!(points[0]["location"], "tier", "{v}");
    }
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2, "{v}");

    // web01 only tier "lost" holds; db01's copy comes from "s3", the first recording it.
    let o = try_restore(&mine.dir, "web01", &out);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    assert!(std::fs::read(&out).unwrap() == web01);
    let o = try_restore(&mine.dir, "db01", &out);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    assert!(std::fs::read(&out).unwrap() == db01);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("after:"), "{err}");

    // The store refuses tier "s3"'s keys: the copy in "s3b" is read, and the restore says so.
    std::fs::write(
        &mine.creds,
        "access_key_id = \"REVOKED\"\nsecret_access_key = \"REVOKEDREVOKEDREVOKED\"\n",
    )
    .unwrap();
    let o = try_restore(&mine.dir, "db01", &out);
    assert!(o.status.success(), "{}", bulwark_testkit::text(&o));
    assert!(std::fs::read(&out).unwrap() == db01);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("bucket {bucket_b}")) && err.contains(&mine.bucket),
        "{err}"
    );

    // Both refused: the restore fails naming each tier's refusal, and writes no target.
    std::fs::copy(&mine.creds, &creds_b).unwrap();
    let o = try_restore(&mine.dir, "db01", &out);
    assert_eq!(o.status.code(), Some(2), "{}", bulwark_testkit::text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&mine.bucket) && err.contains(&bucket_b),
        "{err}"
    );
    assert!(!out.exists());
}
