//! The S3 tier against a real store with Object Lock (Ceph RGW from
//! `shared/s3/ci-s3-objectlock.sh`, started by `.ci/run`). Tests that need it read
//! `S3_ENDPOINT`, `S3_ACCESS_KEY` and `S3_SECRET_KEY` and skip loudly when they are absent.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_engine::{backup_local, restore_local, BackupOptions, RestoreOptions};
use bulwark_repository::Repository;
use bulwark_testkit::skip::{require_s3, S3Env};
use bulwark_testkit::Rng;
use bulwark_tier_s3::{
    import, record, settings, Store, SyncOptions, Tier, TierError, TierMode, TierSettings,
};

/// What a holder of the bucket's keys can do: a newer version with `data` over `rec`'s key,
/// locked as long as the recorded one; returns the planted version's id.
fn plant(store: &Store, rec: &record::ObjectRecord, data: &[u8]) -> String {
    store
        .put_locked(
            &rec.key,
            data.to_vec(),
            rec.retain_until,
            &Default::default(),
        )
        .unwrap()
}

fn now() -> i64 {
    bulwark_time::UnixTime::now().secs()
}

fn unique(prefix: &str) -> String {
    S3Env::new_bucket(prefix)
}

fn creds_file(dir: &Path, access: &str, secret: &str) -> PathBuf {
    let p = dir.join("s3.credentials");
    S3Env {
        endpoint: String::new(),
        access: access.into(),
        secret: secret.into(),
    }
    .write_credentials(&p);
    p
}

fn tier_settings(env: &S3Env, repo: &Repository, bucket: &str, creds: &Path) -> TierSettings {
    TierSettings {
        name: "s3".into(),
        endpoint: env.endpoint.clone(),
        bucket: bucket.into(),
        region: "us-east-1".into(),
        mode: TierMode::Copy,
        credentials: creds.to_path_buf(),
        prefix: format!("bulwark/{}", repo.config().id),
        part_size: settings::MIN_PART_SIZE,
        max_attempts: 3,
    }
}

fn new_bucket(s: &TierSettings, creds: &Path, lock: bool) {
    let c =
        bulwark_tier_s3::Credentials::load(creds, settings::repo_owner(creds).unwrap()).unwrap();
    Store::new(s, &c).unwrap().create_bucket(lock).unwrap();
}

fn backup(repo: &Repository, image: &Path) -> String {
    let s = backup_local(repo, "vm1", image, &BackupOptions::default(), &|_| {}).unwrap();
    s.sealed.meta.point.to_hex()
}

/// A disk image of `mib` MiB: random data (incompressible, so files are that large too)
/// followed by zeros.
fn write_image(path: &Path, rng: &mut Rng, mib: usize) {
    let mut data = rng.bytes(mib << 20);
    data.extend(std::iter::repeat_n(0u8, 1 << 20));
    std::fs::write(path, data).unwrap();
}

fn change_image(path: &Path, rng: &mut Rng) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(&rng.bytes(256 << 10)).unwrap();
}

fn restore_to(repo: &Repository, point: Option<&str>, out: &Path) {
    let p = point.map(|p| p.parse().unwrap());
    restore_local(repo, "vm1", p, out, &RestoreOptions::default(), &|_| {}).unwrap();
}

/// A new repository in a temporary folder, the store's credentials beside it, and the settings
/// (after `tweak`) of a new bucket named from `prefix`, with Object Lock when `lock`; the tier
/// is not added yet.
fn new_bucket_for(
    env: &S3Env,
    prefix: &str,
    lock: bool,
    tweak: impl FnOnce(&mut TierSettings),
) -> (tempfile::TempDir, Repository, PathBuf, TierSettings) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(&tmp.path().join("repo"), 7).unwrap();
    let creds = creds_file(tmp.path(), &env.access, &env.secret);
    let mut s = tier_settings(env, &repo, &unique(prefix), &creds);
    tweak(&mut s);
    new_bucket(&s, &creds, lock);
    (tmp, repo, creds, s)
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    repo: Repository,
    tier: Tier,
    image: PathBuf,
    creds: PathBuf,
    env: S3Env,
    rng: Rng,
}

