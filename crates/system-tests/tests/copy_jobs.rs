//! Backup copy jobs between two real repositories, each with its own unprivileged service
//! user, its own XFS loop filesystem, its own `bulwark-immutd` (chattr +i, its own period) and
//! its own `bulwark-repo serve` (real TLS on 127.0.0.1): push, pull, local to local, resume
//! after a killed copy, an encrypted chain, `--verify` against tampering, and a copier's
//! identity trying to delete, overwrite or shorten anything on the target. Root only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use bulwark_copy::{LocalSource, NetTarget, Source, Target};
use bulwark_remote::RemoteAddr;
use bulwark_repository::Repository;
use bulwark_testkit::cmd::json;
use bulwark_testkit::guarded::*;
use bulwark_testkit::immutd::Immutd;
use bulwark_testkit::serve::spawn_listening;
use bulwark_testkit::system::{
    enrollment_with, flip_sealed_byte, job_args, mark, one_block_full, reasons, user_dir, DAY,
};
use bulwark_testkit::Rng;

/// A target's own retention: GFS, 4 weekly and 3 monthly fulls, set by its administrator.
const GFS: [&str; 6] = ["--keep-points", "1", "--weekly", "4", "--monthly", "3"];

/// One repository host: its user, filesystem, immutability service and transport service.
struct Site {
    rig: Rig,
    repo: String,
    fp: String,
    addr: String,
    immutd: Option<Immutd>,
    serve: Option<Child>,
    log: PathBuf,
    bulwark: PathBuf,
    repo_bin: PathBuf,
    /// Environment of every process of this host: libfaketime's offset on simulated days.
    fake: Vec<(String, String)>,
}

impl Site {
    /// A guarded repository with an immutability period of `days`, its services running.
    fn new(bulwark: &Path, repo_bin: &Path, days: u32) -> Site {
        let mut rig = Rig::new(FsKind::Xfs);
        rig.setup.min_period_days = days.min(7);
        Site::start(rig, bulwark, repo_bin, days)
    }

    fn start(rig: Rig, bulwark: &Path, repo_bin: &Path, days: u32) -> Site {
        std::fs::remove_dir(rig.repo.join("incoming")).unwrap();
        let repo = rig.repo.to_str().unwrap().to_string();
        let sock = rig.socket();
        let d = days.to_string();
        let o = rig.user.run(
            repo_bin,
            &[
                "--json",
                "init",
                &repo,
                "--immutable-days",
                &d,
                "--immutd-socket",
                sock.to_str().unwrap(),
            ],
        );
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let fp = v["fingerprint"]
            .as_str()
            .expect("init prints the CA fingerprint")
            .to_string();
        let immutd = Some(rig.start());
        let log = rig.fs.mnt.join("serve.log");
        let mut site = Site {
            rig,
            repo,
            fp,
            addr: String::new(),
            immutd,
            serve: None,
            log,
            bulwark: bulwark.to_path_buf(),
            repo_bin: repo_bin.to_path_buf(),
            fake: Vec::new(),
        };
        site.serve();
        site
    }

    fn user(&self) -> &TestUser {
        &self.rig.user
    }

    /// The host's service user running `bulwark` with the configuration folder `config`.
    fn client<'a>(&'a self, config: &'a Path) -> Client<'a> {
        Client::new(self.user(), &self.bulwark, config)
    }

    /// `bulwark-repo args…` as the service user, on this host's clocks.
    fn admin(&self, args: &[&str]) -> Output {
        let o = self
            .user()
            .cmd(&self.repo_bin)
            .args(args)
            .envs(self.fake.iter().cloned())
            .output()
            .unwrap();
        bulwark_testkit::show(&format!("bulwark-repo {}", args.join(" ")), &o);
        o
    }

    /// `bulwark-repo policy REPO --job JOB args…`, which must succeed.
    fn policy(&self, job: &str, args: &[&str]) {
        let mut full = vec!["policy", &self.repo, "--job", job];
        full.extend_from_slice(args);
        assert!(self.admin(&full).status.success());
    }

    /// Stops both services (the host is gone).
    fn stop(&mut self) {
        if let Some(mut c) = self.serve.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(i) = self.immutd.take() {
            i.stop();
        }
    }

    /// Restarts both services with every clock `day` days ahead (libfaketime `lib`, all
    /// clocks together: honest passage of time, as in `retention_days`).
    fn at_day(&mut self, lib: &Path, day: i64) {
        self.stop();
        self.fake = fake_env(lib, day);
        self.rig.setup.env = self
            .fake
            .iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.start_again();
    }

    /// Starts both services again.
    fn start_again(&mut self) {
        self.immutd = Some(self.rig.start());
        self.serve();
    }

    fn serve(&mut self) {
        // A restart keeps the address: credentials are stored per HOST:PORT.
        let listen = if self.addr.is_empty() {
            "127.0.0.1:0".to_string()
        } else {
            self.addr.clone()
        };
        let log = std::fs::File::create(&self.log).unwrap();
        let mut serve = self.user().cmd(&self.repo_bin);
        serve
            .args(["serve", &self.repo, "--listen", &listen])
            .env("BULWARK_LOG", "info")
            .envs(self.fake.iter().cloned())
            .stderr(log);
        let (child, addr) = spawn_listening(&mut serve, &self.log);
        self.addr = addr;
        self.serve = Some(child);
    }

