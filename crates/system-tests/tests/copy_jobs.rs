//! Backup copy jobs between two real repositories, each with its own unprivileged service
//! user, its own XFS loop filesystem, its own `bulwark-immutd` (chattr +i, its own period) and
//! its own `bulwark-repo serve` (real TLS on 127.0.0.1): push, pull, local to local, resume
//! after a killed copy, an encrypted chain, `--verify` against tampering, and a copier's
//! identity trying to delete, overwrite or shorten anything on the target. Root only.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use bulwark_copy::{LocalSource, NetTarget, Source, Target};
use bulwark_format::{
    BlockNo, PointId, PointKind, PointMeta, PointWriter, RetentionClass, Stats, StoredBlock,
};
use bulwark_remote::RemoteAddr;
use bulwark_repository::Repository;
use bulwark_testkit::guarded::*;
use bulwark_testkit::immutd::Immutd;
use bulwark_testkit::Rng;

const DAY: i64 = 86_400;

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
        let mut child = self
            .user()
            .cmd(&self.repo_bin)
            .args(["serve", &self.repo, "--listen", &listen])
            .env("BULWARK_LOG", "info")
            .envs(self.fake.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        self.serve = Some(child);
        self.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "serve said {line:?}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
            .to_string();
    }

    /// Enrolls `client` with this site; the credentials go to `config` (owned by `owner`).
    fn enroll(&self, client: &str, config: &Path, owner: &TestUser) {
        let o = self.user().run(
            &self.repo_bin,
            &[
                "--json",
                "enroll",
                &self.repo,
                "--client",
                client,
                "--expires",
                "10m",
            ],
        );
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
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

    /// Expiry of `point` in this site's ledger.
    fn expiry(&self, point: &str) -> i64 {
        self.user()
            .ctl(&self.socket(), &["query", point])
            .ok()
            .int("expiry_unix")
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
        if let Some(mut c) = self.serve.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- serve log of {} ---\n{}",
                self.repo,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        if let Some(i) = self.immutd.take() {
            i.stop();
        }
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// `bulwark --config-dir C args` as `u`, with a passphrase for key files.
fn bw(u: &TestUser, bulwark: &Path, config: &Path, args: &[&str]) -> Output {
    let mut full = vec!["--config-dir", config.to_str().unwrap()];
    full.extend_from_slice(args);
    let o = u
        .cmd(bulwark)
        .args(&full)
        .env("BULWARK_PASSPHRASE", "copy test passphrase")
        .output()
        .unwrap();
    bulwark_testkit::show(&format!("[{}] bulwark {}", u.name, full.join(" ")), &o);
    o
}

fn fake_env(lib: &Path, day: i64) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), lib.to_str().unwrap().into()),
        ("FAKETIME".into(), format!("+{}", day * DAY)),
    ]
}