fn setup(env: S3Env, seed: u64, tweak: impl FnOnce(&mut TierSettings)) -> Setup {
    let (tmp, repo, creds, s) = new_bucket_for(&env, "bw", true, tweak);
    let dir = tmp.path().to_path_buf();
    let (tier, report) = Tier::add(&repo, s).unwrap();
    assert!(report.probe.delete.is_err() && report.probe.shorten.is_err());
    Setup {
        image: dir.join("disk.img"),
        _tmp: tmp,
        dir,
        repo,
        tier,
        creds,
        env,
        rng: Rng::new(seed),
    }
}

#[test]
fn chain_is_locked_in_compliance_and_restores_from_the_bucket_alone() {
    let Some(env) = require_s3("chain_is_locked_in_compliance_and_restores_from_the_bucket_alone")
    else {
        return;
    };
    let mut t = setup(env, 0x9e37_79b9_7f4a_7c15, |_| {});
    write_image(&t.image, &mut t.rng, 3);
    let p1 = backup(&t.repo, &t.image);
    let day1 = std::fs::read(&t.image).unwrap();
    change_image(&t.image, &mut t.rng);
    let p2 = backup(&t.repo, &t.image);
    let r = t.tier.sync(&t.repo, &SyncOptions::default()).unwrap();
    assert_eq!(r.uploaded, vec![p1.clone(), p2.clone()]);
    assert!(r.unguarded);

    // Mode and retain-until read back from the store: creation of the chain's last point
    // plus the 7-day period, by the store's clock.
    let recs = record::load_all(t.repo.root(), "s3").unwrap();
    assert_eq!(recs.len(), 2);
    let last_created = t.repo.scan_job("vm1").unwrap().points[1]
        .meta
        .created_unix_secs;
    let store = t.tier.store();
    for rec in &recs {
        let (mode, until) = store
            .get_retention(&rec.key, &rec.version_id)
            .unwrap()
            .unwrap();
        assert_eq!(mode, "COMPLIANCE");
        let want = last_created + 7 * 86_400 + store.skew().unwrap_or(0);
        assert!(
            (until - want).abs() <= 2,
            "retain-until {until}, expected {want}"
        );
    }

    // The store refuses to delete or unlock a copy, and a delete marker or an overwrite planted
    // with the bucket's keys does not change what is restored.
    let victim = &recs[0];
    let e = store
        .delete_version(&victim.key, &victim.version_id)
        .unwrap_err();
    assert_eq!(e.code(), Some("AccessDenied"), "{e}");
    let e = store
        .put_retention(&victim.key, &victim.version_id, victim.retain_until - 3600)
        .unwrap_err();
    assert_eq!(e.code(), Some("AccessDenied"), "{e}");
    store.delete_latest(&recs[1].key).unwrap();
    plant(store, victim, b"not a restore point");
    // `tier verify` names the planted version (a delete marker is not a version).
    let v = t.tier.verify().unwrap();
    assert_eq!(v.checked, 2);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert_eq!(v.problems[0].key, victim.key);
    assert_ne!(v.problems[0].version_id, victim.version_id);

    // The host is lost: a fresh repository rebuilt from the bucket alone restores both
    // points byte-identical.
    let fresh = t.dir.join("rebuilt");
    let mut s = tier_settings(&t.env, &t.repo, &t.tier.settings.bucket, &t.creds);
    s.prefix = String::new();
    let ir = import(&fresh, s, None).unwrap();
    assert_eq!(ir.source_id, t.repo.config().id);
    assert_eq!(ir.imported, vec![p1.clone(), p2.clone()]);
    // The oldest locked version is the original: the planted overwrite is not used.
    let imported = record::load_all(&fresh, "s3").unwrap();
    assert_eq!(imported[0].version_id, victim.version_id);
    assert_eq!(imported[1].version_id, recs[1].version_id);
    let mut rebuilt = Repository::open(&fresh).unwrap();
    // The copies stay under the lost repository's prefix; the rebuilt one writes under its own.
    assert_eq!(ir.source_prefix, t.tier.settings.prefix);
    assert_eq!(ir.prefix, format!("bulwark/{}", rebuilt.config().id));
    assert_ne!(ir.prefix, ir.source_prefix);
    assert!(rebuilt.jobs().unwrap().is_empty());
    bulwark_tier_s3::attach(&mut rebuilt).unwrap().unwrap();
    assert_eq!(rebuilt.jobs().unwrap(), vec!["vm1".to_string()]);
    let out = t.dir.join("out2.img");
    restore_to(&rebuilt, None, &out);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&t.image).unwrap()
    );
    let out = t.dir.join("out1.img");
    restore_to(&rebuilt, Some(&p1), &out);
    assert_eq!(std::fs::read(&out).unwrap(), day1);
    let vr = rebuilt.verify(None, 2, &|_| {}).unwrap();
    assert!(vr.is_clean(), "{:?}", vr.damaged);
    assert_eq!(vr.points_checked, 2);
}