    /// Enrolls `client` with this site; the credentials go to `config` (owned by `owner`).
    fn enroll(&self, client: &str, config: &Path, owner: &TestUser) {
        self.enroll_with(client, config, owner, &[]);
    }

    /// [`Site::enroll`] with further `bulwark-repo enroll` arguments (`--replace`).
    fn enroll_with(&self, client: &str, config: &Path, owner: &TestUser, extra: &[&str]) {
        let v = enrollment_with(self.user(), &self.repo_bin, &self.repo, client, extra);
        let token = v["token"].as_str().unwrap();
        std::fs::create_dir_all(config).unwrap();
        owner.chown(config);
        let c = config.to_str().unwrap();
        let o = owner.run(
            &self.bulwark,
            &[
                "--config-dir",
                c,
                "enroll",
                &self.addr,
                token,
                "--fingerprint",
                &self.fp,
            ],
        );
        assert!(o.status.success(), "enroll {client}");
    }

    fn socket(&self) -> PathBuf {
        self.rig.socket()
    }

    /// A disk image `disk.img` of `mib` random MiB (`seed`) on this host's filesystem, owned
    /// by its service user.
    fn disk_image(&self, seed: u64, mib: usize) -> PathBuf {
        let img = self.rig.fs.mnt.join("disk.img");
        image(&img, seed, mib, self.user());
        img
    }

    /// Expiry of `point` in this site's ledger.
    fn expiry(&self, point: &str) -> i64 {
        self.user()
            .ctl(&self.socket(), &["query", point])
            .ok()
            .int("expiry_unix")
    }

    /// Every sealed file of the store with its expiry in this site's ledger.
    fn expiries(&self) -> Vec<(String, i64)> {
        self.store_files()
            .iter()
            .map(|(id, _)| (id.clone(), self.expiry(id)))
            .collect()
    }

    /// Asserts that every sealed file of the store is immutable and locked at least `days`
    /// days from `now` by this site's ledger.
    fn all_locked_for(&self, days: i64, now: i64) {
        for (id, path) in &self.store_files() {
            assert!(is_immutable(path), "{id} is not immutable on {}", self.repo);
            let e = self.expiry(id);
            assert!(
                e >= now + days * DAY,
                "{id} expires at {e} on {}, before its {days} days",
                self.repo
            );
        }
    }

