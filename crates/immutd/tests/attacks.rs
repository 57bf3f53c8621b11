//! What the service user (the backup admin, or ransomware holding its account) cannot do to a
//! sealed restore point, on ext4 and on XFS. Runs as root with a real unprivileged user;
//! skipped with a printed reason elsewhere.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use bulwark_format::PointId;
use bulwark_immut_msg::layout::{incoming_path, sealed_path, store_dir};
use bulwark_testkit::immutd::Immutd;
use common::*;

/// Runs `script` as the user and asserts it fails, naming the attack.
fn must_fail(u: &TestUser, what: &str, script: &str) {
    let o = u.sh(script);
    assert!(
        !o.status.success(),
        "attack `{what}` succeeded: {script}\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Asks the service, as the user, to seal each of `paths`: every request must be refused (the
/// failure names `what` and the path).
fn seals_refused<S: AsRef<str>>(u: &TestUser, sock: &Path, what: &str, paths: &[S]) {
    for p in paths {
        let p = p.as_ref();
        let r = u.ctl(sock, &["seal", p]);
        assert_eq!(r.refused().as_deref(), Some("Refused"), "{what} {p}: {r:?}");
    }
}

fn attack_suite(kind: FsKind) {
    let rig = Rig::new(kind);
    let svc = rig.start();
    let u = &rig.user;
    let sock = rig.socket();

    // A reader holds a read-only descriptor from before sealing; after the seal it tries to
    // write through it (via /proc/self/fd, which re-checks permissions on the inode).
    let point = new_point();
    let inc = put_incoming(&rig, "vm-1", point, point, PointId::NONE);
    let mut holder = u.spawn_sh(
        &format!(
            "exec 3<'{}'; echo ready; read go; printf X >> /proc/self/fd/3 && echo WROTE; printf X 1<> /proc/self/fd/3 && echo WROTE; echo done",
            inc.display()
        ),
    );
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let sealed = u.ctl(&sock, &["seal", inc.to_str().unwrap()]).ok();
    let f = sealed_path(&rig.repo, "vm-1", point, point);
    assert_eq!(sealed.get("sealed_path").unwrap(), f.to_str().unwrap());
    assert!(is_immutable(&f), "sealed file is not immutable");
    assert!(!inc.exists(), "file still in incoming/");
    let expiry = sealed.int("expiry_unix");
    let before = fingerprint(&f);

    holder.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    holder.wait().unwrap();
    assert!(
        !rest.contains("WROTE"),
        "wrote through a descriptor opened before sealing: {rest}"
    );
    assert!(rest.contains("done"));

    let chain_dir = f.parent().unwrap();
    let job_dir = chain_dir.parent().unwrap();
    let store = store_dir(&rig.repo);
    let incoming = rig.repo.join("incoming");
    let (fs, cs, js, ss, is, rs) = (
        f.display(),
        chain_dir.display(),
        job_dir.display(),
        store.display(),
        incoming.display(),
        rig.repo.display(),
    );
    std::fs::write(incoming.join("evil"), b"evil").unwrap();
    std::os::unix::fs::chown(incoming.join("evil"), Some(u.uid), Some(u.gid)).unwrap();
    let attacks: Vec<(&str, String)> = vec![
        ("unlink", format!("rm -f {fs}")),
        ("unlink via unlink(1)", format!("unlink {fs}")),
        ("rename in place", format!("mv {fs} {cs}/x.bwrp")),
        (
            "rename out of the store",
            format!("mv {fs} {is}/stolen.bwrp"),
        ),
        ("rename its folder", format!("mv {cs} {js}/renamed")),
        ("move its folder out", format!("mv {cs} {is}/renamed")),
        ("rename the job folder", format!("mv {js} {ss}/renamed")),
        ("rename the store", format!("mv {ss} {rs}/store2")),
        ("move the store out", format!("mv {ss} {is}/store2")),
        (
            "rename incoming/ to slip in a symlink",
            format!("mv {is} {rs}/incoming2"),
        ),
        ("truncate", format!("truncate -s 0 {fs}")),
        ("open for append", format!("echo x >> {fs}")),
        ("open for write", format!("echo x > {fs}")),
        ("open read-write", format!("exec 3<> {fs}")),
        (
            "dd over it",
            format!("dd if=/dev/zero of={fs} bs=1 count=1 conv=notrunc"),
        ),
        ("chattr -i", format!("chattr -i {fs}")),
        ("chmod", format!("chmod 666 {fs}")),
        ("chown", format!("chown {}:{} {fs}", u.uid, u.gid)),
        ("utimes", format!("touch -d 2001-01-01 {fs}")),
        ("utimes now", format!("touch {fs}")),
        ("setxattr", format!("setfattr -n user.evil -v 1 {fs}")),
        ("hard link", format!("ln {fs} {is}/link.bwrp")),
        ("replace by copy", format!("cp {is}/evil {fs}")),
        ("replace by rename", format!("mv -f {is}/evil {fs}")),
        ("replace by symlink", format!("ln -sf {is}/evil {fs}")),
        (
            "new file in the chain folder",
            format!("touch {cs}/new.bwrp"),
        ),
        ("remove the chain folder", format!("rm -rf {cs}")),
    ];
    for (what, script) in &attacks {
        must_fail(u, what, script);
    }
    assert_eq!(fingerprint(&f), before, "the sealed file changed");
    assert!(is_immutable(&f));

    // Requests to the service that would weaken protection are refused.
    let fstr = f.to_str().unwrap();
    let r = u.ctl(&sock, &["delete", fstr]);
    assert_eq!(
        r.refused().as_deref(),
        Some("Refused"),
        "delete of an unexpired file: {r:?}"
    );
    let r = u.ctl(&sock, &["delete", &point.to_hex()]);
    assert_eq!(r.refused().as_deref(), Some("Refused"));
    let r = u.ctl(&sock, &["extend", fstr, &(expiry - 86_400).to_string()]);
    assert_eq!(r.refused().as_deref(), Some("Refused"), "shortening: {r:?}");
    let r = u.ctl(&sock, &["extend", fstr, "0"]);
    assert_eq!(r.refused().as_deref(), Some("Refused"));
    assert_eq!(
        u.ctl(&sock, &["query", fstr]).ok().int("expiry_unix"),
        expiry
    );

    // Seal a symlink to a valid restore point elsewhere.
    let p2 = new_point();
    let elsewhere = rig.fs.mnt.join("elsewhere.bwrp");
    write_point(&elsewhere, u, "vm-1", p2, p2, PointId::NONE, 7);
    let fp_else = fingerprint(&elsewhere);
    let link = incoming_path(&rig.repo, p2);
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let r = u.ctl(&sock, &["seal", link.to_str().unwrap()]);
    assert_eq!(r.refused().as_deref(), Some("Refused"), "symlink: {r:?}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fingerprint(&elsewhere), fp_else);
    assert!(!sealed_path(&rig.repo, "vm-1", p2, p2).exists());

    // Seal a hard-linked file.
    let p3 = new_point();
    let hl = put_incoming(&rig, "vm-1", p3, p3, PointId::NONE);
    let o = u.sh(&format!("ln {} {is}/second-name", hl.display()));
    assert!(o.status.success());
    let r = u.ctl(&sock, &["seal", hl.to_str().unwrap()]);
    assert_eq!(r.refused().as_deref(), Some("Refused"), "hard link: {r:?}");
    assert!(hl.exists() && !is_immutable(&hl));
    assert_eq!(
        std::fs::metadata(&hl).unwrap().len(),
        std::fs::metadata(incoming.join("second-name"))
            .unwrap()
            .len()
    );

    // Seal a file outside incoming/ (in the repository, and elsewhere).
    let p4 = new_point();
    let other = rig.repo.join("other");
    assert!(u.sh(&format!("mkdir {}", other.display())).status.success());
    let outside = other.join(format!("{p4}.bwrp"));
    write_point(&outside, u, "vm-1", p4, p4, PointId::NONE, 9);
    let outside_paths = [
        outside.to_str().unwrap(),
        elsewhere.to_str().unwrap(),
        "/etc/passwd",
    ];
    seals_refused(u, &sock, "outside incoming/", &outside_paths);
    assert!(outside.exists() && !is_immutable(&outside));

    // Paths with `..` or `.`.
    let dot_paths = [
        format!("{is}/../other/{p4}.bwrp"),
        format!("{is}/../incoming/{p3}.bwrp"),
        format!("{is}/./{p3}.bwrp"),
        format!("{rs}/other/../incoming/{p3}.bwrp"),
    ];
    seals_refused(u, &sock, "dot path", &dot_paths);
    assert!(outside.exists() && !is_immutable(&outside));

    // Non-canonical spellings of the right file (issue 13 item 3): `//` inside, a leading
    // `//`, a trailing `/`. Refused, and the file stays in incoming/ untouched.
    let p6 = new_point();
    let canon = put_incoming(&rig, "vm-1", p6, p6, PointId::NONE);
    let canon_fp = fingerprint(&canon);
    let spellings = [
        format!("{is}//{p6}.bwrp"),
        format!("/{}", canon.display()),
        format!("{}/", canon.display()),
        format!("{rs}//incoming/{p6}.bwrp"),
    ];
    seals_refused(u, &sock, "non-canonical path", &spellings);
    assert_eq!(
        fingerprint(&canon),
        canon_fp,
        "a refused seal changed the file"
    );
    u.ctl(&sock, &["seal", canon.to_str().unwrap()]).ok();

    // A file still open for writing is refused, and sealed once the writer closes it.
    let p5 = new_point();
    let busy = put_incoming(&rig, "vm-1", p5, p5, PointId::NONE);
    let mut writer = u.spawn_sh(&format!(
        "exec 3>>'{}'; echo open; read go; echo closed",
        busy.display()
    ));
    let mut wout = BufReader::new(writer.stdout.take().unwrap());
    let mut l = String::new();
    wout.read_line(&mut l).unwrap();
    let r = u.ctl(&sock, &["seal", busy.to_str().unwrap()]);
    assert_eq!(
        r.refused().as_deref(),
        Some("Busy"),
        "open for writing: {r:?}"
    );
    assert!(busy.exists());
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&busy).unwrap()),
        u.uid,
        "ownership restored"
    );
    writer.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    writer.wait().unwrap();
    u.ctl(&sock, &["seal", busy.to_str().unwrap()]).ok();
    assert!(is_immutable(&sealed_path(&rig.repo, "vm-1", p5, p5)));

    // Nothing above disturbed the first file; the refusals are in the audit log.
    assert_eq!(fingerprint(&f), before);
    let log = std::fs::read_to_string(rig.setup.state_dir().join("audit.log")).unwrap();
    assert!(
        log.matches("\trefused\t").count() >= 10,
        "refusals not audited:\n{log}"
    );
    drop(svc);
}

