//! `bulwark --json job run` prints one shape for every kind of job (backup, verify, copy;
//! a local folder or a repository service) and every outcome (success, a failed disk or job,
//! a run that stopped as a whole, a job file that cannot be read): the fields of
//! docs/jobs.md, "What a run records", with `exit_code` the program's exit code.

mod common;

use std::path::Path;
use std::process::Command;

use common::{copy_to, job_toml, s};

/// `bulwark --json job run FILE`: its report, after checking the fields every report has.
fn run_json(file: &Path, state: &Path, config: &Path) -> serde_json::Value {
    let o = Command::new(common::bin())
        .args([
            "--json",
            "--config-dir",
            s(config),
            "job",
            "run",
            "--state-dir",
        ])
        .args([s(state), s(file)])
        .output()
        .unwrap();
    bulwark_testkit::show(&format!("bulwark --json job run {}", file.display()), &o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{}: not one JSON document ({e})", file.display()));
    let top = v.as_object().unwrap();
    for key in [
        "job",
        "job_kind",
        "repository",
        "ok",
        "error",
        "exit_code",
        "disks",
        "record",
    ] {
        assert!(top.contains_key(key), "{key} missing: {v}");
    }
    assert_eq!(
        v["exit_code"].as_i64(),
        o.status.code().map(i64::from),
        "{v}"
    );
    assert_eq!(v["ok"] == true, o.status.success(), "{v}");
    assert_eq!(v["ok"] == true, v["error"].is_null(), "{v}");
    assert!(v["disks"].is_array(), "{v}");
    for d in v["disks"].as_array().unwrap() {
        for key in ["disk", "job", "ok", "kind", "error"] {
            assert!(d.get(key).is_some(), "disks[].{key} missing: {v}");
        }
    }
    if v["job"].is_string() {
        assert!(
            !v["disks"].as_array().unwrap().is_empty(),
            "a run records a result: {v}"
        );
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(v["record"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(rec["ok"], v["ok"], "the run record agrees: {rec}");
    }
    v
}

#[test]
fn job_run_json_has_one_shape_for_every_kind_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, dst) = (d.join("src"), d.join("dst"));
    bulwark_repository::Repository::init(&src, 7).unwrap();
    bulwark_repository::Repository::init(&dst, 7).unwrap();
    let img = d.join("disk.img");
    std::fs::write(&img, bulwark_testkit::Rng::new(41).bytes(1 << 20)).unwrap();
    let (state, config) = (d.join("state"), d.join("config"));
    // The report of a run of the job file of job `name` on `repo` that goes on with `rest`.
    let run = |name: &str, repo: &Path, rest: &str| {
        run_json(&job_toml(d, name, repo, rest), &state, &config)
    };
    let source = format!("source = \"{}\"\n", s(&img));

    // Backup, local: a success keeps the one-disk fields; a missing source fails its disk; a
    // missing repository stops the run as a whole.
    let ok = run("web", &src, &source);
    assert_eq!(ok["job_kind"], "backup");
    assert_eq!(ok["ok"], true);
    assert!(ok["point"].is_string() && ok["decision"] == "full", "{ok}");
    let bad = run("gone", &src, "source = \"/nonexistent.img\"\n");
    assert_eq!(
        (bad["ok"].clone(), bad["exit_code"].clone()),
        (false.into(), 2.into())
    );
    assert!(
        bad["error"].as_str().unwrap().contains("nonexistent"),
        "{bad}"
    );
    let norepo = run("norepo", &d.join("missing"), &source);
    assert_eq!(norepo["ok"], false);
    assert_eq!(norepo["disks"][0]["job"], "*");
    assert!(
        norepo["error"]
            .as_str()
            .unwrap()
            .contains("no Bulwark repository"),
        "{norepo}"
    );

    // Backup over the network, not enrolled: the same shape, the disk failed.
    let net = run("netjob", Path::new("127.0.0.1:9"), &source);
    assert_eq!(
        (net["job_kind"].clone(), net["ok"].clone()),
        ("backup".into(), false.into())
    );
    assert!(
        net["error"].as_str().unwrap().contains("not enrolled"),
        "{net}"
    );

    // Verify: clean, and a job the repository lacks; `results` and `damaged` as before.
    let v = run("nightly", &src, "[verify]\n");
    assert_eq!(
        (v["job_kind"].clone(), v["ok"].clone()),
        ("verify".into(), true.into())
    );
    assert!(v["results"].is_array() && v["damaged"].is_array(), "{v}");
    let typo = run("typo", &src, "[verify]\njobs = [\"nope\"]\n");
    assert_eq!(typo["ok"], false);
    assert!(typo["error"].as_str().unwrap().contains("nope"), "{typo}");

    // Copy: a success with the copy report's fields; a missing target stops the run with
    // the same fields, empty.
    let c = run("off", &src, &copy_to(&dst));
    assert_eq!(
        (c["job_kind"].clone(), c["ok"].clone()),
        ("copy".into(), true.into())
    );
    assert_eq!(c["jobs"][0]["points_copied"], 1, "{c}");
    for key in ["from", "to", "jobs", "bytes_sent", "seconds"] {
        assert!(c.get(key).is_some(), "{key}: {c}");
    }
    let c = run("off2", &src, &copy_to(d.join("missing")));
    assert_eq!(c["ok"], false);
    assert_eq!(c["jobs"], serde_json::json!([]), "{c}");
    assert!(
        c["from"].is_string() && c["to"].is_string() && c["bytes_sent"] == 0,
        "{c}"
    );

    // A job file that cannot be read: the same fields, none known, exit 2.
    let e = run("zero", &src, "alert_after_hours = 0\n[verify]\n");
    assert_eq!(
        (e["job"].clone(), e["exit_code"].clone()),
        (serde_json::Value::Null, 2.into())
    );
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("alert_after_hours = 0"),
        "{e}"
    );
}