    /// Every sealed file of the store, as (point id, path).
    fn store_files(&self) -> Vec<(String, PathBuf)> {
        let mut out = vec![];
        let store = self.rig.repo.join("store");
        for job in std::fs::read_dir(&store).into_iter().flatten().flatten() {
            for chain in std::fs::read_dir(job.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                for f in std::fs::read_dir(chain.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if let Some(id) = name.strip_suffix(".bwrp") {
                        out.push((id.to_string(), f.path()));
                    }
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- serve log of {} ---\n{}",
                self.repo,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// `bulwark --config-dir C` as one user (with a passphrase for key files), optionally with
/// every clock some days ahead.
struct Client<'a> {
    user: &'a TestUser,
    bulwark: &'a Path,
    config: &'a Path,
    /// libfaketime and the day the clocks are moved to.
    at: Option<(&'a Path, i64)>,
}

impl<'a> Client<'a> {
    fn new(user: &'a TestUser, bulwark: &'a Path, config: &'a Path) -> Client<'a> {
        Client {
            user,
            bulwark,
            config,
            at: None,
        }
    }

    /// This client with every clock `day` days ahead (libfaketime `lib`).
    fn on_day(&self, lib: &'a Path, day: i64) -> Client<'a> {
        Client {
            at: Some((lib, day)),
            ..*self
        }
    }

    /// The command `bulwark --config-dir C args…`, not yet run.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.user.cmd(self.bulwark);
        cmd.arg("--config-dir")
            .arg(self.config)
            .args(args)
            .env("BULWARK_PASSPHRASE", "copy test passphrase");
        if let Some((lib, day)) = self.at {
            cmd.envs(fake_env(lib, day));
        }
        cmd
    }

    /// Runs `bulwark --config-dir C args…`, echoing what it printed.
    fn run(&self, args: &[&str]) -> Output {
        let o = self.command(args).output().unwrap();
        let day = self
            .at
            .map(|(_, d)| format!("day {d}: "))
            .unwrap_or_default();
        let what = format!(
            "[{}] {day}bulwark --config-dir {} {}",
            self.user.name,
            self.config.display(),
            args.join(" ")
        );
        bulwark_testkit::show(&what, &o);
        o
    }

    /// `bulwark --json args…`, which must print JSON.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        json(&self.run(&full))
    }

    /// `bulwark backup` ([`job_args`]), which must succeed.
    fn backs_up(&self, repo: &str, job: &str, extra: &[&str], img: &Path) {
        let o = self.run(&job_args("backup", repo, job, extra, img));
        assert!(o.status.success(), "backup of {job} to {repo}");
    }

    /// `bulwark restore` ([`job_args`]).
    fn restore(&self, repo: &str, job: &str, extra: &[&str], out: &Path) -> Output {
        self.run(&job_args("restore", repo, job, extra, out))
    }

    /// [`Client::restore`] succeeds and writes the bytes of `original`.
    fn restores(&self, repo: &str, job: &str, extra: &[&str], out: &Path, original: &Path) {
        let o = self.restore(repo, job, extra, out);
        assert!(o.status.success(), "restoring {job} {extra:?} from {repo}");
        assert_eq!(
            std::fs::read(out).unwrap(),
            std::fs::read(original).unwrap(),
            "{job} {extra:?} restored from {repo}"
        );
    }

    /// `bulwark --json copy extra… --from FROM --to TO`.
    fn copy(&self, extra: &[&str], from: &str, to: &str) -> Output {
        let mut args = vec!["--json"];
        args.extend(copy_args(extra, from, to));
        self.run(&args)
    }

    /// [`Client::copy`], which must succeed: what it printed.
    fn copied(&self, from: &str, to: &str) -> serde_json::Value {
        let o = self.copy(&[], from, to);
        assert!(o.status.success(), "copy from {from} to {to}");
        json(&o)
    }

    /// `copy --verify` exits 0 and finds the first job's `same` points the same on both sides.
    fn verifies_same(&self, from: &str, to: &str, same: u64) {
        let v = self.copy(&["--verify"], from, to);
        assert_eq!(v.status.code(), Some(0));
        assert_eq!(json(&v)["jobs"][0]["same"], same);
    }

    /// The points `bulwark list` shows of the first job of `repo`, with their root digests.
    fn listed(&self, repo: &str, extra: &[&str]) -> Vec<(String, String)> {
        let mut args = vec!["list", "--repo", repo];
        args.extend_from_slice(extra);
        self.json(&args)["jobs"][0]["points"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p["point"].as_str().unwrap().to_string(),
                            p["root_digest"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The arguments `copy extra… --from FROM --to TO`.
fn copy_args<'a>(extra: &[&'a str], from: &'a str, to: &'a str) -> Vec<&'a str> {
    let mut args = vec!["copy"];
    args.extend_from_slice(extra);
    args.extend(["--from", from, "--to", to]);
    args
}

fn fake_env(lib: &Path, day: i64) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), lib.to_str().unwrap().into()),
        ("FAKETIME".into(), format!("+{}", day * DAY)),
    ]
}

/// A disk image of `mib` MiB of random data (incompressible, so stored = plain bytes).
fn image(path: &Path, seed: u64, mib: usize, owner: &TestUser) {
    std::fs::write(path, Rng::new(seed).bytes(mib << 20)).unwrap();
    owner.chown(path);
}

/// Overwrites `n` 1 MiB-aligned MiB of the image with new random data.
fn change(path: &Path, seed: u64, n: usize) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let size = f.metadata().unwrap().len() >> 20;
    let mut rng = Rng::new(seed);
    for _ in 0..n {
        let at = rng.below(size) << 20;
        f.write_all_at(&rng.bytes(1 << 20), at).unwrap();
    }
}

fn preamble(name: &str) -> Option<(PathBuf, PathBuf)> {
    if !can_run(name, &["mkfs.xfs", "useradd", "chattr"]) {
        return None;
    }
    client_bins(name)
}

/// A source site of `src_days` and a target site of `dst_days`; `None` after a printed SKIP.
fn two_sites(name: &str, src_days: u32, dst_days: u32) -> Option<(Site, Site)> {
    let (bulwark, repo_bin) = preamble(name)?;
    let src = Site::new(&bulwark, &repo_bin, src_days);
    let dst = Site::new(&bulwark, &repo_bin, dst_days);
    Some((src, dst))
}

/// [`two_sites`] whose source user holds a client identity (`offsite-src`) of the target in
/// the folder `client` of its filesystem: the push setup.
fn push_pair(name: &str, src_days: u32, dst_days: u32) -> Option<(Site, Site, PathBuf)> {
    let (src, dst) = two_sites(name, src_days, dst_days)?;
    let cfg = src.rig.fs.mnt.join("client");
    dst.enroll("offsite-src", &cfg, src.user());
    Some((src, dst, cfg))
}

/// A network client of `source` on the host `home`: its own user, enrolled as `web1` with
/// credentials in `client/`, and a disk image of 8 random MiB (`seed`) in `work/`.
struct WebClient {
    user: TestUser,
    cfg: PathBuf,
    img: PathBuf,
}

impl WebClient {
    fn new(source: &Site, home: &Site, seed: u64) -> WebClient {
        let user = TestUser::create();
        let cfg = home.rig.fs.mnt.join("client");
        source.enroll("web1", &cfg, &user);
        let img = user_dir(&user, home.rig.fs.mnt.join("work")).join("disk.img");
        image(&img, seed, 8, &user);
        WebClient { user, cfg, img }
    }