/// [`attack_suite`] on a `kind` filesystem made by `mkfs`, or a printed SKIP without the tools.
fn attack_suite_if_possible(test: &str, kind: FsKind, mkfs: &str) {
    if can_run(test, &[mkfs, "chattr", "setfattr", "useradd"]) {
        attack_suite(kind);
    }
}

#[test]
fn sealed_file_resists_the_service_user_on_ext4() {
    let test = "sealed_file_resists_the_service_user_on_ext4";
    attack_suite_if_possible(test, FsKind::Ext4, "mkfs.ext4");
}

#[test]
fn sealed_file_resists_the_service_user_on_xfs() {
    let test = "sealed_file_resists_the_service_user_on_xfs";
    attack_suite_if_possible(test, FsKind::Xfs, "mkfs.xfs");
}

/// An ext4 rig with its service started and a first full of `vm-1` sealed: the rig, the
/// service, the point and the seal's answer; `None` after a printed SKIP.
fn with_a_sealed_full(test: &str) -> Option<(Rig, Immutd, PointId, CtlResult)> {
    let rig = ext4_rig(test, &["mkfs.ext4", "useradd"])?;
    let svc = rig.start();
    let (point, r) = seal_new(&rig, "vm-1", None, PointId::NONE);
    let first = r.ok();
    Some((rig, svc, point, first))
}