/// [`bw`] with every clock `day` days ahead.
fn bw_at(
    u: &TestUser,
    lib: &Path,
    day: i64,
    bulwark: &Path,
    config: &Path,
    args: &[&str],
) -> Output {
    let mut full = vec!["--config-dir", config.to_str().unwrap()];
    full.extend_from_slice(args);
    let o = u
        .cmd(bulwark)
        .args(&full)
        .envs(fake_env(lib, day))
        .output()
        .unwrap();
    bulwark_testkit::show(
        &format!("[{}] day {day}: bulwark {}", u.name, full.join(" ")),
        &o,
    );
    o
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

fn listed(v: &serde_json::Value) -> Vec<(String, String)> {
    v["jobs"][0]["points"]
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

fn preamble(name: &str) -> Option<(PathBuf, PathBuf)> {
    if !can_run(name, &["mkfs.xfs", "useradd", "chattr"]) {
        return None;
    }
    client_bins(name)
}

#[test]
fn a_week_of_daily_backups_copies_nightly_to_a_gfs_target_and_restores_from_it_alone() {
    let name = "a_week_of_daily_backups_copies_nightly_to_a_gfs_target_and_restores_from_it_alone";
    let Some((bulwark, repo_bin)) = preamble(name) else {
        return;
    };
    let src = Site::new(&bulwark, &repo_bin, 7);
    let dst = Site::new(&bulwark, &repo_bin, 30);
    let su = src.user();
    // Push: the source host holds a client identity of the target.
    let cfg = src.rig.fs.mnt.join("client");
    dst.enroll("offsite-src", &cfg, su);
    assert!(src
        .user()
        .run(
            &repo_bin,
            &[
                "policy",
                &src.repo,
                "--job",
                "vm",
                "--keep-days",
                "7",
                "--keep-points",
                "7"
            ]
        )
        .status
        .success());
    // The target's own policy: GFS, 4 weekly and 3 monthly, set by the target's administrator.
    let o = dst.user().run(
        &repo_bin,
        &[
            "policy",
            &dst.repo,
            "--job",
            "vm",
            "--keep-points",
            "1",
            "--weekly",
            "4",
            "--monthly",
            "3",
        ],
    );
    assert!(o.status.success());
    let img = src.rig.fs.mnt.join("disk.img");
    image(&img, 1, 24, su);
    let mut saved = vec![];
    for night in 0..7u64 {
        if night > 0 {
            change(&img, 1001 + 2 * night, 2);
        }
        let b = json(&bw(
            su,
            &bulwark,
            &cfg,
            &[
                "--json",
                "backup",
                "--repo",
                &src.repo,
                "--job",
                "vm",
                "--block-size",
                "1M",
                img.to_str().unwrap(),
            ],
        ));
        let keep = src.rig.fs.mnt.join(format!("night{night}.img"));
        std::fs::copy(&img, &keep).unwrap();
        saved.push((b["point"].as_str().unwrap().to_string(), keep));
        let c = bw(
            su,
            &bulwark,
            &cfg,
            &[
                "--json", "copy", "--from", &src.repo, "--to", &dst.addr, "--job", "vm",
            ],
        );
        assert!(c.status.success());
        let c = json(&c);
        let job = &c["jobs"][0];
        assert_eq!(job["points_copied"], 1, "night {night}: {c}");
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
    let a = listed(&json(&bw(
        su,
        &bulwark,
        &cfg,
        &["--json", "list", "--repo", &src.repo, "--job", "vm"],
    )));
    let b = listed(&json(&bw(
        su,
        &bulwark,
        &cfg,
        &["--json", "list", "--repo", &dst.addr, "--job", "vm"],
    )));
    assert_eq!(a.len(), 7);
    assert_eq!(a, b);
    // Sealed on the target by its own service, locked by its own 30-day period.
    let now = bulwark_time::UnixTime::now().secs();
    let files = dst.store_files();
    assert_eq!(files.len(), 7);
    for (id, path) in &files {
        assert!(is_immutable(path), "{id} is not immutable on the target");
        let e = dst.expiry(id);
        assert!(
            e >= now + 29 * DAY,
            "{id} expires at {e} on the target, before its 30 days"
        );
        assert!(
            src.expiry(id) < now + 8 * DAY,
            "the source keeps its own 7 days"
        );
    }
    // The target's retention plan follows its own GFS policy (nothing removable: all locked).
    let plan = json(
        &dst.user()
            .run(&repo_bin, &["--json", "retention", &dst.repo, "--dry-run"]),
    );
    let marks = plan[0]["marks"].as_array().unwrap();
    assert_eq!(marks.len(), 7);
    assert!(
        marks.iter().any(|m| m["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("GFS weekly"))),
        "{plan}"
    );
    // Every point restores byte-identical from the target alone: the source's services stop.
    let mut src = src;
    src.stop();
    let su = src.user();
    let out_dir = src.rig.fs.mnt.join("restores");
    std::fs::create_dir(&out_dir).unwrap();
    su.chown(&out_dir);
    for (point, keep) in &saved {
        let out = out_dir.join(format!("{point}.img"));
        let o = bw(
            su,
            &bulwark,
            &cfg,
            &[
                "restore",
                "--repo",
                &dst.addr,
                "--job",
                "vm",
                "--point",
                point,
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "restoring {point} from the target");
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(keep).unwrap(),
            "{point}"
        );
        std::fs::remove_file(&out).unwrap();
    }
    src.start_again();
    let su = src.user();
    // --verify agrees, both ledgers included.
    let v = bw(
        su,
        &bulwark,
        &cfg,
        &[
            "--json", "copy", "--verify", "--from", &src.repo, "--to", &dst.addr,
        ],
    );
    assert!(v.status.success());
    assert_eq!(json(&v)["jobs"][0]["same"], 7);
}

#[test]
fn a_copy_killed_mid_way_resumes_and_completes_over_tls() {
    let name = "a_copy_killed_mid_way_resumes_and_completes_over_tls";
    let Some((bulwark, repo_bin)) = preamble(name) else {
        return;
    };
    let src = Site::new(&bulwark, &repo_bin, 7);
    let dst = Site::new(&bulwark, &repo_bin, 14);
    let su = src.user();
    let cfg = src.rig.fs.mnt.join("client");
    dst.enroll("offsite-src", &cfg, su);
    let img = src.rig.fs.mnt.join("disk.img");
    image(&img, 7, 48, su);
    let b = json(&bw(
        su,
        &bulwark,
        &cfg,
        &[
            "--json",
            "backup",
            "--repo",
            &src.repo,
            "--job",
            "vm",
            img.to_str().unwrap(),
        ],
    ));
    let stored = b["bytes_stored"].as_u64().unwrap();
    // A slow copy (4 MiB/s), killed once part of it has arrived on the target.
    let mut child = su
        .cmd(&bulwark)
        .args([
            "--config-dir",
            cfg.to_str().unwrap(),
            "copy",
            "--from",
            &src.repo,
            "--to",
            &dst.addr,
            "--bwlimit",
            "4M",
        ])
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
    let o = bw(
        su,
        &bulwark,
        &cfg,
        &["--json", "copy", "--from", &src.repo, "--to", &dst.addr],
    );
    assert!(o.status.success());
    let r = json(&o);
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
    let out_dir = src.rig.fs.mnt.join("restores");
    std::fs::create_dir(&out_dir).unwrap();
    su.chown(&out_dir);
    let out = out_dir.join("r.img");
    assert!(bw(
        su,
        &bulwark,
        &cfg,
        &[
            "restore",
            "--repo",
            &dst.addr,
            "--job",
            "vm",
            out.to_str().unwrap()
        ]
    )
    .status
    .success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&img).unwrap());
}

#[test]
fn an_encrypted_chain_copies_without_any_key_and_restores_with_it_on_the_target() {
    let name = "an_encrypted_chain_copies_without_any_key_and_restores_with_it_on_the_target";
    let Some((bulwark, repo_bin)) = preamble(name) else {
        return;
    };
    let src = Site::new(&bulwark, &repo_bin, 7);
    let dst = Site::new(&bulwark, &repo_bin, 7);
    let su = src.user();
    let cfg = src.rig.fs.mnt.join("client");
    dst.enroll("offsite-src", &cfg, su);
    let keys = src.rig.fs.mnt.join("keys");
    std::fs::create_dir(&keys).unwrap();
    su.chown(&keys);
    let key = keys.join("vm.key");
    assert!(bw(
        su,
        &bulwark,
        &cfg,
        &["key", "create", "--out", key.to_str().unwrap()]
    )
    .status
    .success());
    let img = src.rig.fs.mnt.join("disk.img");
    image(&img, 9, 8, su);
    let k = key.to_str().unwrap();
    assert!(bw(
        su,
        &bulwark,
        &cfg,
        &[
            "backup",
            "--repo",
            &src.repo,
            "--job",
            "vm",
            "--key",
            k,
            img.to_str().unwrap()
        ]
    )
    .status
    .success());
    change(&img, 10, 1);
    assert!(bw(
        su,
        &bulwark,
        &cfg,
        &[
            "backup",
            "--repo",
            &src.repo,
            "--job",
            "vm",
            "--key",
            k,
            img.to_str().unwrap()
        ]
    )
    .status
    .success());
    // The key is moved away from the copier: the copy has none.
    let hidden = std::env::temp_dir().join(format!("bw-copy-key-{}", std::process::id()));
    std::fs::copy(&key, &hidden).unwrap();
    std::fs::remove_file(&key).unwrap();
    let o = bw(
        su,
        &bulwark,
        &cfg,
        &["--json", "copy", "--from", &src.repo, "--to", &dst.addr],
    );
    assert!(o.status.success());
    assert_eq!(json(&o)["jobs"][0]["points_copied"], 2);
    // On the target host, as its own user, with the key: byte-identical.
    let du = dst.user();
    let dkeys = dst.rig.fs.mnt.join("keys");
    std::fs::create_dir(&dkeys).unwrap();
    du.chown(&dkeys);
    let dkey = dkeys.join("vm.key");
    std::fs::copy(&hidden, &dkey).unwrap();
    std::fs::remove_file(&hidden).unwrap();
    du.chown(&dkey);
    let out = dkeys.join("r.img");
    let o = bw(
        du,
        &bulwark,
        &dkeys,
        &[
            "restore",
            "--repo",
            &dst.repo,
            "--job",
            "vm",
            "--key",
            dkey.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&img).unwrap());
    // Without the key the target refuses to restore it (it is still encrypted there).
    let o = bw(
        du,
        &bulwark,
        &dkeys,
        &[
            "restore",
            "--repo",
            &dst.repo,
            "--job",
            "vm",
            dkeys.join("nokey.img").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
}

#[test]
fn network_to_network_copy_and_verify_detects_tampering_on_the_target() {
    let name = "network_to_network_copy_and_verify_detects_tampering_on_the_target";
    let Some((bulwark, repo_bin)) = preamble(name) else {
        return;
    };
    let src = Site::new(&bulwark, &repo_bin, 7);
    let dst = Site::new(&bulwark, &repo_bin, 7);
    // A client backs up over the network to the source; a third host holds its identity (pull)
    // and an identity of the target (push).
    let client = TestUser::create();
    let cfg = dst.rig.fs.mnt.join("client");
    src.enroll("web1", &cfg, &client);
    dst.enroll("offsite-web1", &cfg, &client);
    let work = dst.rig.fs.mnt.join("work");
    std::fs::create_dir(&work).unwrap();
    client.chown(&work);
    let img = work.join("disk.img");
    image(&img, 11, 8, &client);
    for n in 0..3 {
        if n > 0 {
            change(&img, 41 + 2 * n, 1);
        }
        assert!(bw(
            &client,
            &bulwark,
            &cfg,
            &[
                "backup",
                "--repo",
                &src.addr,
                "--job",
                "web",
                img.to_str().unwrap()
            ]
        )
        .status
        .success());
    }
    let o = bw(
        &client,
        &bulwark,
        &cfg,
        &["--json", "copy", "--from", &src.addr, "--to", &dst.addr],
    );
    assert!(o.status.success());
    let r = json(&o);
    assert_eq!(r["jobs"][0]["points_copied"], 3, "{r}");
    let v = bw(
        &client,
        &bulwark,
        &cfg,
        &[
            "--json", "copy", "--verify", "--from", &src.addr, "--to", &dst.addr,
        ],
    );
    assert_eq!(v.status.code(), Some(0));
    assert_eq!(json(&v)["jobs"][0]["same"], 3);
    // Root on the target's host flips one stored byte of a sealed copy.
    let files = dst.store_files();
    let victim = &files[1].1;
    sh(&format!("chattr -i '{}'", victim.display()));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(victim)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 4096 + 17).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], 4096 + 17).unwrap();
    }
    sh(&format!("chattr +i '{}'", victim.display()));
    let v = bw(
        &client,
        &bulwark,
        &cfg,
        &[
            "--json", "copy", "--verify", "--from", &src.addr, "--to", &dst.addr,
        ],
    );
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
    let repo2 = src.rig.fs.mnt.join("repo2");
    std::fs::create_dir(&repo2).unwrap();
    su.chown(&repo2);
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
    let img = src.rig.fs.mnt.join("disk.img");
    image(&img, 21, 8, su);
    assert!(bw(
        su,
        &bulwark,
        &cfg,
        &[
            "backup",
            "--repo",
            &src.repo,
            "--job",
            "vm",
            img.to_str().unwrap()
        ]
    )
    .status
    .success());
    change(&img, 22, 1);
    assert!(bw(
        su,
        &bulwark,
        &cfg,
        &[
            "backup",
            "--repo",
            &src.repo,
            "--job",
            "vm",
            img.to_str().unwrap()
        ]
    )
    .status
    .success());
    let o = bw(
        su,
        &bulwark,
        &cfg,
        &["--json", "copy", "--from", &src.repo, "--to", r2],
    );
    assert!(o.status.success());
    let r = json(&o);
    assert_eq!(r["jobs"][0]["points_copied"], 2);
    let now = bulwark_time::UnixTime::now().secs();
    let a = listed(&json(&bw(
        su,
        &bulwark,
        &cfg,
        &["--json", "list", "--repo", &src.repo],
    )));
    let b = listed(&json(&bw(
        su,
        &bulwark,
        &cfg,
        &["--json", "list", "--repo", r2],
    )));
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
    let mut rng = Rng::new(seed);
    let point = PointId::new(
        created as u64 * 1_000_000_000,
        rng.bytes(8).try_into().unwrap(),
    );
    let path = dir.join(format!("{}.bwrp", point.to_hex()));
    let f = std::fs::File::create(&path).unwrap();
    let bs = 64 * 1024;
    let mut w = PointWriter::new(
        f,
        bulwark_format::Header {
            block_size: bs,
            disk_size: u64::from(bs),
            point_id: point,
        },
    )
    .unwrap();
    let data = rng.bytes(bs as usize);
    w.put_stored(StoredBlock::raw(BlockNo(0), &data)).unwrap();
    w.finish(PointMeta {
        kind: PointKind::ActiveFull,
        retention: RetentionClass::Regular,
        compression_level: 0,
        created_unix_secs: created,
        created_nanos: 0,
        block_size: bs,
        disk_size: u64::from(bs),
        point,
        parent: PointId::NONE,
        chain: point,
        job: job.into(),
        client: String::new(),
        stats: Stats::default(),
        files: vec![],
        extensions: vec![],
    })
    .unwrap();
    let r = bulwark_format::PointReader::open(std::fs::File::open(&path).unwrap()).unwrap();
    (bulwark_repository::CopyHead::of_reader(&r).unwrap(), data)
}

#[test]
fn a_client_certificate_of_the_source_cannot_delete_or_shorten_anything_on_the_target() {
    let name = "a_client_certificate_of_the_source_cannot_delete_or_shorten_anything_on_the_target";
    let Some((bulwark, repo_bin)) = preamble(name) else {
        return;
    };
    let src = Site::new(&bulwark, &repo_bin, 7);
    let dst = Site::new(&bulwark, &repo_bin, 30);
    let su = src.user();
    let cfg = src.rig.fs.mnt.join("client");
    dst.enroll("offsite-src", &cfg, su);
    // Another client's job on the target.
    let other = TestUser::create();
    let ocfg = dst.rig.fs.mnt.join("other");
    dst.enroll("alice", &ocfg, &other);
    let work = dst.rig.fs.mnt.join("work");
    std::fs::create_dir(&work).unwrap();
    other.chown(&work);
    let oimg = work.join("a.img");
    image(&oimg, 31, 2, &other);
    assert!(bw(
        &other,
        &bulwark,
        &ocfg,
        &[
            "backup",
            "--repo",
            &dst.addr,
            "--job",
            "alice-vm",
            oimg.to_str().unwrap()
        ]
    )
    .status
    .success());
    // An honest copy first.
    let img = src.rig.fs.mnt.join("disk.img");
    image(&img, 32, 4, su);
    assert!(bw(
        su,
        &bulwark,
        &cfg,
        &[
            "backup",
            "--repo",
            &src.repo,
            "--job",
            "vm",
            img.to_str().unwrap()
        ]
    )
    .status
    .success());
    assert!(bw(
        su,
        &bulwark,
        &cfg,
        &["copy", "--from", &src.repo, "--to", &dst.addr]
    )
    .status
    .success());
    let before: Vec<(String, i64)> = dst
        .store_files()
        .iter()
        .map(|(id, _)| (id.clone(), dst.expiry(id)))
        .collect();
    let src_before: Vec<(String, i64)> = src
        .store_files()
        .iter()
        .map(|(id, _)| (id.clone(), src.expiry(id)))
        .collect();
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
    let Some((bulwark, repo_bin)) = preamble(name) else {
        return;
    };
    let src = Site::new(&bulwark, &repo_bin, 7);
    let dst = Site::new(&bulwark, &repo_bin, 14);
    // A client backs up to the source over the network.
    let client = TestUser::create();
    let ccfg = src.rig.fs.mnt.join("client");
    src.enroll("web1", &ccfg, &client);
    let work = src.rig.fs.mnt.join("work");
    std::fs::create_dir(&work).unwrap();
    client.chown(&work);
    let img = work.join("disk.img");
    image(&img, 51, 8, &client);
    let web = [
        "backup",
        "--repo",
        &src.addr,
        "--job",
        "web",
        img.to_str().unwrap(),
    ];
    assert!(bw(&client, &bulwark, &ccfg, &web).status.success());
    change(&img, 53, 1);
    assert!(bw(&client, &bulwark, &ccfg, &web).status.success());
    // Pull: the target host holds a second certificate of the job's owner on the source, and
    // the source holds nothing of the target. A [copy] job file, run by `bulwark job run`.
    let du = dst.user();
    let dcfg = dst.rig.fs.mnt.join("pull");
    src.enroll("web1", &dcfg, du);
    let jobs = dst.rig.fs.mnt.join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    du.chown(&jobs);
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
    let o = bw(du, &bulwark, &dcfg, &run);
    assert!(o.status.success());
    let r = json(&o);
    assert_eq!(r["jobs"][0]["points_copied"], 2, "{r}");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("jobs").join("offsite.json")).unwrap())
            .unwrap();
    assert_eq!(rec["ok"], true, "{rec}");
    // Sealed by the target's own service, with the target's own 14 days.
    let now = bulwark_time::UnixTime::now().secs();
    let files = dst.store_files();
    assert_eq!(files.len(), 2);
    for (id, path) in &files {
        assert!(is_immutable(path));
        assert!(dst.expiry(id) >= now + 13 * DAY, "{id}");
    }
    // The same points and digests on both sides; the next run copies nothing.
    let v = bw(
        du,
        &bulwark,
        &dcfg,
        &[
            "--json", "copy", "--verify", "--from", &src.addr, "--to", &dst.repo,
        ],
    );
    assert_eq!(v.status.code(), Some(0));
    assert_eq!(json(&v)["jobs"][0]["same"], 2);
    let o = bw(du, &bulwark, &dcfg, &run);
    assert_eq!(json(&o)["jobs"][0]["points_copied"], 0);
    // Restores on the target host, locally, byte-identical.
    let out = jobs.join("r.img");
    let o = bw(
        du,
        &bulwark,
        &dcfg,
        &[
            "restore",
            "--repo",
            &dst.repo,
            "--job",
            "web",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&img).unwrap());
}