    fn client<'a>(&'a self, site: &'a Site) -> Client<'a> {
        Client::new(&self.user, &site.bulwark, &self.cfg)
    }
}

#[test]
fn a_week_of_daily_backups_copies_nightly_to_a_gfs_target_and_restores_from_it_alone() {
    let name = "a_week_of_daily_backups_copies_nightly_to_a_gfs_target_and_restores_from_it_alone";
    // Push: the source host holds a client identity of the target.
    let Some((src, dst, cfg)) = push_pair(name, 7, 30) else {
        return;
    };
    let c = src.client(&cfg);
    src.policy("vm", &["--keep-days", "7", "--keep-points", "7"]);
    dst.policy("vm", &GFS);
    let img = src.disk_image(1, 24);
    let mut saved = vec![];
    for night in 0..7u64 {
        if night > 0 {
            change(&img, 1001 + 2 * night, 2);
        }
        let b = c.json(&job_args(
            "backup",
            &src.repo,
            "vm",
            &["--block-size", "1M"],
            &img,
        ));
        let keep = src.rig.fs.mnt.join(format!("night{night}.img"));
        std::fs::copy(&img, &keep).unwrap();
        saved.push((b["point"].as_str().unwrap().to_string(), keep));
        let o = c.copy(&["--job", "vm"], &src.repo, &dst.addr);
        assert!(o.status.success());
        let r = json(&o);
        let job = &r["jobs"][0];
        assert_eq!(job["points_copied"], 1, "night {night}: {r}");
        // Only the new blocks travel: what the backup stored, not more than 1.05x of it.
        let sent = job["bytes_sent"].as_u64().unwrap();
        let stored = b["bytes_stored"].as_u64().unwrap();
        assert!(
            sent <= stored + stored / 20 && sent > 0,
            "night {night}: sent {sent} for {stored} new stored bytes"
        );
        if night > 0 {
            assert!(
                sent <= 2 << 20,
                "night {night}: an incremental of 2 changed MiB sent {sent} bytes"
            );
        }
        let p = &job["points"][0];
        assert_eq!(p["mode"], "verbatim");
        assert_eq!(p["root_digest"], p["source_root_digest"]);
        assert_eq!(p["immutable"], true);
    }
    // Same ids and digests on both sides.
    let a = c.listed(&src.repo, &["--job", "vm"]);
    let b = c.listed(&dst.addr, &["--job", "vm"]);
    assert_eq!(a.len(), 7);
    assert_eq!(a, b);
    // Sealed on the target by its own service, locked by its own 30-day period.
    let now = bulwark_time::UnixTime::now().secs();
    let files = dst.store_files();
    assert_eq!(files.len(), 7);
    dst.all_locked_for(29, now);
    for (id, _) in &files {
        assert!(
            src.expiry(id) < now + 8 * DAY,
            "the source keeps its own 7 days"
        );
    }
    // The target's retention plan follows its own GFS policy (nothing removable: all locked).
    let plan = json(&dst.admin(&["--json", "retention", &dst.repo, "--dry-run"]));
    let marks = plan[0]["marks"].as_array().unwrap();
    assert_eq!(marks.len(), 7);
    assert!(
        marks
            .iter()
            .any(|m| reasons(m).iter().any(|r| r.contains("GFS weekly"))),
        "{plan}"
    );
    // Every point restores byte-identical from the target alone: the source's services stop.
    let mut src = src;
    src.stop();
    let c = src.client(&cfg);
    let out_dir = user_dir(src.user(), src.rig.fs.mnt.join("restores"));
    for (point, keep) in &saved {
        let out = out_dir.join(format!("{point}.img"));
        c.restores(&dst.addr, "vm", &["--point", point], &out, keep);
        std::fs::remove_file(&out).unwrap();
    }
    src.start_again();
    // --verify agrees, both ledgers included.
    src.client(&cfg).verifies_same(&src.repo, &dst.addr, 7);
}

#[test]
fn a_copy_killed_mid_way_resumes_and_completes_over_tls() {
    let name = "a_copy_killed_mid_way_resumes_and_completes_over_tls";
    let Some((src, dst, cfg)) = push_pair(name, 7, 14) else {
        return;
    };
    let c = src.client(&cfg);
    let img = src.disk_image(7, 48);
    let b = c.json(&job_args("backup", &src.repo, "vm", &[], &img));
    let stored = b["bytes_stored"].as_u64().unwrap();
    // A slow copy (4 MiB/s), killed once part of it has arrived on the target.
    let mut child = c
        .command(&copy_args(&["--bwlimit", "4M"], &src.repo, &dst.addr))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let incoming = dst.rig.repo.join("incoming");
    let arrived = || -> u64 {
        std::fs::read_dir(&incoming)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".copy-vm-"))
            .map(|e| {
                let f = std::fs::File::open(e.path()).unwrap();
                // Allocated bytes: what was written into the sparse partial file.
                std::os::unix::fs::MetadataExt::blocks(&f.metadata().unwrap()) * 512
            })
            .sum()
    };
    assert!(
        wait_for(60, || arrived() >= 8 << 20),
        "the copy never started writing on the target"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        dst.store_files().is_empty(),
        "nothing is visible after a killed copy"
    );
    let before = arrived();
    let r = c.copied(&src.repo, &dst.addr);
    let p = &r["jobs"][0]["points"][0];
    let (sent, resumed) = (
        p["bytes_sent"].as_u64().unwrap(),
        p["bytes_resumed"].as_u64().unwrap(),
    );
    assert!(
        resumed >= 4 << 20,
        "resumed {resumed} of the {before} allocated bytes: {r}"
    );
    assert_eq!(
        sent + resumed,
        stored,
        "every stored byte arrived exactly once: {r}"
    );
    assert_eq!(p["root_digest"], b["root_digest"]);
    let files = dst.store_files();
    assert_eq!(files.len(), 1);
    assert!(is_immutable(&files[0].1));
    let out_dir = user_dir(src.user(), src.rig.fs.mnt.join("restores"));
    c.restores(&dst.addr, "vm", &[], &out_dir.join("r.img"), &img);
}

