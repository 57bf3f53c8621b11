//! `bulwark-repo init`, `status`, `synthesize` and `space` as a user runs them: the reflink
//! warning, clone-or-copy in status, the synthetic full and the space report's JSON.

use std::path::Path;
use std::process::{Command, Output};

use bulwark_format::{BlockNo, PointKind, StoredBlock};
use bulwark_repository::{probe_reflink, NewPoint, Repository};

const BS: u32 = 64 * 1024;
const JOB: &str = "host-1";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bulwark-repo"))
}

/// `bulwark-repo args`, which must succeed.
fn repo_cli(args: &[&str]) -> Output {
    bulwark_testkit::cmd::output_ok(Command::new(bin()).args(args))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A full of 16 distinct blocks, then an incremental changing blocks 3 and 9.
fn two_points(repo: &Repository) {
    for round in 0..2u8 {
        let parent = repo.parent_map(JOB).unwrap();
        let mut b = repo
            .begin_point(NewPoint {
                job: JOB.into(),
                parent: parent.clone(),
                disk_size: 16 * u64::from(BS),
                block_size: BS,
                compression_level: 0,
                client: String::new(),
                full_kind: PointKind::ActiveFull,
            })
            .unwrap();
        for i in 0..16u64 {
            let changed = round == 1 && (i == 3 || i == 9);
            if parent.is_some() && !changed {
                b.put_unchanged(BlockNo(i)).unwrap();
                continue;
            }
            let data: Vec<u8> = (0..BS as usize)
                .map(|k| (k as u64 * 31 + i * 7 + u64::from(round) * 101) as u8)
                .collect();
            b.put_stored(StoredBlock::raw(BlockNo(i), &data)).unwrap();
        }
        b.finish().unwrap();
    }
}

#[test]
fn init_warns_status_says_how_synthesize_and_space_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let d = dir.to_str().unwrap();
    let clones = probe_reflink(tmp.path()).unwrap().is_supported();

    let init = repo_cli(&["init", d, "--immutable-days", "7"]);
    if clones {
        assert!(text(&init.stdout).contains("block cloning: supported"));
        assert!(!text(&init.stderr).contains("mkfs.xfs"));
    } else {
        let err = text(&init.stderr);
        assert!(
            err.contains("WARNING") && err.contains("mkfs.xfs -m reflink=1"),
            "init gave no reflink advice: {err}"
        );
    }
    let status = text(&repo_cli(&["status", d]).stdout);
    let expected = if clones {
        "synthetic fulls: clone"
    } else {
        "synthetic fulls: COPY"
    };
    assert!(status.contains(expected), "{status}");

    let repo = Repository::open(&dir).unwrap();
    two_points(&repo);
    let s: serde_json::Value =
        serde_json::from_slice(&repo_cli(&["synthesize", d, "--job", JOB, "--json"]).stdout)
            .unwrap();
    assert_eq!(s["method"], if clones { "clone" } else { "copy" });
    assert_eq!(s["kind"], "synthetic-full");
    assert_eq!(s["blocks"], 16);
    assert_eq!(s["point"], s["chain"]);
    assert_eq!(
        s["bytes_cloned"].as_u64().unwrap() + s["bytes_copied"].as_u64().unwrap(),
        16 * u64::from(BS)
    );

    let sp: serde_json::Value =
        serde_json::from_slice(&repo_cli(&["space", d, "--json"]).stdout).unwrap();
    let chains = sp["jobs"][0]["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2);
    let files = bulwark_testkit::fs::point_files_under(&dir.join("store"));
    assert_eq!(files.len(), 3);
    let logical: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(sp["logical_bytes"].as_u64().unwrap(), logical);
    assert_eq!(sp["locked"]["state"], "not-protected");
    let (alloc, phys) = (
        sp["allocated_bytes"].as_u64().unwrap(),
        sp["physical_bytes"].as_u64().unwrap(),
    );
    if clones {
        assert!(phys + 16 * u64::from(BS) <= alloc, "{sp}");
    } else {
        assert_eq!(phys, alloc, "{sp}");
    }
    let human = text(&repo_cli(&["space", d]).stdout);
    assert!(human.contains("locked: not protected"), "{human}");
    assert!(human.contains(&format!("job {JOB}")), "{human}");
}

/// Damage the last verify found shows in `bulwark-repo status` as an ALERT naming the job and
/// point, and status exits 1 (as the report and the metrics already said); a clean verify
/// after the repair clears it.
#[test]
fn status_shows_the_damage_verify_found_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let d = dir.to_str().unwrap();
    let repo = Repository::init(&dir, 7).unwrap();
    two_points(&repo);
    let status = |code: i32| {
        let o = bulwark_testkit::cmd::run(bin(), &["status", d]);
        assert_eq!(o.status.code(), Some(code), "{}", text(&o.stdout));
        text(&o.stdout)
    };
    assert!(!status(0).contains("ALERT"));
    let p = &repo.scan_job(JOB).unwrap().points[0];
    let e = bulwark_format::PointReader::open(std::fs::File::open(&p.path).unwrap())
        .unwrap()
        .map[0];
    bulwark_testkit::fs::flip_byte(&p.path, e.offset + 7, 1);
    let v = bulwark_testkit::cmd::run(bin(), &["verify", d]);
    assert_eq!(v.status.code(), Some(1));
    let out = status(1);
    assert!(
        out.contains("ALERT: verify found restore point")
            && out.contains(&p.meta.point.to_hex())
            && out.contains(JOB),
        "{out}"
    );
    // The same flip again puts the byte back.
    bulwark_testkit::fs::flip_byte(&p.path, e.offset + 7, 1);
    assert!(repo_cli(&["verify", d]).status.success());
    assert!(!status(0).contains("ALERT"));
}

/// `bulwark-repo status` of a repository on a read-only filesystem (a mounted copy, a
/// filesystem remounted read-only after errors) reports everything it can read; only the
/// synthetic full method is unknown, since the reflink probe cannot write.
#[test]
fn status_of_a_read_only_repository_reports_and_names_what_it_could_not_probe() {
    let t = "status_of_a_read_only_repository_reports_and_names_what_it_could_not_probe";
    if !bulwark_testkit::require_root(t, "mounting a tmpfs read-only") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("ro");
    std::fs::create_dir(&mnt).unwrap();
    let _m = bulwark_testkit::fs::Mount::new(
        "-t tmpfs -o size=32m",
        std::path::Path::new("tmpfs"),
        &mnt,
    );
    let dir = mnt.join("repo");
    let repo = Repository::init(&dir, 7).unwrap();
    let mut b = repo
        .begin_point(NewPoint::active_full("web", 65_536, 65_536))
        .unwrap();
    b.put_stored(StoredBlock::raw(BlockNo(0), &[1u8; 65_536]))
        .unwrap();
    b.finish().unwrap();
    drop(repo);
    let o = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(o.status.success());
    let ds = dir.to_str().unwrap();
    let o = repo_cli(&["status", ds]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("jobs: web") && out.contains("synthetic fulls: unknown"),
        "{out}"
    );
    let o = repo_cli(&["--json", "status", ds]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["synthetic_full_method"], "unknown");
    assert!(
        v["reflink_problem"].as_str().unwrap().contains("Read-only"),
        "{v}"
    );
}