#[test]
fn requests_from_other_uids_are_refused_and_audited() {
    let test = "requests_from_other_uids_are_refused_and_audited";
    let Some((rig, svc, point, _)) = with_a_sealed_full(test) else {
        return;
    };
    let stranger = TestUser::create();
    let sock = rig.socket();
    let before = std::fs::read_to_string(rig.setup.state_dir().join("audit.log")).unwrap();
    let p2 = new_point();
    let inc = put_incoming(&rig, "vm-1", p2, p2, PointId::NONE);
    for args in [
        vec!["seal", inc.to_str().unwrap()],
        vec!["status"],
        vec!["query", &point.to_hex()],
        vec!["extend", &point.to_hex(), "9999999999"],
        vec!["delete", &point.to_hex()],
        vec!["time", "accept", "--yes"],
        vec!["time", "preview"],
        vec!["list"],
    ] {
        let r = stranger.ctl(&sock, &args);
        assert_eq!(
            r.refused().as_deref(),
            Some("NotPermitted"),
            "{args:?} from a stranger: {r:?}"
        );
    }
    // The service user may not accept the time: that is root's.
    for args in [["time", "accept", "--yes"].as_slice(), &["time", "preview"]] {
        let r = rig.user.ctl(&sock, args);
        assert_eq!(r.refused().as_deref(), Some("NotPermitted"), "{args:?}");
    }
    assert!(
        inc.exists(),
        "a stranger's seal request must not touch the file"
    );
    let after = std::fs::read_to_string(rig.setup.state_dir().join("audit.log")).unwrap();
    let new = &after[before.len()..];
    assert!(
        new.matches(&format!("uid={}", stranger.uid)).count() >= 6,
        "stranger's requests not audited:\n{new}"
    );
    assert!(new.contains(&format!("uid={}", rig.user.uid)));
    drop(svc);
}