#[test]
fn an_encrypted_chain_copies_without_any_key_and_restores_with_it_on_the_target() {
    let name = "an_encrypted_chain_copies_without_any_key_and_restores_with_it_on_the_target";
    let Some((src, dst, cfg)) = push_pair(name, 7, 7) else {
        return;
    };
    let c = src.client(&cfg);
    let keys = user_dir(src.user(), src.rig.fs.mnt.join("keys"));
    let key = keys.join("vm.key");
    assert!(c
        .run(&["key", "create", "--out", key.to_str().unwrap()])
        .status
        .success());
    let img = src.disk_image(9, 8);
    let k = key.to_str().unwrap();
    c.backs_up(&src.repo, "vm", &["--key", k], &img);
    change(&img, 10, 1);
    c.backs_up(&src.repo, "vm", &["--key", k], &img);
    // The key is moved away from the copier: the copy has none.
    let hidden = std::env::temp_dir().join(format!("bw-copy-key-{}", std::process::id()));
    std::fs::copy(&key, &hidden).unwrap();
    std::fs::remove_file(&key).unwrap();
    assert_eq!(
        c.copied(&src.repo, &dst.addr)["jobs"][0]["points_copied"],
        2
    );
    // On the target host, as its own user, with the key: byte-identical.
    let du = dst.user();
    let dkeys = user_dir(du, dst.rig.fs.mnt.join("keys"));
    let dkey = dkeys.join("vm.key");
    std::fs::copy(&hidden, &dkey).unwrap();
    std::fs::remove_file(&hidden).unwrap();
    du.chown(&dkey);
    let d = dst.client(&dkeys);
    let with_key = ["--key", dkey.to_str().unwrap()];
    d.restores(&dst.repo, "vm", &with_key, &dkeys.join("r.img"), &img);
    // Without the key the target refuses to restore it (it is still encrypted there).
    let o = d.restore(&dst.repo, "vm", &[], &dkeys.join("nokey.img"));
    assert!(!o.status.success());
}

#[test]
fn network_to_network_copy_and_verify_detects_tampering_on_the_target() {
    let name = "network_to_network_copy_and_verify_detects_tampering_on_the_target";
    let Some((src, dst)) = two_sites(name, 7, 7) else {
        return;
    };
    // A client backs up over the network to the source; a third host holds its identity (pull)
    // and an identity of the target (push).
    let web = WebClient::new(&src, &dst, 11);
    dst.enroll("offsite-web1", &web.cfg, &web.user);
    let (c, img) = (web.client(&src), &web.img);
    for n in 0..3 {
        if n > 0 {
            change(img, 41 + 2 * n, 1);
        }
        c.backs_up(&src.addr, "web", &[], img);
    }
    let r = c.copied(&src.addr, &dst.addr);
    assert_eq!(r["jobs"][0]["points_copied"], 3, "{r}");
    c.verifies_same(&src.addr, &dst.addr, 3);
    // Root on the target's host flips one stored byte of a sealed copy.
    let files = dst.store_files();
    flip_sealed_byte(&files[1].1, 4096 + 17);
    let v = c.copy(&["--verify"], &src.addr, &dst.addr);
    assert_eq!(
        v.status.code(),
        Some(1),
        "tampering on the target must be reported as damage"
    );
    let j = json(&v);
    let dmg = j["jobs"][0]["target_damage"].as_array().unwrap();
    assert!(
        dmg.iter()
            .any(|d| d.as_str().unwrap().contains(&files[1].0)),
        "{j}"
    );
    assert!(j["jobs"][0]["source_damage"].as_array().unwrap().is_empty());
}

#[test]
fn a_copy_to_a_second_local_repository_is_sealed_there_with_its_own_period() {
    let name = "a_copy_to_a_second_local_repository_is_sealed_there_with_its_own_period";
    let Some((bulwark, repo_bin)) = preamble(name) else {
        return;
    };
    let src = Site::new(&bulwark, &repo_bin, 7);
    let su = src.user();
    // A second repository of the same service user (a second disk), with its own service.
    let repo2 = user_dir(su, src.rig.fs.mnt.join("repo2"));
    let state = bulwark_testkit::Scratch::new("bwcopy2");
    let mut setup = bulwark_testkit::immutd::ImmutdSetup::new(
        &su.name,
        repo2.clone(),
        state.path().join("svc"),
    );
    setup.min_period_days = 7;
    let sock2 = setup.socket();
    let r2 = repo2.to_str().unwrap();
    assert!(su
        .run(
            &repo_bin,
            &[
                "init",
                r2,
                "--immutable-days",
                "21",
                "--immutd-socket",
                sock2.to_str().unwrap()
            ]
        )
        .status
        .success());
    let svc2 = setup.spawn(&immutd_bin()).unwrap();
    let cfg = src.rig.fs.mnt.join("client");
    let c = src.client(&cfg);
    let img = src.disk_image(21, 8);
    c.backs_up(&src.repo, "vm", &[], &img);
    change(&img, 22, 1);
    c.backs_up(&src.repo, "vm", &[], &img);
    assert_eq!(c.copied(&src.repo, r2)["jobs"][0]["points_copied"], 2);
    let now = bulwark_time::UnixTime::now().secs();
    let a = c.listed(&src.repo, &[]);
    let b = c.listed(r2, &[]);
    assert_eq!(a, b, "same ids and root digests");
    for (id, _) in &b {
        let e = su.ctl(&sock2, &["query", id]).ok().int("expiry_unix");
        assert!(
            e >= now + 20 * DAY,
            "{id}: the second repository's own 21 days"
        );
        let path = Repository::open(&repo2)
            .unwrap()
            .scan_job("vm")
            .unwrap()
            .points
            .iter()
            .find(|p| &p.meta.point.to_hex() == id)
            .unwrap()
            .path
            .clone();
        assert!(is_immutable(&path));
    }
    svc2.stop();
    sh(&format!(
        "chattr -R -i '{}' 2>/dev/null; true",
        state.path().display()
    ));
}

