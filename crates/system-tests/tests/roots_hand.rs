//! Root's own hand on a guarded repository (issue 20): clearing the immutable attribute,
//! changing owner or mode, changing a sealed file's bytes, deleting one, clearing the
//! attribute of `repository.toml`. The real bulwark-immutd, checking every `watch_secs`,
//! sees each within that interval, audits it, alerts it (`bulwark-immutd status` and
//! `bulwark-repo status` exit 1 naming the file), seals again what is intact, and leaves
//! what is not to `verify`, which names it. Root only, with a real service user.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_testkit::cmd::text;
use bulwark_testkit::guarded::*;
use bulwark_testkit::system::{first_block_middle, flip_byte, point_of, sealed_files};

/// Seconds between the service's checks in this test.
const WATCH: u64 = 2;

/// Waits for `cond` at most two check intervals and a margin; returns how long it took.
fn within_bound(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    let bound = Duration::from_secs(2 * WATCH + 3);
    while !cond() {
        assert!(t.elapsed() < bound, "{what}: not seen within {bound:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t.elapsed();
    println!("{what}: seen after {} ms", took.as_millis());
    took
}

fn audit(sys: &System) -> String {
    std::fs::read_to_string(sys.rig.setup.state_dir().join("audit.log")).unwrap()
}

/// True when one ALERT line of `out` names `point` and says `what`.
fn alerted(out: &str, what: &str, point: &str) -> bool {
    out.lines()
        .any(|l| l.contains("ALERT") && l.contains(what) && l.contains(point))
}

fn immutd_status(sys: &System) -> (Option<i32>, String) {
    let o = sys.rig.immutd_cli(&["status"]);
    (o.status.code(), text(&o))
}

/// Flips one byte inside the first stored block as root, leaving the attribute cleared.
fn flip_a_stored_byte(path: &Path) {
    sh(&format!("chattr -i '{}'", path.display()));
    flip_byte(path, first_block_middle(path));
}

#[test]
fn roots_hand_is_seen_audited_and_undone_within_the_watch_interval() {
    let name = "roots_hand_is_seen_audited_and_undone_within_the_watch_interval";
    let Some(mut sys) = System::guarded(name, &["mkfs.ext4", "useradd", "chattr"], FsKind::Ext4)
    else {
        return;
    };
    sys.rig.setup.watch_secs = WATCH;
    let _svc = sys.rig.start();
    for (job, salt) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")] {
        let mut data = b"disk content ".repeat(50_000);
        data.extend_from_slice(salt.as_bytes());
        let img = sys.image("d.img", &data);
        let o = sys.backup(false, job, &img);
        assert!(o.status.success(), "{}", text(&o));
    }
    let (a, b, c, d) = (
        sealed_files(&sys.rig.repo, "a").remove(0),
        sealed_files(&sys.rig.repo, "b").remove(0),
        sealed_files(&sys.rig.repo, "c").remove(0),
        sealed_files(&sys.rig.repo, "d").remove(0),
    );
    assert_eq!(immutd_status(&sys).0, Some(0), "{}", immutd_status(&sys).1);
    let fp_a = std::fs::read(&a).unwrap();

    // 1. chattr -i: sealed again, bytes untouched, audited and alerted.
    sh(&format!("chattr -i '{}'", a.display()));
    assert!(!is_immutable(&a));
    // The service seals first, then audits and alerts: wait for all three.
    within_bound("cleared attribute re-sealed, audited and alerted", || {
        is_immutable(&a)
            && audit(&sys)
                .lines()
                .any(|l| l.contains("\ttamper-resealed\t") && l.contains(&point_of(&a)))
            && alerted(&immutd_status(&sys).1, "sealed again", &point_of(&a))
    });
    assert_eq!(std::fs::read(&a).unwrap(), fp_a);
    let (code, out) = immutd_status(&sys);
    assert_eq!(code, Some(1), "{out}");
    assert!(alerted(&out, "sealed again", &point_of(&a)), "{out}");
    let o = sys.repo_cmd(&["status", &sys.repo]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        alerted(&text(&o), "sealed again", &point_of(&a)),
        "{}",
        text(&o)
    );

    // 2. chattr -i, chmod and chown to the service user: owner, mode and attribute back.
    let u = sys.user();
    sh(&format!(
        "chattr -i '{0}' && chmod 0666 '{0}' && chown {1}:{2} '{0}'",
        b.display(),
        u.uid,
        u.gid
    ));
    within_bound("owner and mode restored", || {
        let m = std::fs::metadata(&b).unwrap();
        is_immutable(&b) && m.uid() == 0 && m.mode() & 0o7777 == 0o444
    });
    let o = u.sh(&format!("printf X >> '{}'", b.display()));
    assert!(
        !o.status.success(),
        "the service user could write after the re-seal"
    );

    // 3. Changed bytes: alerted as CHANGED, kept immutable as evidence, named by verify.
    flip_a_stored_byte(&c);
    within_bound("changed content alerted", || {
        alerted(&immutd_status(&sys).1, "CHANGED", &point_of(&c))
            && is_immutable(&c)
            && audit(&sys).contains("\ttamper-changed\t")
    });

    // 3b. Changed bytes with the attribute put back before the next check: the moved
    // status-change time gives it away.
    let e = sealed_files(&sys.rig.repo, "e").remove(0);
    flip_a_stored_byte(&e);
    sh(&format!("chattr +i '{}'", e.display()));
    within_bound(
        "changed content behind a restored attribute alerted",
        || alerted(&immutd_status(&sys).1, "CHANGED", &point_of(&e)),
    );

    // 4. Deleted: alerted as MISSING and named by verify.
    sh(&format!("chattr -i '{0}' && rm '{0}'", d.display()));
    within_bound("deleted file alerted", || {
        alerted(&immutd_status(&sys).1, "MISSING", &point_of(&d))
            && audit(&sys).contains("\ttamper-missing\t")
    });
    let o = sys.repo_cmd(&["verify", &sys.repo]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v = text(&o);
    assert!(v.contains(&point_of(&d)) && v.contains("missing"), "{v}");
    assert!(
        v.contains(&point_of(&c)),
        "verify did not name the changed file: {v}"
    );
    assert!(
        !v.contains(&point_of(&a)) && !v.contains(&point_of(&b)),
        "{v}"
    );
    let o = sys.repo_cmd(&["status", &sys.repo]);
    assert_eq!(o.status.code(), Some(1));
    assert!(alerted(&text(&o), "MISSING", &point_of(&d)), "{}", text(&o));

    // 5. The repository's settings: chattr -i is undone too.
    let settings = sys.rig.repo.join("repository.toml");
    sh(&format!("chattr -i '{}'", settings.display()));
    within_bound("settings re-sealed and audited", || {
        is_immutable(&settings) && audit(&sys).contains("\ttamper-settings-resealed\t")
    });

    // 6. Acknowledging clears what was undone; what is lost stays alerted.
    let o = sys.rig.immutd_cli(&["alerts", "ack"]);
    assert!(o.status.success(), "{}", text(&o));
    let (code, out) = immutd_status(&sys);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        alerted(&out, "MISSING", &point_of(&d))
            && alerted(&out, "CHANGED", &point_of(&c))
            && alerted(&out, "CHANGED", &point_of(&e)),
        "{out}"
    );
    assert!(!out.contains("sealed again"), "{out}");
    let o = sys.rig.immutd_cli(&["audit", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
