//! `bulwark-tier` when this host's clock is off the store's: `tier add` and `tier sync`
//! measure the skew from the store's `Date` header and warn, the copy's retain-until is the
//! point's expiry translated to the store's clock, and `tier verify` with the true clock finds
//! every copy locked as recorded. Only the `bulwark-tier` process runs on a shifted clock (libfaketime), never the
//! machine. Needs the S3 store of `.ci/run` (`S3_ENDPOINT`, `S3_ACCESS_KEY`, `S3_SECRET_KEY`)
//! and libfaketime; skips loudly without them.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use bulwark_repository::Repository;
use bulwark_testkit::skip::{require_faketime, require_s3, S3Env};
use common::one_point;

/// How far ahead this host's clock is made to run: well past the 30 s warning threshold,
/// well within the 15 minutes a store accepts in signed requests.
const AHEAD: i64 = 300;

/// `bulwark-tier --json ARGS`, on a clock `shift` seconds ahead when given.
fn tier_cli(args: &[&str], shift: Option<(&Path, i64)>) -> (Output, serde_json::Value) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark-tier"));
    c.arg("--json").args(args);
    if let Some((lib, secs)) = shift {
        c.env("LD_PRELOAD", lib)
            .env("FAKETIME", format!("{secs:+}"))
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("FAKETIME_NO_CACHE", "1");
    }
    let o = c.output().unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o, v)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_skewed_host_clock_is_measured_warned_about_and_locks_follow_the_stores_clock() {
    let name = "a_skewed_host_clock_is_measured_warned_about_and_locks_follow_the_stores_clock";
    let Some(env) = require_s3(name) else {
        return;
    };
    let Some(lib) = require_faketime(name) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let d = dir.to_str().unwrap();
    let repo = Repository::init(&dir, 7).unwrap();
    one_point(&repo, "host-1", 0);
    let creds = tmp.path().join("s3.credentials");
    env.write_credentials(&creds);
    let bucket = S3Env::new_bucket("skew");
    let shifted = Some((lib.as_path(), AHEAD));
    let near = |v: &serde_json::Value| {
        let s = v["clock_skew_seconds"]
            .as_i64()
            .unwrap_or_else(|| panic!("no skew in {v}"));
        assert!(
            (s + AHEAD).abs() <= 5,
            "measured skew {s}, expected about {}",
            -AHEAD
        );
    };

    let (o, v) = tier_cli(&env.add_args(d, &bucket, &creds), shifted);
    assert!(o.status.success(), "tier add: {}", text(&o.stderr));
    near(&v);
    let err = text(&o.stderr);
    assert!(
        err.contains("warning") && err.contains("clock"),
        "no skew warning: {err}"
    );

    let (o, v) = tier_cli(&["sync", d], shifted);
    assert!(o.status.success(), "tier sync: {}", text(&o.stderr));
    near(&v);
    assert_eq!(v["uploaded"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(text(&o.stderr).contains("clock"), "no skew warning at sync");
    // The host thinks it is AHEAD seconds later than the store does: the lock ends at the
    // point's expiry by the store's clock, AHEAD seconds earlier in the store's numbers.
    let recs = bulwark_tier_s3::record::load_all(&dir, "s3").unwrap();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert!(
        (r.retain_until - (r.local_expiry - AHEAD)).abs() <= 5,
        "retain-until {} for a local expiry of {}: not translated by the skew",
        r.retain_until,
        r.local_expiry
    );

    // With the true clock: no warning, and every copy's version, COMPLIANCE lock and
    // retain-until check out.
    let (o, v) = tier_cli(&["sync", d], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let s = v["clock_skew_seconds"].as_i64().unwrap_or(0);
    assert!(s.abs() <= 2, "skew {s} with the true clock");
    assert!(!text(&o.stderr).contains("clock"), "{}", text(&o.stderr));
    let (o, v) = tier_cli(&["verify", d], None);
    assert!(
        o.status.success(),
        "tier verify after a skewed sync: {}{}",
        v,
        text(&o.stderr)
    );
}