/// A sealed-looking full of one random block created at `created`, in a scratch folder laid
/// out like a repository store, read back as a copy head (what a lying source would send).
fn crafted_head(
    dir: &Path,
    job: &str,
    created: i64,
    seed: u64,
) -> (bulwark_repository::CopyHead, Vec<u8>) {
    let (path, data) = one_block_full(job, created, 64 * 1024, seed, |p| {
        dir.join(format!("{}.bwrp", p.to_hex()))
    });
    let r = bulwark_format::PointReader::open(std::fs::File::open(&path).unwrap()).unwrap();
    (bulwark_repository::CopyHead::of_reader(&r).unwrap(), data)
}

#[test]
fn a_client_certificate_of_the_source_cannot_delete_or_shorten_anything_on_the_target() {
    let name = "a_client_certificate_of_the_source_cannot_delete_or_shorten_anything_on_the_target";
    let Some((src, dst, cfg)) = push_pair(name, 7, 30) else {
        return;
    };
    let c = src.client(&cfg);
    // Another client's job on the target.
    let other = TestUser::create();
    let ocfg = dst.rig.fs.mnt.join("other");
    dst.enroll("alice", &ocfg, &other);
    let oimg = user_dir(&other, dst.rig.fs.mnt.join("work")).join("a.img");
    image(&oimg, 31, 2, &other);
    Client::new(&other, &dst.bulwark, &ocfg).backs_up(&dst.addr, "alice-vm", &[], &oimg);
    // An honest copy first.
    let img = src.disk_image(32, 4);
    c.backs_up(&src.repo, "vm", &[], &img);
    c.copied(&src.repo, &dst.addr);
    let before = dst.expiries();
    let src_before = src.expiries();
    assert_eq!(before.len(), 2);

    // The attacker holds the copier's certificate (root reads its files on the source host).
    let addr = RemoteAddr::parse(&dst.addr).unwrap();
    let mut t = NetTarget::connect(&cfg, addr.clone()).unwrap();
    let mut s = LocalSource {
        repo: Repository::open(&src.rig.repo).unwrap(),
    };
    let sp = s.points("vm").unwrap();
    let held = &sp[0];
    // 1. The same point id with other content (its metadata changed, the trailer kept):
    //    answered "already held", nothing written. (A re-sent point whose id the target holds
    //    with another root digest is refused as damage: `begin_copy`.)
    let mut head = s.head("vm", held.point).unwrap();
    head.meta[16] ^= 1; // the creation time's nanoseconds: still decodes, no longer digests
    let plan = t.begin("vm", &head);
    match plan {
        Ok(p) => {
            assert_eq!(p.mode, bulwark_repository::CopyMode::Held);
            assert!(p.needed.is_empty());
            let f = t.finish().unwrap();
            assert_eq!(f.root, held.root, "the held point is untouched");
        }
        Err(e) => panic!("a re-sent point was not answered as held: {e}"),
    }
    // 2. A point "created" 60 days ago: sealed with the target's own 30 days from now, never
    //    the creation time's.
    let scratch = bulwark_testkit::Scratch::new("bwcopyatk");
    let now = bulwark_time::UnixTime::now().secs();
    let (old, data) = crafted_head(scratch.path(), "vm", now - 60 * DAY, 41);
    let mut t = NetTarget::connect(&cfg, addr.clone()).unwrap();
    let plan = t.begin("vm", &old).unwrap();
    assert_eq!(plan.mode, bulwark_repository::CopyMode::Verbatim);
    assert_eq!(plan.needed.len(), 1);
    t.put(&old.map[0], &data).unwrap();
    let f = t.finish().unwrap();
    assert!(f.immutable);
    let e_old = f.expiry.unwrap();
    assert!(
        e_old >= now + 29 * DAY,
        "an old creation time shortened the lock: expires {e_old}, now {now}"
    );
    // 3. A point "created" in the future: refused, nothing left behind.
    let (future, _) = crafted_head(scratch.path(), "vm", now + 30 * DAY, 43);
    let mut t = NetTarget::connect(&cfg, addr.clone()).unwrap();
    let err = t
        .begin("vm", &future)
        .expect_err("a point from the future was accepted");
    assert!(err.to_string().contains("clock"), "{err}");
    // 4. Copying into another client's job: refused.
    let (theirs, _) = crafted_head(scratch.path(), "alice-vm", now - DAY, 45);
    let mut t = NetTarget::connect(&cfg, addr.clone()).unwrap();
    let err = t
        .begin("alice-vm", &theirs)
        .expect_err("copied into another client's job");
    assert!(
        err.to_string().contains("another client") || err.to_string().contains("Unauthorized"),
        "{err}"
    );
    // 5. A head whose map does not match its root digest: refused as damage, no partial left.
    let (mut bad, _) = crafted_head(scratch.path(), "vm", now - DAY, 47);
    bad.map[0].stored_hash = bulwark_format::Digest([7; 32]);
    let mut t = NetTarget::connect(&cfg, addr.clone()).unwrap();
    assert!(t.begin("vm", &bad).is_err());
    let partials: Vec<_> = std::fs::read_dir(dst.rig.repo.join("incoming"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".copy-"))
        .collect();
    assert!(partials.is_empty(), "a refused head left {partials:?}");
    // 6. A block that is not the one the map describes: refused, nothing sealed.
    let mut t = NetTarget::connect(&cfg, addr.clone()).unwrap();
    let (fresh, _) = crafted_head(scratch.path(), "vm", now - 2 * DAY, 49);
    let p = t.begin("vm", &fresh).unwrap();
    assert_eq!(p.needed.len(), 1);
    let junk = vec![0x5a; fresh.map[0].stored_len as usize];
    let _ = t.put(&fresh.map[0], &junk);
    assert!(
        t.finish().is_err(),
        "a block that does not match its hash was sealed"
    );

    // Nothing on the target lost protection or disappeared; nothing on the source changed.
    for (id, e) in &before {
        assert!(dst.expiry(id) >= *e, "{id} was shortened");
    }
    let after = dst.store_files();
    for (id, path) in &after {
        assert!(is_immutable(path), "{id} lost its attribute");
    }
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only the honest old point was added"
    );
    for (id, e) in &src_before {
        assert_eq!(src.expiry(id), *e, "{id} changed on the source");
    }
    // And the protocol has nothing to delete with: removing through the target's service is
    // refused for the copier's files.
    let victim = &before[0].0;
    let r = dst.user().ctl(&dst.socket(), &["delete", victim]);
    assert_eq!(
        r.refused().as_deref(),
        Some("Refused"),
        "deleting a locked copy"
    );
}

