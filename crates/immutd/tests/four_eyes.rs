//! Four-eyes protection with the real service, real `ssh-keygen` keys and signatures: every
//! action that weakens protection needs k of n approvers' signatures over exactly that
//! action. Root only; skipped elsewhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bulwark_immut_msg::layout::sealed_path;
use bulwark_testkit::immutd::Immutd;
use common::*;

const DAY: i64 = 86_400;

struct Keys {
    dir: PathBuf,
    /// alice, bob, carol (approvers) and mallory (not one).
    priv_: Vec<PathBuf>,
    public: Vec<String>,
}

impl Keys {
    /// The keys in a folder beside `rig`, the approvers named in its configuration.
    fn for_rig(rig: &mut Rig) -> Keys {
        let keys = Keys::new(&rig.setup.dir.parent().unwrap().join("keys"));
        rig.setup.extra_config = keys.config();
        keys
    }

    fn new(dir: &Path) -> Keys {
        std::fs::create_dir_all(dir).unwrap();
        let mut k = Keys {
            dir: dir.to_path_buf(),
            priv_: vec![],
            public: vec![],
        };
        for name in ["alice", "bob", "carol", "mallory"] {
            let key = dir.join(name);
            let o = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&key)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            k.public.push(
                std::fs::read_to_string(key.with_extension("pub"))
                    .unwrap()
                    .trim()
                    .to_string(),
            );
            k.priv_.push(key);
        }
        k
    }

    /// The `[approval]` table: 2 of alice, bob and carol.
    fn config(&self) -> String {
        format!(
            "\n[approval]\nthreshold = 2\napprovers = [\n  \"{}\",\n  \"{}\",\n  \"{}\",\n]\n",
            self.public[0], self.public[1], self.public[2]
        )
    }

    /// `ssh-keygen -Y sign` of `statement` by key `who`; returns the signature file.
    fn sign(&self, who: usize, statement: &Path) -> PathBuf {
        let sig = PathBuf::from(format!("{}.sig", statement.display()));
        let _ = std::fs::remove_file(&sig);
        let o = Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-f"])
            .arg(&self.priv_[who])
            .args(["-n", "bulwark-approval"])
            .arg(statement)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mine = self.dir.join(format!(
            "{}.{who}.sig",
            statement.file_name().unwrap().to_string_lossy()
        ));
        std::fs::rename(&sig, &mine).unwrap();
        mine
    }
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn prepare(rig: &Rig, args: &[&str], statement: &Path) -> Output {
    let mut a = vec!["approve"];
    a.extend_from_slice(args);
    a.extend(["--out", statement.to_str().unwrap()]);
    rig.immutd_cli(&a)
}

fn apply(rig: &Rig, statement: &Path, sigs: &[&Path]) -> Output {
    let mut a = vec!["approve", "apply", statement.to_str().unwrap()];
    for s in sigs {
        a.extend(["--sig", s.to_str().unwrap()]);
    }
    rig.immutd_cli(&a)
}

fn audit(rig: &Rig) -> String {
    std::fs::read_to_string(rig.setup.state_dir().join("audit.log")).unwrap()
}

/// An ext4 rig for a four-eyes test, or `None` after a printed SKIP.
fn four_eyes_rig(test: &str) -> Option<Rig> {
    ext4_rig(test, &["mkfs.ext4", "useradd", "ssh-keygen"])
}

/// A [`four_eyes_rig`] whose configuration names the approvers of its [`Keys`].
fn rig_with_keys(test: &str) -> Option<(Rig, Keys)> {
    let mut rig = four_eyes_rig(test)?;
    let keys = Keys::for_rig(&mut rig);
    Some((rig, keys))
}

/// `approve … --out statement`, which must succeed; returns the statement's text.
fn prepared(rig: &Rig, args: &[&str], statement: &Path) -> String {
    let o = prepare(rig, args, statement);
    assert!(o.status.success(), "{}", out(&o));
    std::fs::read_to_string(statement).unwrap()
}