#[test]
fn audit_chain_detects_a_removed_or_edited_entry() {
    let Some(rig) = ext4_rig(
        "audit_chain_detects_a_removed_or_edited_entry",
        &["mkfs.ext4", "useradd", "chattr"],
    ) else {
        return;
    };
    let svc = rig.start();
    for _ in 0..3 {
        seal_new(&rig, "vm-1", None, PointId::NONE).1.ok();
    }
    svc.stop();
    // `audit verify` must exit `code` (the failure names `what`); returns its output.
    let verify = |code: i32, what: &str| {
        let o = rig.immutd_cli(&["audit", "verify"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(code), "{what}: {out}");
        out
    };
    verify(0, "the intact log");
    let log = rig.setup.state_dir().join("audit.log");
    // The log carries the append-only attribute: even root must clear it first.
    assert!(bulwark_sys::has_flag(
        &std::fs::File::open(&log).unwrap(),
        bulwark_sys::FS_APPEND_FL
    )
    .unwrap());
    assert!(
        std::fs::write(&log, b"").is_err(),
        "rewriting an append-only log must fail"
    );
    sh(&format!("chattr -a {}", log.display()));
    let good = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    assert!(lines.len() >= 4);
    let cases = [
        (
            "removed entry",
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 1)
                .map(|(_, l)| format!("{l}\n"))
                .collect::<String>(),
        ),
        ("edited entry", good.replacen("\tseal\t", "\tunlock\t", 1)),
        (
            "removed last entry",
            lines[..lines.len() - 1]
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
        ),
    ];
    for (what, text) in cases {
        std::fs::write(&log, text).unwrap();
        let out = verify(1, &format!("{what} not detected"));
        assert!(out.contains("DAMAGED"));
    }
    std::fs::write(&log, &good).unwrap();
    verify(0, "the restored log");
}