#[test]
fn a_target_pulls_with_a_client_identity_of_the_source_from_a_copy_job_file() {
    let name = "a_target_pulls_with_a_client_identity_of_the_source_from_a_copy_job_file";
    let Some((src, dst)) = two_sites(name, 7, 14) else {
        return;
    };
    // A client backs up to the source over the network.
    let web = WebClient::new(&src, &src, 51);
    let (c, img) = (web.client(&src), &web.img);
    c.backs_up(&src.addr, "web", &[], img);
    change(img, 53, 1);
    c.backs_up(&src.addr, "web", &[], img);
    // Pull: the target host holds a second certificate of the job's owner on the source, and
    // the source holds nothing of the target. A [copy] job file, run by `bulwark job run`.
    let du = dst.user();
    let dcfg = dst.rig.fs.mnt.join("pull");
    // A second machine for a name already enrolled: on purpose (`--replace`).
    src.enroll_with("web1", &dcfg, du, &["--replace"]);
    let d = dst.client(&dcfg);
    let jobs = user_dir(du, dst.rig.fs.mnt.join("jobs"));
    let file = jobs.join("offsite.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"offsite\"\nrepository = \"{}\"\n[copy]\nto = \"{}\"\njobs = [\"web\"]\nbwlimit = \"64M\"\n",
            src.addr, dst.repo
        ),
    )
    .unwrap();
    du.chown(&file);
    let state = jobs.join("state");
    let run = [
        "--json",
        "job",
        "run",
        file.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let o = d.run(&run);
    assert!(o.status.success());
    let r = json(&o);
    assert_eq!(r["jobs"][0]["points_copied"], 2, "{r}");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("jobs").join("offsite.json")).unwrap())
            .unwrap();
    assert_eq!(rec["ok"], true, "{rec}");
    // Sealed by the target's own service, with the target's own 14 days.
    let now = bulwark_time::UnixTime::now().secs();
    assert_eq!(dst.store_files().len(), 2);
    dst.all_locked_for(13, now);
    // The same points and digests on both sides; the next run copies nothing.
    d.verifies_same(&src.addr, &dst.repo, 2);
    assert_eq!(json(&d.run(&run))["jobs"][0]["points_copied"], 0);
    // Restores on the target host, locally, byte-identical.
    d.restores(&dst.repo, "web", &[], &jobs.join("r.img"), img);
}

