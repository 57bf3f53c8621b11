//! The S3 Object Lock tier on a repository guarded by the real immutability service: each
//! copy's retain-until is the ledger's expiry (not a computed one), and when a new incremental
//! extends the chain in the ledger, the next sync extends the copies too. Root and an S3 store
//! (S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, set by .ci/run) needed; skipped loudly otherwise.

use std::path::Path;
use std::process::Output;

use bulwark_testkit::guarded::*;
use bulwark_testkit::skip::{libfaketime, require_s3};

fn json(o: Output) -> serde_json::Value {
    assert!(o.status.success(), "command failed");
    serde_json::from_slice(&o.stdout).unwrap()
}

/// retain_until of each copied point, from the tier's records.
fn records(repo: &Path) -> Vec<(String, i64)> {
    let dir = repo.join("tiers/s3/objects");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("{k} = "))
                        .map(|v| v.trim_matches('"').to_string())
                })
                .unwrap()
        };
        out.push((field("point"), field("retain_until").parse().unwrap()));
    }
    out.sort();
    out
}

#[test]
fn copies_of_a_guarded_repository_are_locked_until_the_ledgers_expiry() {
    let name = "copies_of_a_guarded_repository_are_locked_until_the_ledgers_expiry";
    let Some(s3) = require_s3(name) else {
        return;
    };
    let Some(tier_bin) = tier_bin(name) else {
        return;
    };
    let Some(sys) = System::new(name, &["mkfs.ext4", "useradd"], FsKind::Ext4) else {
        return;
    };
    let (rig, u, repo, bulwark, repo_bin) = (
        &sys.rig,
        sys.user(),
        sys.repo.clone(),
        &sys.bulwark,
        &sys.repo_bin,
    );
    let sock = rig.socket();
    rig.init_guarded(repo_bin, &["--immutable-days", "9"]);
    let svc = rig.start();
    let img = rig.fs.mnt.join("d.img");
    std::fs::write(&img, b"guarded tier ".repeat(200_000)).unwrap();
    std::os::unix::fs::chown(&img, Some(u.uid), Some(u.gid)).unwrap();
    let creds = rig.fs.mnt.join("s3.credentials");
    s3.write_credentials(&creds);
    u.chown(&creds);
    assert!(run_as(
        u,
        bulwark,
        &[
            "backup",
            "--repo",
            &repo,
            "--job",
            "vm",
            img.to_str().unwrap()
        ]
    )
    .status
    .success());
    let bucket = format!("guarded-{}", std::process::id());
    let mut add = vec!["--json"];
    add.extend(s3.add_args(&repo, &bucket, &creds));
    let add = json(run_as(u, &tier_bin, &add));
    assert!(add["lock_probe"]["delete_refused"].is_string(), "{add}");
    let sync = json(run_as(u, &tier_bin, &["--json", "sync", &repo]));
    assert_eq!(
        sync["unguarded"], false,
        "retain-until must come from the ledger"
    );
    assert_eq!(sync["uploaded"].as_array().unwrap().len(), 1);
    let ledger = |p: &str| u.ctl(&sock, &["query", p]).ok().int("expiry_unix");
    let first = records(&rig.repo);
    let (p1, r1) = first[0].clone();
    // The repository period (9 days) is longer than the service's minimum (7): the ledger has 9.
    let e1 = ledger(&p1);
    assert!(
        (r1 - e1).abs() <= 2,
        "copy locked until {r1}, ledger says {e1}"
    );

    // A day later (honest time for the service), an incremental extends the chain in the ledger.
    svc.stop();
    let mut later = rig.setup.clone();
    let Some(lib) = libfaketime() else {
        bulwark_testkit::skip!(
            name,
            "libfaketime not installed, so the extension half did not run"
        );
    };
    later.env = vec![
        ("LD_PRELOAD".into(), lib.clone().into_os_string()),
        ("FAKETIME".into(), "+86400".into()),
    ];
    let svc = later.spawn(&immutd_bin()).unwrap();
    let o = u
        .cmd(bulwark.to_str().unwrap())
        .args([
            "backup",
            "--repo",
            &repo,
            "--job",
            "vm",
            img.to_str().unwrap(),
        ])
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME", "+86400")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e1_later = ledger(&p1);
    assert!(
        e1_later >= e1 + 86_000,
        "the incremental did not extend the chain in the ledger"
    );
    let sync = json(run_as(u, &tier_bin, &["--json", "sync", &repo]));
    assert_eq!(sync["uploaded"].as_array().unwrap().len(), 1);
    assert!(sync["extended"].as_u64().unwrap() >= 1, "{sync}");
    let after = records(&rig.repo);
    let r1_later = after.iter().find(|(p, _)| *p == p1).unwrap().1;
    assert!(
        (r1_later - e1_later).abs() <= 2,
        "copy locked until {r1_later}, ledger says {e1_later}"
    );
    let check = json(run_as(u, &tier_bin, &["--json", "verify", &repo]));
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
    svc.stop();
}