/// Applies `statement` signed by approvers `pair`: with the signature of `pair[alone]` only it
/// is refused (exit 3) and `unapplied` still holds; with both it is applied (exit 0).
fn refused_by_one_applied_by_two(
    rig: &Rig,
    keys: &Keys,
    statement: &Path,
    pair: [usize; 2],
    alone: usize,
    unapplied: impl FnOnce() -> bool,
) {
    let sigs = [keys.sign(pair[0], statement), keys.sign(pair[1], statement)];
    let o = apply(rig, statement, &[&sigs[alone]]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert!(
        unapplied(),
        "{} took effect with one signature",
        statement.display()
    );
    let o = apply(rig, statement, &[&sigs[0], &sigs[1]]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

/// Runs `bulwark-immutd status`, asserts it exits `code`, and returns its output.
fn status_exits(rig: &Rig, code: i32) -> String {
    let o = rig.immutd_cli(&["status"]);
    assert_eq!(o.status.code(), Some(code), "{}", out(&o));
    out(&o)
}

/// Starts the service of `rig` with a 14-day period and its configuration checked every
/// second (so a test can edit it), and checks a new full gets those 14 days.
fn start_watched_14_days(rig: &mut Rig) -> Immutd {
    rig.setup.min_period_days = 14;
    rig.setup.watch_secs = 1;
    let svc = start(rig);
    assert_eq!(period_of(rig, "vm-1"), 14);
    svc
}

/// Seals a new full of `job` and returns its period in days.
fn period_of(rig: &Rig, job: &str) -> i64 {
    let (_, r) = seal_new(rig, job, None, bulwark_format::PointId::NONE);
    let r = r.ok();
    (r.int("expiry_unix") - r.int("sealed_unix")) / DAY
}

/// True while `bulwark-immutd status` fails with the refused-configuration alert.
fn alerted(rig: &Rig) -> bool {
    let o = rig.immutd_cli(&["status"]);
    o.status.code() == Some(1) && out(&o).contains("weakens protection and is NOT applied")
}

fn start(rig: &Rig) -> Immutd {
    rig.setup
        .spawn(Path::new(IMMUTD))
        .expect("starting bulwark-immutd")
}

#[test]
fn early_release_needs_two_of_three_signatures_over_exactly_that_file() {
    let test = "early_release_needs_two_of_three_signatures_over_exactly_that_file";
    let Some((rig, keys)) = rig_with_keys(test) else {
        return;
    };
    let _svc = start(&rig);
    let (sock, u) = (rig.socket(), &rig.user);
    let (a, _) = seal_new(&rig, "vm-a", None, bulwark_format::PointId::NONE);
    let (b, _) = seal_new(&rig, "vm-b", None, bulwark_format::PointId::NONE);
    let (c, _) = seal_new(&rig, "vm-c", None, bulwark_format::PointId::NONE);
    let (pa, pb, pc) = (
        sealed_path(&rig.repo, "vm-a", a, a),
        sealed_path(&rig.repo, "vm-b", b, b),
        sealed_path(&rig.repo, "vm-c", c, c),
    );
    assert!(is_immutable(&pa) && is_immutable(&pb) && is_immutable(&pc));

    // Root alone cannot release: without a statement there is nothing to apply, and the
    // service user's delete is refused as before.
    assert_eq!(
        u.ctl(&sock, &["delete", pa.to_str().unwrap()])
            .refused()
            .as_deref(),
        Some("Refused")
    );

    let s_a = keys.dir.join("release-a");
    let text = prepared(&rig, &["release", pa.to_str().unwrap()], &s_a);
    assert!(text.starts_with("bulwark-approval-statement 1\n"), "{text}");
    assert!(
        text.contains(&format!("file: {}\n", pa.display())),
        "{text}"
    );
    assert!(!text.contains(&pb.display().to_string()), "{text}");
    assert!(
        text.contains("nonce: ") && text.contains("expires: "),
        "{text}"
    );
    let (sa, sb, sm) = (keys.sign(0, &s_a), keys.sign(1, &s_a), keys.sign(3, &s_a));

    // One signature (k-1), the same approver twice, a stranger's key: refused, nothing changes.
    for (sigs, why) in [
        (vec![sa.as_path()], "only 1 valid"),
        (vec![sa.as_path(), sa.as_path()], "only 1 valid"),
        (
            vec![sa.as_path(), sm.as_path()],
            "not among the configured approvers",
        ),
        (vec![], "only 0 valid"),
    ] {
        let o = apply(&rig, &s_a, &sigs);
        assert_eq!(o.status.code(), Some(3), "{}", out(&o));
        assert!(out(&o).contains(why), "{why}: {}", out(&o));
        assert!(is_immutable(&pa), "released with {sigs:?}");
    }

    // The statement for A edited to name B: not issued by the service, and the signatures
    // no longer match; B stays locked.
    let forged = keys.dir.join("forged");
    std::fs::write(
        &forged,
        text.replace(&pa.display().to_string(), &pb.display().to_string()),
    )
    .unwrap();
    let o = apply(&rig, &forged, &[&sa, &sb]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert!(is_immutable(&pb));

    // A signature over another statement (C's) does not count for A's.
    let s_c = keys.dir.join("release-c");
    assert!(prepare(&rig, &["release", &c.to_hex()], &s_c)
        .status
        .success());
    let sc_bob = keys.sign(1, &s_c);
    let o = apply(&rig, &s_a, &[&sa, &sc_bob]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert!(out(&o).contains("does not match"), "{}", out(&o));

    // Two approvers: exactly A is released, nothing else.
    let o = apply(&rig, &s_a, &[&sa, &sb]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        out(&o).contains("alice") && out(&o).contains("bob"),
        "{}",
        out(&o)
    );
    assert!(!is_immutable(&pa), "A was not released");
    assert!(
        is_immutable(&pb) && is_immutable(&pc),
        "more than A was released"
    );
    u.ctl(&sock, &["delete", pa.to_str().unwrap()]).ok();
    assert!(!pa.exists());
    for p in [&pb, &pc] {
        assert_eq!(
            u.ctl(&sock, &["delete", p.to_str().unwrap()])
                .refused()
                .as_deref(),
            Some("Refused")
        );
    }
    let q = u.ctl(&sock, &["query", pb.to_str().unwrap()]).ok();
    assert_eq!(q.get("state").as_deref(), Some("locked"));

    // Replayed: used once, refused the second time.
    let o = apply(&rig, &s_a, &[&sa, &sb]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert!(out(&o).contains("used already"), "{}", out(&o));

    // Expired: a statement valid for 1 s, signed and applied after it ran out.
    let s_b = keys.dir.join("release-b");
    let o = prepare(
        &rig,
        &["release", pb.to_str().unwrap(), "--valid-for", "1"],
        &s_b,
    );
    assert!(o.status.success(), "{}", out(&o));
    let (b1, b2) = (keys.sign(0, &s_b), keys.sign(2, &s_b));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let o = apply(&rig, &s_b, &[&b1, &b2]);
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert!(out(&o).contains("expired"), "{}", out(&o));
    assert!(is_immutable(&pb), "an expired statement released B");

    // C's statement with two signatures releases C only; B stays.
    let sc_carol = keys.sign(2, &s_c);
    let o = apply(&rig, &s_c, &[&sc_bob, &sc_carol]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(!is_immutable(&pc) && is_immutable(&pb));

    // Every refusal and both releases are in the audit log, and it is intact.
    let log = audit(&rig);
    assert!(log.matches("\tapproval-refused\t").count() >= 8, "{log}");
    assert_eq!(log.matches("\tapproval-applied\t").count(), 2, "{log}");
    assert!(log.contains(&format!("{} released before its expiry", pa.display())));
    let o = rig.immutd_cli(&["audit", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    // Without [approval] nothing can be prepared (tested by a config without it below).
}

#[test]
fn a_weakening_config_edit_stays_unapplied_and_alerted_until_two_approvers_sign() {
    let test = "a_weakening_config_edit_stays_unapplied_and_alerted_until_two_approvers_sign";
    let Some((mut rig, keys)) = rig_with_keys(test) else {
        return;
    };
    let svc = start_watched_14_days(&mut rig);

    // Root lowers the period and raises the byte cap in the file: not applied.
    rig.setup.min_period_days = 7;
    rig.setup.max_locked_bytes *= 2;
    rig.setup.write_config().unwrap();
    assert!(
        wait_for(10, || alerted(&rig)),
        "no alert for the weakening edit"
    );
    let o = rig.immutd_cli(&["status"]);
    assert!(
        out(&o).contains("min_period_days lowered from 14 to 7"),
        "{}",
        out(&o)
    );
    assert!(out(&o).contains("max_locked_bytes raised"), "{}", out(&o));
    assert_eq!(
        period_of(&rig, "vm-2"),
        14,
        "the lowered period was applied"
    );
    assert!(audit(&rig).contains("\tconfig-weakening-refused\t"));

    // A restart does not apply it either.
    drop(svc);
    let svc = start(&rig);
    assert!(alerted(&rig), "the alert did not survive a restart");
    assert_eq!(
        period_of(&rig, "vm-3"),
        14,
        "a restart applied the lowered period"
    );

    // Approved by one: refused; by two: in force, and the alert ends.
    let s = keys.dir.join("config");
    let text = prepared(&rig, &["config"], &s);
    assert!(
        text.contains("action: config\n") && text.contains("change: repository"),
        "{text}"
    );
    refused_by_one_applied_by_two(&rig, &keys, &s, [1, 2], 0, || period_of(&rig, "vm-4") == 14);
    assert_eq!(
        period_of(&rig, "vm-5"),
        7,
        "the approved period is not in force"
    );
    assert!(!alerted(&rig));
    status_exits(&rig, 0);

    // A strengthening edit applies at once, without approvals.
    rig.setup.min_period_days = 21;
    rig.setup.write_config().unwrap();
    assert!(
        wait_for(10, || period_of(&rig, "vm-6") == 21),
        "a longer period was not applied at once"
    );
    status_exits(&rig, 0);

    // Removing the approvers is itself a weakening.
    let approval = std::mem::take(&mut rig.setup.extra_config);
    rig.setup.write_config().unwrap();
    assert!(
        wait_for(10, || alerted(&rig)),
        "removing [approval] was not refused"
    );
    assert!(out(&rig.immutd_cli(&["status"])).contains("[approval] is removed"));
    rig.setup.extra_config = approval;
    rig.setup.write_config().unwrap();
    assert!(
        wait_for(10, || !alerted(&rig)),
        "restoring the file did not end the alert"
    );
    drop(svc);
}

#[test]
fn a_time_accept_that_unlocks_early_needs_two_signatures() {
    let test = "a_time_accept_that_unlocks_early_needs_two_signatures";
    if !can_run(test, &["mkfs.ext4", "useradd", "ssh-keygen", "faketime"]) {
        return;
    }
    let Some(lib) = bulwark_testkit::skip::require_faketime(test) else {
        return;
    };
    let mut rig = Rig::new(FsKind::Ext4);
    let keys = Keys::for_rig(&mut rig);
    // The wall clock of the service alone is moved (the boot clock stays real): an attack,
    // or a clock set wrong, that a plain `time accept` would turn into early unlocks.
    let ts = rig.setup.dir.parent().unwrap().join("faketime");
    std::fs::write(&ts, "+0\n").unwrap();
    rig.setup.env = vec![
        ("LD_PRELOAD".into(), lib.into()),
        ("FAKETIME_TIMESTAMP_FILE".into(), ts.clone().into()),
        ("FAKETIME_NO_CACHE".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    let _svc = start(&rig);
    let (a, _) = seal_new(&rig, "vm-a", None, bulwark_format::PointId::NONE);
    let pa = sealed_path(&rig.repo, "vm-a", a, a);
    std::fs::write(&ts, format!("+{}\n", 8 * DAY)).unwrap();
    assert!(
        wait_for(10, || out(&rig.immutd_cli(&["status"])).contains("FROZEN")),
        "the jump was not detected"
    );

    // Root alone: refused, A stays locked.
    let o = rig.immutd_cli(&["time", "accept", "--yes"]);
    assert_ne!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("needs 2 approvers"), "{}", out(&o));
    assert!(is_immutable(&pa));

    let s = keys.dir.join("time");
    let text = prepared(&rig, &["time-accept"], &s);
    let offset: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("offset: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((offset - 8 * DAY).abs() < 120, "{text}");
    assert!(text.contains("files-unlocking: 1\n"), "{text}");
    refused_by_one_applied_by_two(&rig, &keys, &s, [0, 2], 1, || is_immutable(&pa));
    assert!(wait_for(10, || !is_immutable(&pa)), "A did not unlock");
    assert!(audit(&rig).contains("with the approval of alice, carol"));
}

#[test]
fn a_hand_edit_of_repository_toml_stays_alerted_until_approved() {
    let test = "a_hand_edit_of_repository_toml_stays_alerted_until_approved";
    let Some((mut rig, keys)) = rig_with_keys(test) else {
        return;
    };
    rig.setup.watch_secs = 1;
    let settings = rig.repo.join("repository.toml");
    std::fs::write(&settings, "id = \"0123abcd\"\nmax_points_per_day = 8\n").unwrap();
    rig.user.chown(&settings);
    let _svc = start(&rig);
    assert!(
        wait_for(5, || is_immutable(&settings)),
        "settings not protected"
    );
    let changed =
        |rig: &Rig| out(&rig.immutd_cli(&["status"])).contains("repository.toml was CHANGED");

    // Root raises a limit by hand (in place: the folder is append-only, no rename).
    sh(&format!("chattr -i '{}'", settings.display()));
    std::fs::write(&settings, "id = \"0123abcd\"\nmax_points_per_day = 800\n").unwrap();
    assert!(
        wait_for(10, || changed(&rig)),
        "the hand edit was not alerted"
    );
    assert!(
        is_immutable(&settings),
        "the edited settings were left mutable"
    );
    status_exits(&rig, 1);
    assert!(audit(&rig).contains("\ttamper-settings-changed\t"));

    // Approved by two: the alert ends and the new content is the approved one.
    let s = keys.dir.join("settings");
    let text = prepared(&rig, &["config"], &s);
    assert!(text.contains("repository.toml changed by hand"), "{text}");
    refused_by_one_applied_by_two(&rig, &keys, &s, [0, 1], 0, || changed(&rig));
    assert!(!changed(&rig));
    std::thread::sleep(std::time::Duration::from_secs(2));
    status_exits(&rig, 0);
}

#[test]
fn without_approvers_a_weakening_edit_applies_but_is_alerted() {
    let test = "without_approvers_a_weakening_edit_applies_but_is_alerted";
    let Some(mut rig) = four_eyes_rig(test) else {
        return;
    };
    let svc = start_watched_14_days(&mut rig);
    let weakened = |rig: &Rig| {
        out(&rig.immutd_cli(&["status"])).contains("weakened without four-eyes protection")
    };

    // While running: applied at the next check, and said so.
    rig.setup.min_period_days = 10;
    rig.setup.write_config().unwrap();
    assert!(wait_for(10, || weakened(&rig)), "no alert");
    assert_eq!(period_of(&rig, "vm-2"), 10);
    // Across a restart: the same.
    drop(svc);
    rig.setup.min_period_days = 7;
    rig.setup.write_config().unwrap();
    let _svc = start(&rig);
    assert_eq!(period_of(&rig, "vm-3"), 7);
    let status = status_exits(&rig, 1);
    assert!(
        status.contains("min_period_days lowered from 10 to 7"),
        "{status}"
    );

    // No statement can be issued without approvers.
    let s = rig.setup.dir.parent().unwrap().join("statement");
    let (p, _) = seal_new(&rig, "vm-4", None, bulwark_format::PointId::NONE);
    let o = prepare(&rig, &["release", &p.to_hex()], &s);
    assert_ne!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        out(&o).contains("no approvers are configured"),
        "{}",
        out(&o)
    );
    assert!(!s.exists());
}
