//! A backup job over 35 simulated days on a guarded repository: real service user, XFS on a
//! loop device, the real bulwark-immutd, the real `bulwark job run` and `bulwark-repo
//! retention`. Each simulated day shifts every clock of every process with libfaketime (never
//! the machine's clock). Files must disappear only when both retention and immutability
//! allow, and deleting through the service must be refused before. Root only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

use bulwark_testkit::guarded::*;
use bulwark_testkit::immutd::ImmutdSetup;
use bulwark_testkit::system::{mark, reasons, user_dir, DAY};

/// Runs `prog args` as the service user with every clock `offset` seconds ahead.
fn as_user_at(u: &TestUser, lib: &Path, offset: i64, prog: &Path, args: &[&str]) -> Output {
    let o = u
        .cmd(prog.to_str().unwrap())
        .args(args)
        .env("LD_PRELOAD", lib)
        .env("FAKETIME", format!("+{offset}"))
        .output()
        .unwrap();
    if !o.status.success() {
        eprintln!(
            "{} {:?} at +{}d: {}{}",
            prog.display(),
            args,
            offset / DAY,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    o
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "command failed");
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

/// The points `bulwark list` shows for the first job, at `offset`.
fn listed(u: &TestUser, lib: &Path, offset: i64, bulwark: &Path, repo: &str) -> Vec<String> {
    let v = json(&as_user_at(
        u,
        lib,
        offset,
        bulwark,
        &["--json", "list", "--repo", repo],
    ));
    v["jobs"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["point"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_job_over_35_simulated_days_loses_files_only_after_retention_and_expiry() {
    let name = "a_job_over_35_simulated_days_loses_files_only_after_retention_and_expiry";
    if !can_run(name, &["mkfs.xfs", "useradd", "faketime"]) {
        return;
    }
    let Some(lib) = bulwark_testkit::skip::require_faketime(name) else {
        return;
    };
    let Some((bulwark, repo_bin)) = client_bins(name) else {
        return;
    };
    let rig = Rig::new(FsKind::Xfs);
    let u = &rig.user;
    let repo = rig.repo.to_str().unwrap().to_string();
    let sock = rig.socket();
    std::fs::remove_dir(rig.repo.join("incoming")).unwrap(); // init wants an empty folder
    let o = as_user_at(
        u,
        &lib,
        0,
        &repo_bin,
        &[
            "init",
            &repo,
            "--immutable-days",
            "7",
            "--immutd-socket",
            sock.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    let o = as_user_at(
        u,
        &lib,
        0,
        &repo_bin,
        &[
            "policy",
            &repo,
            "--job",
            "vm",
            "--keep-days",
            "4",
            "--keep-points",
            "3",
        ],
    );
    assert!(o.status.success());
    let img = rig.fs.mnt.join("disk.img");
    let mut rng = bulwark_testkit::Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut noise = |n: usize| rng.bytes(n);
    std::fs::write(&img, noise(4 << 20)).unwrap();
    std::os::unix::fs::chown(&img, Some(u.uid), Some(u.gid)).unwrap();
    let job = rig.fs.mnt.join("vm.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"vm\"\nsource = \"{}\"\nrepository = \"{repo}\"\nblock_size = \"64K\"\n\
             [schedule]\nsynthetic_full_day = \"sunday\"\n",
            img.display()
        ),
    )
    .unwrap();
    // The service user has no home folder here: its run records go beside the job file.
    let state = user_dir(u, rig.fs.mnt.join("job-state"));
    let setup: ImmutdSetup = rig.setup.clone();
    let mut expiry: BTreeMap<String, i64> = BTreeMap::new();
    let mut removed_total = 0;
    let mut refused_early = 0;
    let mut synthetic = 0;
    for day in 0..35i64 {
        let offset = day * DAY;
        let mut s = setup.clone();
        s.env = vec![
            ("LD_PRELOAD".into(), lib.clone().into()),
            ("FAKETIME".into(), format!("+{offset}").into()),
        ];
        let svc = s.spawn(&immutd_bin()).expect("starting bulwark-immutd");
        // A day of changes, then the scheduled run.
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        std::os::unix::fs::FileExt::write_all_at(
            &f,
            &noise(100_000),
            (day as u64 * 131_072) % (3 << 20),
        )
        .unwrap();
        drop(f);
        let run = json(&as_user_at(
            u,
            &lib,
            offset,
            &bulwark,
            &[
                "--json",
                "job",
                "run",
                "--state-dir",
                state.to_str().unwrap(),
                job.to_str().unwrap(),
            ],
        ));
        if run["synthetic_full"].is_string() {
            synthetic += 1;
            assert_eq!(
                run["synthetic_method"], "clone",
                "XFS clones synthetic fulls"
            );
        }
        let points = listed(u, &lib, offset, &bulwark, &repo);
        for p in &points {
            let q = u.ctl(&sock, &["query", p]).ok();
            expiry.insert(p.clone(), q.int("expiry_unix"));
        }
        let plan = json(&as_user_at(
            u,
            &lib,
            offset,
            &repo_bin,
            &["--json", "retention", &repo, "--dry-run"],
        ));
        let fake_now = bulwark_time::UnixTime::now().secs() + offset;
        // A point past retention but still immutable: the service must refuse its deletion.
        for m in plan[0]["marks"].as_array().unwrap() {
            let reasons = reasons(m);
            let only_immutable = !reasons.is_empty()
                && reasons.iter().all(|r| {
                    r.starts_with("still immutable")
                        || r.starts_with("chain dependency")
                        || r.starts_with("its chain")
                });
            let p = m["point"].as_str().unwrap();
            if only_immutable
                && reasons.iter().any(|r| r.starts_with("still immutable"))
                && refused_early < 3
            {
                let r = u.ctl(&sock, &["delete", p]);
                assert_eq!(
                    r.refused().as_deref(),
                    Some("Refused"),
                    "day {day}: deleting {p} before its expiry was not refused"
                );
                refused_early += 1;
            }
        }
        let applied = json(&as_user_at(
            u,
            &lib,
            offset,
            &repo_bin,
            &["--json", "retention", &repo],
        ));
        let removed: BTreeSet<String> = applied[0]["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        for p in &removed {
            let e = expiry[p];
            assert!(
                e <= fake_now + 5,
                "day {day}: {p} removed while immutable until {e} (now {fake_now})"
            );
            let reasons = reasons(mark(&plan, p));
            assert!(
                reasons.iter().all(|r| r.starts_with("still immutable")),
                "day {day}: {p} removed although retention kept it: {reasons:?}"
            );
        }
        removed_total += removed.len();
        // Everything still protected is still there, immutable.
        let left: BTreeSet<String> = listed(u, &lib, offset, &bulwark, &repo)
            .into_iter()
            .collect();
        for p in &points {
            if expiry[p] > fake_now + 5 {
                assert!(
                    left.contains(p),
                    "day {day}: {p} vanished before its expiry"
                );
            }
        }
        assert!(
            left.len() + removed.len() == points.len(),
            "day {day}: files vanished outside retention"
        );
        if day == 34 {
            // What is left is intact and matches the ledger.
            let o = as_user_at(u, &lib, offset, &bulwark, &["verify", "--repo", &repo]);
            assert_eq!(o.status.code(), Some(0), "verify after 35 days");
        }
        svc.stop();
    }
    eprintln!("35 days: {removed_total} points removed, {synthetic} synthetic fulls, {refused_early} early deletions refused");
    assert!(synthetic >= 4, "a synthetic full every Sunday");
    assert!(
        removed_total >= 14,
        "at least two whole chains expired and were removed"
    );
    assert!(
        refused_early >= 1,
        "an expired-retention but immutable point was tried"
    );
}