#[test]
fn three_weeks_of_nightly_copies_keep_weekly_fulls_on_the_target_after_the_source_removed_them() {
    let name = "three_weeks_of_nightly_copies_keep_weekly_fulls_on_the_target_after_the_source_removed_them";
    if preamble(name).is_none() {
        return;
    }
    let Some(lib) = bulwark_testkit::skip::require_faketime(name) else {
        return;
    };
    let Some((mut src, mut dst, cfg)) = push_pair(name, 7, 30) else {
        return;
    };
    // The source keeps dailies; the target keeps 4 weekly and 3 monthly fulls.
    src.policy("vm", &["--keep-days", "7", "--keep-points", "1"]);
    dst.policy("vm", &GFS);
    let img = src.disk_image(61, 4);
    let first = src.rig.fs.mnt.join("night0.img");
    let mut fulls = vec![];
    for day in 0..21i64 {
        src.at_day(&lib, day);
        dst.at_day(&lib, day);
        let c = src.client(&cfg).on_day(&lib, day);
        if day > 0 {
            change(&img, 1001 + 2 * day as u64, 1);
        }
        let full: &[&str] = if day % 7 == 0 && day > 0 {
            &["--full"]
        } else {
            &[]
        };
        let b = c.json(&job_args("backup", &src.repo, "vm", full, &img));
        if day % 7 == 0 {
            fulls.push(b["point"].as_str().unwrap().to_string());
        }
        if day == 0 {
            std::fs::copy(&img, &first).unwrap();
        }
        let o = c.copy(&[], &src.repo, &dst.addr);
        assert!(o.status.success(), "day {day}");
        assert_eq!(json(&o)["jobs"][0]["points_copied"], 1, "day {day}");
        assert!(src.admin(&["retention", &src.repo]).status.success());
        assert!(dst.admin(&["retention", &dst.repo]).status.success());
    }
    // The source's retention removed its first chain once its 7 days ended; the target,
    // locked for 30 days and keeping weekly fulls, still holds all 21 points.
    let held_src: Vec<String> = src.store_files().into_iter().map(|(id, _)| id).collect();
    let held_dst: Vec<String> = dst.store_files().into_iter().map(|(id, _)| id).collect();
    assert!(
        !held_src.contains(&fulls[0]),
        "the source kept its first full: {held_src:?}"
    );
    assert!(held_src.len() < 21);
    assert_eq!(held_dst.len(), 21);
    // The first full is the target's GFS monthly full: locked for the target's 3 months
    // (3 x 31 days from its creation), far beyond both sides' periods.
    let real_now = bulwark_time::UnixTime::now().secs();
    assert!(
        dst.expiry(&fulls[0]) >= real_now + 90 * DAY,
        "the target's GFS lifetime"
    );
    let plan = json(&dst.admin(&["--json", "retention", &dst.repo, "--dry-run"]));
    for f in &fulls {
        let reasons = reasons(mark(&plan, f));
        assert!(
            reasons.iter().any(|r| r.contains("GFS weekly")),
            "{f}: {reasons:?}"
        );
    }
    // --verify sees the points only the target still holds; nothing differs.
    let c = src.client(&cfg).on_day(&lib, 20);
    let v = json(&c.copy(&["--verify"], &src.repo, &dst.addr));
    let j = &v["jobs"][0];
    assert_eq!(j["different"], 0, "{v}");
    assert_eq!(
        j["only_on_target"].as_u64().unwrap() as usize,
        21 - held_src.len(),
        "{v}"
    );
    // The first night restores from the target alone, byte-identical.
    let out_dir = user_dir(src.user(), src.rig.fs.mnt.join("restores"));
    let out = out_dir.join("night0.img");
    c.restores(&dst.addr, "vm", &["--point", &fulls[0]], &out, &first);
    // The next night's copy sends nothing it already sent, and nothing the source lost.
    let r = json(&c.copy(&[], &src.repo, &dst.addr));
    assert_eq!(r["bytes_sent"], 0);
}

/// A push into a repository service whose filesystem is full (filled by another file on it):
/// the copy fails with exit 2 naming the target as full, the service keeps no partial file,
/// and once the space is back the same copy goes through.
#[test]
fn a_push_into_a_full_target_service_fails_naming_it_and_leaves_no_partial_file_there() {
    let name = "a_push_into_a_full_target_service_fails_naming_it_and_leaves_no_partial_file_there";
    let Some((src, dst, cfg)) = push_pair(name, 7, 7) else {
        return;
    };
    let c = src.client(&cfg);
    let img = src.disk_image(61, 48);
    c.backs_up(&src.repo, "vm", &[], &img);
    // Leave 16 MiB free on the target's filesystem for a point of 48 MiB.
    let mnt = dst.rig.fs.mnt.to_str().unwrap().to_string();
    let free: u64 = bulwark_testkit::sh(&format!("df --output=avail -B1 '{mnt}' | tail -n1"))
        .trim()
        .parse()
        .unwrap();
    let filler = dst.rig.fs.mnt.join("filler");
    bulwark_testkit::sh(&format!(
        "fallocate -l {} '{}'",
        free - (16 << 20),
        filler.display()
    ));
    let o = c.copy(&[], &src.repo, &dst.addr);
    assert_eq!(o.status.code(), Some(2), "an operational error");
    let r = json(&o);
    let j = &r["jobs"][0];
    assert_eq!(
        (r["ok"].clone(), j["target_full"].clone()),
        (false.into(), true.into()),
        "{r}"
    );
    let err = j["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("the target {} is full", dst.addr)) && err.contains("ENOSPC"),
        "{err}"
    );
    let incoming: Vec<_> = std::fs::read_dir(dst.rig.repo.join("incoming"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(incoming.is_empty(), "left on the target: {incoming:?}");
    std::fs::remove_file(&filler).unwrap();
    let r = c.copied(&src.repo, &dst.addr);
    assert_eq!(r["jobs"][0]["points_copied"], 1, "{r}");
}