#[test]
fn three_weeks_of_nightly_copies_keep_weekly_fulls_on_the_target_after_the_source_removed_them() {
    let name = "three_weeks_of_nightly_copies_keep_weekly_fulls_on_the_target_after_the_source_removed_them";
    let Some((bulwark, repo_bin)) = preamble(name) else {
        return;
    };
    let Some(lib) = bulwark_testkit::skip::require_faketime(name) else {
        return;
    };
    let mut src = Site::new(&bulwark, &repo_bin, 7);
    let mut dst = Site::new(&bulwark, &repo_bin, 30);
    let cfg = src.rig.fs.mnt.join("client");
    dst.enroll("offsite-src", &cfg, src.user());
    let su_run = |site: &Site, day: i64, args: &[&str]| {
        let o = site
            .user()
            .cmd(&repo_bin)
            .args(args)
            .envs(fake_env(&lib, day))
            .output()
            .unwrap();
        bulwark_testkit::show(&format!("day {day}: bulwark-repo {}", args.join(" ")), &o);
        o
    };
    // The source keeps dailies; the target keeps 4 weekly and 3 monthly fulls.
    assert!(su_run(
        &src,
        0,
        &[
            "policy",
            &src.repo,
            "--job",
            "vm",
            "--keep-days",
            "7",
            "--keep-points",
            "1"
        ]
    )
    .status
    .success());
    assert!(su_run(
        &dst,
        0,
        &[
            "policy",
            &dst.repo,
            "--job",
            "vm",
            "--keep-points",
            "1",
            "--weekly",
            "4",
            "--monthly",
            "3"
        ]
    )
    .status
    .success());
    let img = src.rig.fs.mnt.join("disk.img");
    image(&img, 61, 4, src.user());
    let first = src.rig.fs.mnt.join("night0.img");
    let mut fulls = vec![];
    for day in 0..21i64 {
        src.at_day(&lib, day);
        dst.at_day(&lib, day);
        let su = src.user();
        if day > 0 {
            change(&img, 1001 + 2 * day as u64, 1);
        }
        let mut args = vec!["--json", "backup", "--repo", &src.repo, "--job", "vm"];
        if day % 7 == 0 && day > 0 {
            args.push("--full");
        }
        args.push(img.to_str().unwrap());
        let b = json(&bw_at(su, &lib, day, &bulwark, &cfg, &args));
        if day % 7 == 0 {
            fulls.push(b["point"].as_str().unwrap().to_string());
        }
        if day == 0 {
            std::fs::copy(&img, &first).unwrap();
        }
        let c = bw_at(
            su,
            &lib,
            day,
            &bulwark,
            &cfg,
            &["--json", "copy", "--from", &src.repo, "--to", &dst.addr],
        );
        assert!(c.status.success(), "day {day}");
        assert_eq!(json(&c)["jobs"][0]["points_copied"], 1, "day {day}");
        assert!(su_run(&src, day, &["retention", &src.repo])
            .status
            .success());
        assert!(su_run(&dst, day, &["retention", &dst.repo])
            .status
            .success());
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
    let plan = json(&su_run(
        &dst,
        20,
        &["--json", "retention", &dst.repo, "--dry-run"],
    ));
    for f in &fulls {
        let m = plan[0]["marks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["point"] == f.as_str())
            .unwrap();
        let reasons: Vec<&str> = m["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(
            reasons.iter().any(|r| r.contains("GFS weekly")),
            "{f}: {reasons:?}"
        );
    }
    // --verify sees the points only the target still holds; nothing differs.
    let su = src.user();
    let v = json(&bw_at(
        su,
        &lib,
        20,
        &bulwark,
        &cfg,
        &[
            "--json", "copy", "--verify", "--from", &src.repo, "--to", &dst.addr,
        ],
    ));
    let j = &v["jobs"][0];
    assert_eq!(j["different"], 0, "{v}");
    assert_eq!(
        j["only_on_target"].as_u64().unwrap() as usize,
        21 - held_src.len(),
        "{v}"
    );
    // The first night restores from the target alone, byte-identical.
    let out_dir = src.rig.fs.mnt.join("restores");
    std::fs::create_dir(&out_dir).unwrap();
    su.chown(&out_dir);
    let out = out_dir.join("night0.img");
    let o = bw_at(
        su,
        &lib,
        20,
        &bulwark,
        &cfg,
        &[
            "restore",
            "--repo",
            &dst.addr,
            "--job",
            "vm",
            "--point",
            &fulls[0],
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&first).unwrap());
    // The next night's copy sends nothing it already sent, and nothing the source lost.
    let c = json(&bw_at(
        su,
        &lib,
        20,
        &bulwark,
        &cfg,
        &["--json", "copy", "--from", &src.repo, "--to", &dst.addr],
    ));
    assert_eq!(c["bytes_sent"], 0);
}