/// Issue 13 item 6: a newer version planted over a recorded key went unreported by `tier
/// verify`. It is now a finding naming the planted version, while restores from the tier
/// stay pinned to the recorded one.
#[test]
fn tier_verify_reports_a_planted_version_over_a_recorded_key_and_restores_stay_pinned() {
    let name = "tier_verify_reports_a_planted_version_over_a_recorded_key_and_restores_stay_pinned";
    let Some(env) = require_s3(name) else {
        return;
    };
    let mut t = setup(env, 0x005e_ed0f_da7a, |_| {});
    write_image(&t.image, &mut t.rng, 1);
    let p1 = backup(&t.repo, &t.image);
    t.tier.sync(&t.repo, &SyncOptions::default()).unwrap();
    let v = t.tier.verify().unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let rec = record::load_all(t.repo.root(), "s3").unwrap().remove(0);
    let planted = plant(
        t.tier.store(),
        &rec,
        b"planted by a holder of the bucket's keys",
    );
    let v = t.tier.verify().unwrap();
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    let p = &v.problems[0];
    assert_eq!(
        (p.point.as_str(), p.key.as_str()),
        (p1.as_str(), rec.key.as_str())
    );
    assert_ne!(p.version_id, rec.version_id);
    assert!(p.why.contains("not the recorded one"), "{}", p.why);
    assert_eq!(p.version_id, planted);
    // The local file is gone: the restore reads the recorded version, not the planted one.
    let mut repo = Repository::open(t.repo.root()).unwrap();
    bulwark_tier_s3::attach(&mut repo).unwrap().unwrap();
    let local = repo.scan_job("vm1").unwrap().points.remove(0).path;
    let out = t.dir.join("out.img");
    // Unguarded repository: the file is mutable; move it away to force a tier read.
    std::fs::rename(&local, t.dir.join("moved.bwrp")).unwrap();
    restore_to(&repo, Some(&p1), &out);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&t.image).unwrap()
    );
}

#[test]
fn retention_is_extended_when_the_chain_grows() {
    let Some(env) = require_s3("retention_is_extended_when_the_chain_grows") else {
        return;
    };
    let mut t = setup(env, 0x1234_5678_9abc_def1, |_| {});
    write_image(&t.image, &mut t.rng, 1);
    let p1 = backup(&t.repo, &t.image);
    t.tier.sync(&t.repo, &SyncOptions::default()).unwrap();
    let before = record::load_all(t.repo.root(), "s3").unwrap()[0].clone();
    std::thread::sleep(Duration::from_millis(2100));
    change_image(&t.image, &mut t.rng);
    backup(&t.repo, &t.image);
    let r = t.tier.sync(&t.repo, &SyncOptions::default()).unwrap();
    assert_eq!((r.uploaded.len(), r.already, r.extended), (1, 1, 1));
    let after = record::load_all(t.repo.root(), "s3").unwrap();
    let first = after.iter().find(|r| r.point == p1).unwrap();
    assert_eq!(first.version_id, before.version_id);
    assert!(
        first.retain_until >= before.retain_until + 2,
        "{first:?} vs {before:?}"
    );
    let (mode, until) = t
        .tier
        .store()
        .get_retention(&first.key, &first.version_id)
        .unwrap()
        .unwrap();
    assert_eq!((mode.as_str(), until), ("COMPLIANCE", first.retain_until));
    // Nothing to do on a second run.
    let r = t.tier.sync(&t.repo, &SyncOptions::default()).unwrap();
    assert_eq!((r.uploaded.len(), r.already, r.extended), (0, 2, 0));
}