/// What a job file may not say is refused by `job check` (a `BAD` file, exit 1), `job plan`
/// and `job run` (exit 2, nothing run or recorded) alike, naming the key.
#[test]
fn a_bad_job_file_is_refused_alike_by_job_check_plan_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = common::init_repo(d);
    let state = d.join("state");
    let cases = [
        (
            "alert_after_hours = 0\n[verify]\n",
            "alert_after_hours = 0 is not an interval",
        ),
        (
            "[copy]\nto = \"/elsewhere\"\n[schedule]\nsynthetic_full_day = \"sunday\"\n",
            "a [copy] job only copies: remove [schedule]",
        ),
        (
            "source = \"/dev/null\"\n[schedule]\nactive_full_every_weeks = -1\n",
            "active_full_every_weeks = -1 is not an interval",
        ),
        (
            "source = \"/dev/null\"\nblock_size = \"3M\"\n",
            "block_size 3M is not allowed",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let f = job_toml(d, &format!("j{i}"), &repo, body);
        let run = |args: &[&str]| {
            let o = Command::new(common::bin())
                .args(args)
                .env_remove("BULWARK_NOTIFY_CONFIG")
                .output()
                .unwrap();
            bulwark_testkit::show(&format!("bulwark {}", args.join(" ")), &o);
            (o.status.code(), bulwark_testkit::text(&o))
        };
        let (code, text) = run(&["job", "check", "--state-dir", s(&state), s(&f)]);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("BAD") && text.contains(want), "{text}");
        let (code, text) = run(&["job", "plan", s(&f)]);
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains(want), "{text}");
        let (code, text) = run(&["job", "run", "--state-dir", s(&state), s(&f)]);
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains(want), "{text}");
        if !want.starts_with("block_size") {
            assert!(
                !state.join(format!("jobs/j{i}.json")).exists(),
                "a file refused when read runs nothing"
            );
        }
    }
}