#[test]
fn service_refuses_to_run_as_non_root() {
    if !can_run("service_refuses_to_run_as_non_root", &["useradd"]) {
        return;
    }
    let u = TestUser::create();
    let o = u
        .cmd(IMMUTD)
        .args(["--config", "/nonexistent", "run"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("must run as root"));
}

#[test]
fn a_sealed_file_missing_from_the_ledger_is_adopted_at_start() {
    let test = "a_sealed_file_missing_from_the_ledger_is_adopted_at_start";
    let Some((rig, svc, p, first)) = with_a_sealed_full(test) else {
        return;
    };
    svc.stop();
    // What a power cut between setting the attribute and writing the ledger leaves.
    let lp = rig.setup.state_dir().join("ledger");
    let mut l = bulwark_immutd::ledger::Ledger::load(&lp).unwrap();
    l.entries.retain(|e| e.point != p);
    l.save(&lp).unwrap();
    let svc = rig.start();
    let q = rig.user.ctl(&rig.socket(), &["query", &p.to_hex()]).ok();
    assert_eq!(q.get("state").as_deref(), Some("locked"));
    assert_eq!(q.get("root_digest"), first.get("root_digest"));
    assert!(
        q.int("expiry_unix") >= first.int("expiry_unix"),
        "adoption shortened the protection"
    );
    let log = std::fs::read_to_string(rig.setup.state_dir().join("audit.log")).unwrap();
    assert!(log.contains("\tadopt\t"));
    drop(svc);
}

/// A state folder that fills up (issue 12 item 5): the seal that cannot write the ledger
/// leaves its file sealed and says so; the service keeps the entry and, once space is free,
/// writes it without a restart, so queries find the point and the chain goes on.
#[test]
fn a_full_state_folder_does_not_block_the_chain_once_space_is_freed() {
    let test = "a_full_state_folder_does_not_block_the_chain_once_space_is_freed";
    let Some(rig) = ext4_rig(test, &["mkfs.ext4", "useradd", "mount"]) else {
        return;
    };
    let state = rig.setup.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=2m,mode=0700 bulwark-test-state {}",
        state.display()
    ));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(state.clone());
    let sock = rig.socket();
    let svc = rig.start();
    let (a, r) = seal_new(&rig, "vm-1", None, PointId::NONE);
    r.ok();
    // Fill the state folder to the last byte.
    let fill = state.join("fill");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", &format!("of={}", fill.display())])
        .output();
    let (b, r) = seal_new(&rig, "vm-1", Some(a), a);
    assert!(
        r.refused().is_some(),
        "a seal without ledger space must fail: {r:?}"
    );
    let msg = r.get("message").unwrap_or_default();
    assert!(
        msg.contains("is sealed") && msg.contains("state folder"),
        "the failure must say the point is sealed and what to free: {msg}"
    );
    eprintln!("seal during a full state folder: {msg}");
    let pb = sealed_path(&rig.repo, "vm-1", a, b);
    assert!(is_immutable(&pb), "the point stays sealed");
    // Space is freed; no restart.
    std::fs::remove_file(&fill).unwrap();
    let q = rig.user.ctl(&sock, &["query", &b.to_hex()]).ok();
    assert_eq!(q.get("state").as_deref(), Some("locked"));
    let (c, r) = seal_new(&rig, "vm-1", Some(a), b);
    r.ok();
    assert!(is_immutable(&sealed_path(&rig.repo, "vm-1", a, c)));
    let ledger = std::fs::read_to_string(state.join("ledger")).unwrap();
    assert!(
        ledger.contains(&b.to_string()) && ledger.contains(&c.to_string()),
        "the ledger on disk lacks the points sealed during and after the full folder"
    );
    drop(svc);
}