#[test]
fn move_mode_frees_expired_local_files_and_restores_read_the_tier() {
    let Some(env) = require_s3("move_mode_frees_expired_local_files_and_restores_read_the_tier")
    else {
        return;
    };
    let mut t = setup(env, 0x5555_aaaa_1234_0001, |s| s.mode = TierMode::Move);
    write_image(&t.image, &mut t.rng, 2);
    backup(&t.repo, &t.image);
    change_image(&t.image, &mut t.rng);
    backup(&t.repo, &t.image);
    // Before the local expiry nothing is freed.
    let r = t.tier.sync(&t.repo, &SyncOptions::default()).unwrap();
    assert!(r.moved.is_empty());
    let later = SyncOptions {
        now: Some(now() + 8 * 86_400),
    };
    let r = t.tier.sync(&t.repo, &later).unwrap();
    assert_eq!(r.moved.len(), 2);
    assert!(t.repo.scan_job("vm1").unwrap().points.is_empty());
    let mut repo = Repository::open(t.repo.root()).unwrap();
    bulwark_tier_s3::attach(&mut repo).unwrap();
    let out = t.dir.join("out.img");
    restore_to(&repo, None, &out);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&t.image).unwrap()
    );
}

/// A TCP proxy in front of the store that can be slowed down or cut, to play an endpoint
/// that is slow or goes down in the middle of an upload.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    /// Bytes forwarded towards the store.
    up_bytes: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &str, delay_per_64k: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let down = Arc::new(AtomicBool::new(false));
        let up_bytes = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, u, c) = (down.clone(), up_bytes.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                c.lock().unwrap().push(client.try_clone().unwrap());
                c.lock().unwrap().push(server.try_clone().unwrap());
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let u = u.clone();
                std::thread::spawn(move || pump(client, server, Some(u), delay_per_64k));
                std::thread::spawn(move || pump(s2, c2, None, Duration::ZERO));
            }
        });
        Proxy {
            port,
            down,
            up_bytes,
            conns,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and refuses new ones.
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>, delay: Duration) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(c) = &count {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn endpoint_outage_mid_upload_resumes_without_loss_or_double_counting() {
    let Some(env) =
        require_s3("endpoint_outage_mid_upload_resumes_without_loss_or_double_counting")
    else {
        return;
    };
    // About 30 MB/s per connection through the proxy: a 31 MiB point takes long enough to be cut mid-way.
    let proxy = Proxy::start(&env.endpoint, Duration::from_millis(2));
    let via = proxy.endpoint();
    let mut t = setup(env, 0x0dd_ba11_cafe_f00d, |s| s.endpoint = via.clone());
    write_image(&t.image, &mut t.rng, 30);
    let p1 = backup(&t.repo, &t.image);
    let size = t.repo.scan_job("vm1").unwrap().points[0].file_size;
    assert!(size > 3 * settings::MIN_PART_SIZE, "{size}");

    let start = proxy.up_bytes.load(Ordering::SeqCst);
    let cutter = {
        let (up, down, conns) = (
            proxy.up_bytes.clone(),
            proxy.down.clone(),
            proxy.conns.clone(),
        );
        std::thread::spawn(move || {
            // Four parts go up at a time: cut once the first four must have arrived.
            while up.load(Ordering::SeqCst) < start + 5 * settings::MIN_PART_SIZE {
                std::thread::sleep(Duration::from_millis(5));
            }
            down.store(true, Ordering::SeqCst);
            for c in conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        })
    };
    let e = t.tier.sync(&t.repo, &SyncOptions::default()).unwrap_err();
    cutter.join().unwrap();
    eprintln!("sync during the outage: {e}");
    assert!(record::load_all(t.repo.root(), "s3").unwrap().is_empty());
    let st = bulwark_tier_s3::status(&t.repo).unwrap();
    assert_eq!(
        (st[0].copied, st[0].pending, st[0].uploads_in_progress),
        (0, 1, 1)
    );

    // Still down: a new sync fails cleanly and records nothing.
    let e = t.tier.sync(&t.repo, &SyncOptions::default()).unwrap_err();
    assert!(e.to_string().contains("cannot reach the store"), "{e}");

    // Back up: the upload resumes from the parts the store kept.
    proxy.restore();
    let r = t.tier.sync(&t.repo, &SyncOptions::default()).unwrap();
    assert_eq!(r.uploaded, vec![p1.clone()]);
    assert!(r.parts_resumed >= 1, "{r:?}");
    assert_eq!(
        r.parts_resumed + r.parts_uploaded,
        size.div_ceil(settings::MIN_PART_SIZE)
    );
    let recs = record::load_all(t.repo.root(), "s3").unwrap();
    assert_eq!(recs.len(), 1);
    assert!(recs[0].multipart);
    // Multipart uploads get their retention set explicitly and read back.
    let (mode, _) = t
        .tier
        .store()
        .get_retention(&recs[0].key, &recs[0].version_id)
        .unwrap()
        .unwrap();
    assert_eq!(mode, "COMPLIANCE");
    let r = t.tier.sync(&t.repo, &SyncOptions::default()).unwrap();
    assert_eq!((r.uploaded.len(), r.adopted.len(), r.already), (0, 0, 1));
    let v = t.tier.verify().unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let st = bulwark_tier_s3::status(&t.repo).unwrap();
    assert_eq!(
        (st[0].copied, st[0].pending, st[0].uploads_in_progress),
        (1, 0, 0)
    );
    proxy.cut();
}

#[test]
fn a_closed_port_fails_with_a_clear_error_after_retries() {
    let Some(env) = require_s3("a_closed_port_fails_with_a_clear_error_after_retries") else {
        return;
    };
    let t = setup(env, 7, |_| {});
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut s = t.tier.settings.clone();
    s.endpoint = format!("http://127.0.0.1:{port}");
    s.save(t.repo.root()).unwrap();
    let tier = Tier::open(&t.repo, "s3").unwrap();
    let started = std::time::Instant::now();
    let e = tier.sync(&t.repo, &SyncOptions::default()).unwrap_err();
    assert!(e.to_string().contains("cannot reach the store"), "{e}");
    // Retried with backoff, not forever.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn wrong_keys_are_refused_with_a_clear_error() {
    let Some(env) = require_s3("wrong_keys_are_refused_with_a_clear_error") else {
        return;
    };
    let (tmp, repo, _good, s) = new_bucket_for(&env, "bw-keys", true, |_| {});
    for (ak, sk) in [
        (env.access.as_str(), "wrong-secret"),
        ("NOSUCHKEY", env.secret.as_str()),
    ] {
        let bad = creds_file(tmp.path(), ak, sk);
        let e = Tier::add(&repo, tier_settings(&env, &repo, &s.bucket, &bad)).unwrap_err();
        assert!(matches!(e, TierError::BadCredentials { .. }), "{e:?}");
        assert!(e.to_string().contains("refused the credentials"), "{e}");
    }
    assert!(TierSettings::names(repo.root()).unwrap().is_empty());
}

#[test]
fn a_bucket_without_object_lock_is_refused_with_how_to_create_one() {
    let Some(env) = require_s3("a_bucket_without_object_lock_is_refused_with_how_to_create_one")
    else {
        return;
    };
    let (_tmp, repo, creds, s) = new_bucket_for(&env, "bw-nolock", false, |_| {});
    let e = Tier::add(&repo, s).unwrap_err();
    assert!(matches!(e, TierError::NoObjectLock { .. }), "{e:?}");
    assert!(
        e.to_string().contains("--object-lock-enabled-for-bucket"),
        "{e}"
    );
    let missing = tier_settings(&env, &repo, &unique("bw-missing"), &creds);
    let e = Tier::add(&repo, missing).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn credentials_readable_by_others_are_refused() {
    // No store needed: the file is checked before any request.
    let tmp = tempfile::tempdir().unwrap();
    let p = creds_file(tmp.path(), "a", "b");
    let me = settings::repo_owner(tmp.path()).unwrap();
    assert!(bulwark_tier_s3::Credentials::load(&p, me).is_ok());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = bulwark_tier_s3::Credentials::load(&p, me).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = bulwark_tier_s3::Credentials::load(&p, me + 1).unwrap_err();
    assert!(e.to_string().contains("owned by uid"), "{e}");
}
