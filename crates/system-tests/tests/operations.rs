//! Production operations (issue 18), each staged for real: network jobs through
//! `bulwark job run` against a real `bulwark-repo serve` as an unprivileged user, a job of two
//! disks, and one notification test per event, delivered to a local HTTP receiver and a local
//! SMTP receiver (aiosmtpd) started here — a failed backup, a killed backup, a flipped byte, a
//! wall-clock jump of bulwark-immutd under libfaketime, a file left in `incoming/`, locked
//! bytes near the cap; and the metrics file checked by `promtool` against `list --json`.
//! Root only (service users, loop filesystems); each test says why it skips.

use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bulwark_testkit::cmd::json;
use bulwark_testkit::guarded::{wait_for, System};
use bulwark_testkit::immutd::Immutd;
use bulwark_testkit::serve::{self, Service};
use bulwark_testkit::skip::require_faketime;
use bulwark_testkit::system::{
    flip_a_stored_byte, unlocks_frozen_within, user_dir, WallClock, DAY,
};
use bulwark_testkit::webhook::Hook;
use bulwark_testkit::{expect_binary, require_root, sh, show, FsKind, Rng, TestUser};

fn monitor_bin() -> PathBuf {
    expect_binary("bulwark-monitor")
}

/// A local SMTP receiver (`python3 -m aiosmtpd`, Debian's python3-aiosmtpd) writing a
/// Maildir; stopped on drop.
struct Smtp {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Smtp {
    /// `None` after a printed SKIP when aiosmtpd is not installed.
    fn start(test: &str) -> Option<Smtp> {
        let py = "/usr/bin/python3";
        let ok = Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            bulwark_testkit::skip::skip(
                test,
                "aiosmtpd is not installed (apt-get install python3-aiosmtpd)",
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new(py)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Smtp {
            child,
            port,
            maildir,
        };
        assert!(
            wait_for(10, || std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()),
            "aiosmtpd did not start"
        );
        Some(s)
    }

    /// The messages received, as text.
    fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail/new");
        let Ok(rd) = std::fs::read_dir(dir) else {
            return vec![];
        };
        rd.flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Notification settings for `hook` (and `smtp`), readable by `user` when given.
fn notify_config(dir: &Path, hook: &Hook, smtp: Option<&Smtp>, user: Option<&TestUser>) -> PathBuf {
    let mut text = format!("[[webhook]]\nurl = \"{}\"\n", hook.url);
    if let Some(s) = smtp {
        text.push_str(&format!(
            "[[email]]\nserver = \"127.0.0.1:{}\"\nsecurity = \"none\"\nfrom = \"bulwark@test.invalid\"\nto = [\"ops@test.invalid\"]\n",
            s.port
        ));
    }
    let p = dir.join("notify.toml");
    std::fs::write(&p, text).unwrap();
    if let Some(u) = user {
        u.chown(&p);
    }
    p
}

fn random_image(path: &Path, seed: u64, bytes: usize) {
    std::fs::write(path, Rng::new(seed).bytes(bytes)).unwrap();
}

/// A repository service ([`Service`]: a fresh service user, `bulwark-repo init`, `serve` on
/// 127.0.0.1) and the one client a job timer runs as root.
struct Net {
    svc: Service,
    name: String,
}

impl Net {
    /// A [`Service`] with the client enrolled as `client`, for a root-only test; `None` after
    /// a printed SKIP.
    fn enrolled(test: &str, client: &str) -> Option<Net> {
        if !require_root(test, "creating the unprivileged service user") {
            return None;
        }
        let svc = Service::start(&[]);
        svc.enroll(client);
        Some(Net {
            svc,
            name: client.to_string(),
        })
    }

    /// The client's `bulwark`.
    fn bulwark(&self) -> serve::Client<'_> {
        self.svc.bulwark(&self.name)
    }

    fn client(&self, args: &[&str]) -> Output {
        self.bulwark().run(args)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.svc.path(name)
    }

    /// `bulwark --json job CMD JOB ARGS…` as the client.
    fn job(&self, cmd: &str, job: &Path, args: &[&str]) -> Output {
        let mut a = vec!["--json", "job", cmd, job.to_str().unwrap()];
        a.extend_from_slice(args);
        self.client(&a)
    }

    /// [`Net::job`] with the run records in `state` and the notification settings `cfg`.
    fn job_notifying(&self, cmd: &str, job: &Path, state: &Path, cfg: &Path) -> Output {
        let (state, cfg) = (state.to_str().unwrap(), cfg.to_str().unwrap());
        self.job(cmd, job, &["--state-dir", state, "--notify-config", cfg])
    }
}

fn two_disk_job(net: &Net, name: &str, os: &Path, data: &Path, extra: &str) -> PathBuf {
    let p = net.path(&format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\nrepository = \"{}\"\nblock_size = \"64K\"\n{extra}\n\
             [[disk]]\nname = \"os\"\nsource = \"{}\"\n[[disk]]\nname = \"data\"\nsource = \"{}\"\n",
            net.svc.addr,
            os.display(),
            data.display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_network_job_of_two_disks_backs_up_each_disk_over_tls_as_its_own_job() {
    let test = "a_network_job_of_two_disks_backs_up_each_disk_over_tls_as_its_own_job";
    let Some(net) = Net::enrolled(test, "db01-host") else {
        return;
    };
    let (os, data) = (net.path("os.img"), net.path("data.img"));
    random_image(&os, 1, 3 << 20);
    random_image(&data, 2, 2 << 20);
    let job = two_disk_job(&net, "db01", &os, &data, "");
    let state = net.path("state");
    let run = |json_out: bool| {
        let mut a = vec![];
        if json_out {
            a.push("--json");
        }
        a.extend([
            "job",
            "run",
            job.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        net.client(&a)
    };
    // Text: one result line per disk.
    let o = run(false);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("job db01 disk os: full — first backup of the job"),
        "{text}"
    );
    assert!(
        text.contains("job db01 disk data: full — first backup of the job"),
        "{text}"
    );
    assert!(text.contains("job db01: 2 of 2 disks backed up"), "{text}");

    // A change on one disk; the next run is an incremental of each, recorded per disk.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .write_all_at(&[0xAB; 70_000], 100_000)
        .unwrap();
    let o = run(true);
    assert_eq!(o.status.code(), Some(0));
    let v = json(&o);
    assert_eq!(v["ok"], true);
    let disks = v["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0]["job"], "db01.os");
    assert_eq!(disks[1]["job"], "db01.data");
    for d in disks {
        assert_eq!(d["ok"], true, "{d}");
        assert_eq!(d["kind"], "incremental", "{d}");
    }
    assert!(
        disks[1]["bytes_stored"].as_u64().unwrap() > disks[0]["bytes_stored"].as_u64().unwrap(),
        "only data changed: {disks:?}"
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("jobs/db01.json")).unwrap()).unwrap();
    assert_eq!(rec["ok"], true);
    assert_eq!(rec["disks"].as_array().unwrap().len(), 2);
    assert!(rec["last_success_unix"].as_i64().unwrap() > 0);

    // The repository holds two jobs, each its own chain of two points, owned by the client.
    let l = json(&net.client(&["--json", "list", "--repo", &net.svc.addr]));
    let jobs: Vec<&str> = l["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["db01.data", "db01.os"]);
    for j in l["jobs"].as_array().unwrap() {
        let p = j["points"].as_array().unwrap();
        assert_eq!(p.len(), 2, "{j}");
        assert_eq!(p[0]["chain"], p[1]["chain"]);
        assert_eq!(p[1]["client"], "db01-host");
    }
    // And the changed disk restores byte for byte.
    let back = net.path("data.back");
    let o = net.client(&[
        "restore",
        "--repo",
        &net.svc.addr,
        "--job",
        "db01.data",
        back.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&data).unwrap());
    // The plan of a network job shows what its runs will do: on the synthetic-full day an
    // incremental (the host builds synthetic fulls itself), never a client-side synthetic full.
    let sched = two_disk_job(
        &net,
        "db01",
        &os,
        &data,
        "[schedule]\nsynthetic_full_day = \"sunday\"",
    );
    let o = net.job("plan", &sched, &["--runs", "8"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!plan.contains("\"synthetic-full\""), "{plan}");
    assert!(plan.contains("built on the repository host"), "{plan}");
    // The plan of a job of two disks shows each disk.
    let p = json(&net.job("plan", &job, &["--runs", "2"]));
    assert_eq!(p["disks"].as_array().unwrap().len(), 2, "{p}");
}

#[test]
fn a_failed_backup_is_notified_by_webhook_and_email_with_one_result_per_disk() {
    let test = "a_failed_backup_is_notified_by_webhook_and_email_with_one_result_per_disk";
    let Some(net) = Net::enrolled(test, "web02") else {
        return;
    };
    let Some(smtp) = Smtp::start(test) else {
        return;
    };
    let hook = Hook::start();
    let cfg = notify_config(net.svc.dir.path(), &hook, Some(&smtp), None);
    let os = net.path("os.img");
    random_image(&os, 3, 1 << 20);
    // The data disk is gone (a snapshot that was never made).
    let job = two_disk_job(&net, "web02", &os, &net.path("missing-snapshot"), "");
    let o = net.job_notifying("run", &job, &net.path("state"), &cfg);
    assert_eq!(o.status.code(), Some(2), "a failed disk fails the run");
    let v = json(&o);
    assert_eq!(v["ok"], false);
    let d = v["disks"].as_array().unwrap();
    assert_eq!(d[0]["ok"], true, "the other disk is still backed up");
    assert_eq!(d[1]["ok"], false);
    assert!(
        d[1]["error"].as_str().unwrap().contains("missing-snapshot"),
        "{}",
        d[1]
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("<3>bulwark-event event=backup_failed subject=\"web02\""),
        "{stderr}"
    );

    let ev = hook.events("backup_failed");
    assert_eq!(ev.len(), 1, "{:?}", hook.requests());
    let req = &hook.requests()[0];
    assert_eq!(req.path, "/hook");
    assert!(
        req.headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/json"),
        "{:?}",
        req.headers
    );
    assert_eq!(ev[0]["subject"], "web02");
    let msg = ev[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("1 of 2 disks") && msg.contains("data: "),
        "{msg}"
    );
    assert!(
        wait_for(10, || !smtp.messages().is_empty()),
        "no mail arrived"
    );
    let mail = &smtp.messages()[0];
    assert!(mail.contains("Subject: Bulwark on"), "{mail}");
    assert!(mail.contains("backup failed (web02)"), "{mail}");
    assert!(mail.contains("To: ops@test.invalid"), "{mail}");
}

#[test]
fn a_killed_backup_is_notified_as_missed_by_job_check() {
    let test = "a_killed_backup_is_notified_as_missed_by_job_check";
    // The check runs two hours later (libfaketime): the job's alert interval is 1 hour, the
    // least a job file may say.
    let Some(lib) = require_faketime(test) else {
        return;
    };
    let Some(net) = Net::enrolled(test, "web03") else {
        return;
    };
    let hook = Hook::start();
    let cfg = notify_config(net.svc.dir.path(), &hook, None, None);
    // The source is an NBD server that accepts and never says a word: the run hangs reading
    // its greeting, after marking its start. (A FIFO did this once; it is refused now.)
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nbd = format!("nbd://{}/stuck", silent.local_addr().unwrap());
    let _held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept() {
            conns.push(c);
        }
    });
    let job = net.path("web03.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"web03\"\nrepository = \"{}\"\nsource = \"{}\"\nalert_after_hours = 1\n",
            net.svc.addr, nbd
        ),
    )
    .unwrap();
    let state = net.path("state");
    let mut run = net
        .bulwark()
        .command(&[
            "job",
            "run",
            job.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .arg("--notify-config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rec = state.join("jobs/web03.json");
    assert!(
        wait_for(20, || rec.exists()),
        "the run never marked its start"
    );
    std::thread::sleep(Duration::from_millis(500));
    run.kill().unwrap(); // SIGKILL: nothing of the run can record its end.
    run.wait().unwrap();
    let (st, c) = (state.to_str().unwrap(), cfg.to_str().unwrap());
    let check = [
        "--json",
        "job",
        "check",
        job.to_str().unwrap(),
        "--state-dir",
        st,
        "--notify-config",
        c,
    ];
    let o = net
        .bulwark()
        .command(&check)
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME", "+2h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap();
    bulwark_testkit::show("bulwark job check, two hours later", &o);
    assert_eq!(o.status.code(), Some(1), "an overdue job exits 1");
    let ev = hook.events("backup_missed");
    assert_eq!(ev.len(), 1, "{:?}", hook.requests());
    let msg = ev[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("job web03") && msg.contains("never finished"),
        "{msg}"
    );
    assert!(
        hook.events("backup_failed").is_empty(),
        "a killed run sends nothing itself"
    );
}

/// A guarded repository with a running bulwark-immutd, and a webhook receiver whose
/// settings the service user can read.
struct Host {
    sys: System,
    hook: Hook,
    cfg: PathBuf,
    state: PathBuf,
}

impl Host {
    fn new(test: &str, kind: FsKind) -> Option<Host> {
        let sys = System::guarded(test, &["mkfs.ext4", "useradd", "chattr"], kind)?;
        let hook = Hook::start();
        let dir = user_dir(sys.user(), sys.rig.fs.mnt.join("ops"));
        let cfg = notify_config(&dir, &hook, None, Some(sys.user()));
        let state = dir.join("monitor");
        Some(Host {
            sys,
            hook,
            cfg,
            state,
        })
    }

    /// A [`Host::new`] with its bulwark-immutd started.
    fn started(test: &str, kind: FsKind) -> Option<(Host, Immutd)> {
        let h = Host::new(test, kind)?;
        let svc = h.sys.rig.start();
        Some((h, svc))
    }

    /// `bulwark-monitor --json check REPO …` as the service user.
    fn check(&self, extra: &[&str]) -> Output {
        let mut a = vec![
            "--json",
            "check",
            &self.sys.repo,
            "--notify-config",
            self.cfg.to_str().unwrap(),
            "--state-dir",
            self.state.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        self.sys.user().run(&monitor_bin(), &a)
    }
}

#[test]
fn damage_found_by_verify_is_notified_by_the_monitor() {
    let test = "damage_found_by_verify_is_notified_by_the_monitor";
    let Some((h, svc)) = Host::started(test, FsKind::Ext4) else {
        return;
    };
    let img = h.sys.image("d.img", &Rng::new(5).bytes(1 << 20));
    assert!(h.sys.backup(false, "vm-7", &img).status.success());
    let o = h.check(&[]);
    assert_eq!(o.status.code(), Some(0), "a healthy repository");
    assert!(h.hook.requests().is_empty());
    let ledger = svc.client().unwrap().list(&h.sys.rig.repo).unwrap();
    let point = ledger[0].point.to_hex();
    flip_a_stored_byte(&ledger[0].sealed_path);
    let v = h.sys.repo_cmd(&["verify", &h.sys.repo]);
    assert_eq!(v.status.code(), Some(1), "verify finds the damage");
    let o = h.check(&[]);
    assert_eq!(o.status.code(), Some(1));
    let ev = h.hook.events("verify_damage");
    assert_eq!(ev.len(), 1, "{:?}", h.hook.requests());
    assert_eq!(ev[0]["subject"], "vm-7");
    assert!(
        ev[0]["message"].as_str().unwrap().contains(&point),
        "{}",
        ev[0]
    );
    assert_eq!(ev[0]["severity"], "critical");
    svc.stop();
}

#[test]
fn a_wall_clock_jump_of_the_immutability_service_is_notified_once_while_it_lasts() {
    let test = "a_wall_clock_jump_of_the_immutability_service_is_notified_once_while_it_lasts";
    if require_faketime(test).is_none() {
        return;
    }
    let Some(h) = Host::new(test, FsKind::Ext4) else {
        return;
    };
    let clock = WallClock::new(&h.sys.rig);
    let svc = clock.start(&h.sys.rig);
    assert_eq!(h.check(&[]).status.code(), Some(0));
    // Three days forward on the wall clock only: the service freezes every unlock.
    clock.jump(3 * DAY);
    assert!(unlocks_frozen_within(&svc, 15), "the jump was not detected");
    let o = h.check(&[]);
    assert_eq!(o.status.code(), Some(1));
    let ev = h.hook.events("clock_frozen");
    assert_eq!(ev.len(), 1, "{:?}", h.hook.requests());
    assert!(
        ev[0]["message"]
            .as_str()
            .unwrap()
            .contains("froze every unlock"),
        "{}",
        ev[0]
    );
    // Still frozen a minute later: reported, not sent again (repeat_hours, default 24).
    let o = h.check(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json(&o)["conditions"][0]["sent"], false);
    assert_eq!(h.hook.events("clock_frozen").len(), 1);
    svc.stop();
}

#[test]
fn a_file_left_in_incoming_is_notified_as_not_sealed() {
    let test = "a_file_left_in_incoming_is_notified_as_not_sealed";
    let Some((h, svc)) = Host::started(test, FsKind::Ext4) else {
        return;
    };
    // A finished restore-point file nobody asked the service to seal, two minutes old.
    let p = h
        .sys
        .rig
        .incoming_path(bulwark_testkit::guarded::new_point());
    std::fs::write(&p, Rng::new(9).bytes(8192)).unwrap();
    h.sys.user().chown(&p);
    sh(&format!("touch -d '-2 minutes' '{}'", p.display()));
    let o = h.check(&[]);
    assert_eq!(o.status.code(), Some(1));
    let ev = h.hook.events("not_sealed");
    assert_eq!(ev.len(), 1, "{:?}", h.hook.requests());
    let name = p.file_name().unwrap().to_str().unwrap();
    assert!(
        ev[0]["message"].as_str().unwrap().contains(name),
        "{}",
        ev[0]
    );
    // A fresh one is within the minute sealing may take.
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, b"fresh").unwrap();
    h.sys.user().chown(&p);
    assert_eq!(h.check(&[]).status.code(), Some(0));
    svc.stop();
}

#[test]
fn locked_bytes_above_80_percent_of_the_root_cap_are_notified() {
    let test = "locked_bytes_above_80_percent_of_the_root_cap_are_notified";
    let Some(mut h) = Host::new(test, FsKind::Ext4) else {
        return;
    };
    // A cap of 1.2 MiB and a backup of 1 MiB of random data (incompressible).
    h.sys.rig.setup.max_locked_bytes = 1_200_000;
    let svc = h.sys.rig.start();
    let cap_cfg = h.sys.rig.setup.config_path();
    let img = h.sys.image("d.img", &Rng::new(11).bytes(1 << 20));
    assert!(h.sys.backup(false, "big", &img).status.success());
    let locked = svc.client().unwrap().status().unwrap().bytes_locked;
    assert!(locked * 100 > 1_200_000 * 80, "locked {locked}");
    let o = h.check(&["--immutd-config", cap_cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let ev = h.hook.events("locked_bytes_high");
    assert_eq!(ev.len(), 1, "{:?}", h.hook.requests());
    assert!(
        ev[0]["message"].as_str().unwrap().contains("1200000"),
        "{}",
        ev[0]
    );
    // Above 95 % only: nothing to say.
    let o = h.check(&[
        "--immutd-config",
        cap_cfg.to_str().unwrap(),
        "--cap-percent",
        "95",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    svc.stop();
}

/// `name{labels} value` lines of a metrics text, for a metric name.
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, v) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (lab, v) = r.split_once("} ")?;
                    (lab.to_string(), v)
                }
                None => (String::new(), rest.strip_prefix(' ')?),
            };
            Some((labels, v.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn the_metrics_file_passes_promtool_and_agrees_with_list_json() {
    let test = "the_metrics_file_passes_promtool_and_agrees_with_list_json";
    if !bulwark_testkit::require_tools(test, &["promtool"]) {
        return;
    }
    let Some((h, svc)) = Host::started(test, FsKind::Xfs) else {
        return;
    };
    let mut rng = Rng::new(21);
    let a = h.sys.image("a.img", &rng.bytes(2 << 20));
    let b = h.sys.image("b.img", &rng.bytes(1 << 20));
    for _ in 0..2 {
        assert!(h.sys.backup(false, "alpha", &a).status.success());
    }
    assert!(h.sys.backup(false, "beta", &b).status.success());
    // Verify: every point gets its verify time.
    assert_eq!(
        h.sys
            .repo_cmd(&["verify", &h.sys.repo, "--within-days", "1"])
            .status
            .code(),
        Some(0)
    );
    let prom = h.sys.rig.fs.mnt.join("ops").join("bulwark.prom");
    // Two connections held open to a listener standing in for the transport's port.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let _c1 = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _c2 = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let o = h.check(&[
        "--metrics",
        prom.to_str().unwrap(),
        "--transport-port",
        &port,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let text = std::fs::read_to_string(&prom).unwrap();
    let pt = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&prom).unwrap())
        .output()
        .unwrap();
    show("promtool check metrics", &pt);
    assert!(pt.status.success(), "promtool refused the file:\n{text}");
    assert!(
        !String::from_utf8_lossy(&pt.stdout).contains("lint") && pt.stderr.is_empty(),
        "promtool lint findings"
    );

    let l = json(
        &h.sys
            .user()
            .run(&h.sys.bulwark, &["--json", "list", "--repo", &h.sys.repo]),
    );
    let st = json(&h.sys.repo_cmd(&["--json", "status", &h.sys.repo]));
    let points = samples(&text, "bulwark_job_points");
    let last = samples(&text, "bulwark_job_last_success_timestamp_seconds");
    let verified = samples(&text, "bulwark_job_verify_timestamp_seconds");
    let phys = samples(&text, "bulwark_job_physical_bytes");
    let logical = samples(&text, "bulwark_job_logical_bytes");
    for j in l["jobs"].as_array().unwrap() {
        let name = j["job"].as_str().unwrap();
        let of = |v: &[(String, f64)]| {
            v.iter()
                .find(|(lab, _)| lab.contains(&format!("job=\"{name}\"")))
                .map(|(_, x)| *x)
                .unwrap_or_else(|| panic!("no sample for {name}:\n{text}"))
        };
        let p = j["points"].as_array().unwrap();
        assert_eq!(of(&points) as usize, p.len(), "{name}");
        assert_eq!(
            of(&last) as i64,
            p.last().unwrap()["created_unix"].as_i64().unwrap()
        );
        // Logical bytes are the files' sizes; physical ones their extents (whole 4 KiB
        // filesystem blocks), shared extents counted once.
        let file_bytes: u64 = p.iter().map(|x| x["file_bytes"].as_u64().unwrap()).sum();
        assert_eq!(of(&logical) as u64, file_bytes, "{name}");
        let slack = 4096 * p.len() as u64;
        assert!(
            of(&phys) > 0.0 && of(&phys) as u64 <= file_bytes + slack,
            "{name}: physical {} logical {file_bytes}",
            of(&phys)
        );
        // list --json shows the same verify time for each point, status the job's.
        let v = of(&verified) as i64;
        assert_eq!(st["verified_unix"][name].as_i64(), Some(v), "{st}");
        for x in p {
            assert_eq!(x["last_verified_unix"].as_i64(), Some(v), "{x}");
        }
    }
    let up = samples(&text, "bulwark_immutd_up");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0);
    let status = svc.client().unwrap().status().unwrap();
    assert_eq!(
        samples(&text, "bulwark_immutd_locked_bytes")[0].1 as u64,
        status.bytes_locked
    );
    assert!(
        !samples(&text, "bulwark_locked_bytes").is_empty(),
        "bytes locked by expiry day"
    );
    assert_eq!(samples(&text, "bulwark_unsealed_files")[0].1, 0.0);
    assert_eq!(
        samples(&text, "bulwark_transport_connections")[0].1,
        2.0,
        "{text}"
    );
    svc.stop();
}
