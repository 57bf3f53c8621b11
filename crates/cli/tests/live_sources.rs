//! Live sources with real QEMU tools (issue 15): qcow2 images read through qemu-nbd,
//! incrementals through `qemu-nbd -B` dirty bitmaps and through Bulwark's own bitmaps
//! (`--cbt`), a running disk under qemu-storage-daemon taken by QMP image fleecing while a
//! writer keeps writing, and the adversarial cases of changed-block tracking. Every restore
//! is compared with `qemu-img convert -O raw` of the source at that moment.
//!
//! The written offsets come from a seed (`BULWARK_TEST_SEED`, else the clock; printed), so
//! a run can be repeated on the same inputs or on others.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulwark_testkit::images::{
    qcow2_bitmap, qcow2_bitmaps as bitmaps, qcow2_create, qcow2_holding, qcow2_write_64k, raw_of,
};
use bulwark_testkit::rng::Rng;
use bulwark_testkit::run_ok;
use bulwark_testkit::skip::require_tools;
use bulwark_testkit::vm::{
    apply, nbd_uri, prefix_of, qemu_nbd, require_qsd_tools, Guest, Vm, SLOT,
};
use serde_json::Value;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn seed() -> u64 {
    let s = std::env::var("BULWARK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("BULWARK_TEST_SEED={s}");
    s
}

/// qemu-img, qemu-io and qemu-nbd (qemu-utils).
fn tools(test: &str) -> bool {
    require_tools(test, &["qemu-img", "qemu-io", "qemu-nbd"])
}

/// Those and qemu-storage-daemon (`--cbt`, `--qmp`: [`require_qsd_tools`]).
fn qsd_tools(test: &str) -> bool {
    tools(test) && require_qsd_tools(test)
}

fn bulwark(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .output()
        .expect("bulwark runs")
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `bulwark backup --json` that must succeed; its report.
fn backup(repo: &Path, job: &str, source: &OsStr, extra: &[&str]) -> Value {
    let mut a: Vec<&OsStr> = vec![os("backup"), os("--json"), os("--repo"), repo.as_os_str()];
    a.extend([os("--job"), os(job), source]);
    a.extend(extra.iter().map(|s| os(s)));
    let o = bulwark(&a);
    assert!(
        o.status.success(),
        "backup failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    serde_json::from_slice(&o.stdout).expect("JSON report")
}

fn restore(repo: &Path, job: &str, point: Option<&str>, target: &Path) -> Vec<u8> {
    let _ = std::fs::remove_file(target);
    let mut a: Vec<&OsStr> = vec![
        os("restore"),
        os("--repo"),
        repo.as_os_str(),
        os("--job"),
        os(job),
    ];
    if let Some(p) = point {
        a.extend([os("--point"), os(p)]);
    }
    a.push(target.as_os_str());
    let o = bulwark(&a);
    assert!(
        o.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(target).unwrap()
}

/// `qemu-img ARGS IMG TAIL`, which must succeed; its output.
fn qemu_img(args: &[&str], img: &Path, tail: impl AsRef<OsStr>) -> String {
    run_ok(Command::new("qemu-img").args(args).arg(img).arg(tail))
}

/// A `--cbt` backup of job `vm` from `img`, which must restore (into `out`) as the disk is
/// now; its report.
fn cbt_backup(repo: &Path, img: &Path, out: &Path) -> Value {
    let expect = raw_of(img);
    let r = backup(repo, "vm", img.as_os_str(), &["--cbt"]);
    assert!(
        restore(repo, "vm", None, out) == expect,
        "the restore differs from the disk: {r}"
    );
    r
}

/// `n` distinct random 64 KiB-aligned offsets below `limit`.
fn offsets(rng: &mut Rng, n: usize, limit: u64) -> Vec<u64> {
    let mut v: Vec<u64> = Vec::new();
    while v.len() < n {
        let o = rng.below(limit / (64 * KIB)) * 64 * KIB;
        if !v.contains(&o) {
            v.push(o);
        }
    }
    v
}

fn blocks_of(offsets: &[u64], bs: u64) -> usize {
    let mut b: Vec<u64> = offsets.iter().map(|o| o / bs).collect();
    b.sort_unstable();
    b.dedup();
    b.len()
}

fn new_repo(dir: &Path) -> PathBuf {
    let p = dir.join("repo");
    bulwark_repository::Repository::init(&p, 14).unwrap();
    p
}

fn cbt(r: &Value) -> &Value {
    &r["cbt"]
}

/// A qcow2 of `size` with `data` random-ish bytes written at the start.
fn make_disk(dir: &Path, name: &str, size: u64, data_mib: u64, pattern: u8) -> PathBuf {
    let img = dir.join(name);
    qcow2_create(&img, size);
    let mut c = Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for i in 0..data_mib {
        c.arg("-c").arg(format!(
            "write -P {} {} 1M",
            pattern.wrapping_add(i as u8),
            i * MIB
        ));
    }
    run_ok(c.arg(&img));
    img
}

/// Where most tests here start: a scratch folder, a new repository in it, and a qcow2
/// disk made by [`make_disk`].
struct Rig {
    dir: tempfile::TempDir,
    repo: PathBuf,
    img: PathBuf,
}

/// A scratch folder and a new repository in it, when `tools` (the tests' tool check, which
/// prints why it skips) found what the test needs.
fn scratch(tools: bool) -> Option<(tempfile::TempDir, PathBuf)> {
    if !tools {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path());
    Some((dir, repo))
}

/// A [`Rig`] with the disk `name` (`size`, `data_mib` MiB written from `pattern`), when
/// `tools` found what the test needs ([`scratch`]).
fn rig(tools: bool, name: &str, size: u64, data_mib: u64, pattern: u8) -> Option<Rig> {
    let (dir, repo) = scratch(tools)?;
    let img = make_disk(dir.path(), name, size, data_mib, pattern);
    Some(Rig { dir, repo, img })
}

#[test]
fn incrementals_through_qemu_nbd_dirty_bitmaps_read_only_the_dirty_blocks_and_restore_exactly() {
    let t = "incrementals_through_qemu_nbd_dirty_bitmaps_read_only_the_dirty_blocks_and_restore_exactly";
    let Some(Rig { dir, repo, img }) = rig(tools(t), "vm.qcow2", 128 * MIB, 24, 1) else {
        return;
    };
    let mut rng = Rng::new(seed());
    qcow2_bitmap(&img, &["--add"], "b0");
    let sock = dir.path().join("nbd.sock");
    let uri = nbd_uri(&sock);
    let full = {
        let _h = qemu_nbd(&img, "b0", &sock);
        backup(&repo, "vm", os(&uri), &["--dirty-bitmap", "b0"])
    };
    assert_eq!(full["kind"], "full");
    assert!(
        full["bytes_read"].as_u64().unwrap() <= 24 * MIB,
        "holes are never read: {full}"
    );
    // b0 is the owner's: never cleared, it holds every write since it was added.
    let mut written = Vec::new();
    for round in 0..2u8 {
        let n = 3 + rng.below(6) as usize;
        let offs = offsets(&mut rng, n, 128 * MIB);
        qcow2_write_64k(&img, &offs, 0x40 + round);
        written.extend(offs);
        let expect = raw_of(&img);
        let r = {
            let _h = qemu_nbd(&img, "b0", &sock);
            backup(&repo, "vm", os(&uri), &["--dirty-bitmap", "b0"])
        };
        assert_eq!(r["kind"], "incremental");
        assert_eq!(cbt(&r)["used"], true, "{r}");
        let dirty = blocks_of(&written, MIB) as u64 * MIB;
        // The dirty blocks, plus the one anchor block that checks the owner's bitmap.
        let read = r["bytes_read"].as_u64().unwrap();
        assert_eq!(
            read,
            dirty + cbt(&r)["anchor_bytes"].as_u64().unwrap(),
            "{r}"
        );
        assert!(read <= dirty + MIB);
        let got = restore(&repo, "vm", None, &dir.path().join("out.raw"));
        assert!(
            got == expect,
            "round {round}: the restore differs from the source"
        );
    }
}

#[test]
fn image_files_are_backed_up_as_the_disk_inside_unless_format_raw() {
    let t = "image_files_are_backed_up_as_the_disk_inside_unless_format_raw";
    let Some(Rig { dir, repo, img }) = rig(tools(t), "disk.img", 64 * MIB, 5, 9) else {
        return;
    };
    let r = backup(&repo, "inside", img.as_os_str(), &[]);
    assert_eq!(
        r["disk_size"],
        64 * MIB,
        "the virtual disk, not the container: {r}"
    );
    assert!(restore(&repo, "inside", None, &dir.path().join("a.raw")) == raw_of(&img));
    let r = backup(&repo, "container", img.as_os_str(), &["--format", "raw"]);
    let container = std::fs::read(&img).unwrap();
    assert_eq!(r["disk_size"], container.len() as u64);
    assert!(restore(&repo, "container", None, &dir.path().join("b.raw")) == container);
    // vmdk and vdi are read through qemu-nbd too.
    for fmt in ["vmdk", "vdi"] {
        let other = dir.path().join(format!("disk.{fmt}.bin"));
        qemu_img(&["convert", "-f", "qcow2", "-O", fmt], &img, &other);
        let job = format!("as-{fmt}");
        backup(&repo, &job, other.as_os_str(), &[]);
        assert!(
            restore(&repo, &job, None, &dir.path().join("c.raw")) == raw_of(&img),
            "{fmt}"
        );
    }
}

#[test]
fn cbt_on_a_qcow2_keeps_one_bitmap_per_job_and_reads_only_what_changed() {
    let t = "cbt_on_a_qcow2_keeps_one_bitmap_per_job_and_reads_only_what_changed";
    let Some(Rig { dir, repo, img }) = rig(qsd_tools(t), "vm.qcow2", 96 * MIB, 16, 3) else {
        return;
    };
    let mut rng = Rng::new(seed());
    let full = backup(&repo, "vm", img.as_os_str(), &["--cbt"]);
    let b = bitmaps(&img);
    assert_eq!(
        b,
        vec![format!("bulwark.vm.{}", full["point"].as_str().unwrap())]
    );
    for round in 0..3u8 {
        let n = 1 + rng.below(10) as usize;
        let offs = offsets(&mut rng, n, 96 * MIB);
        qcow2_write_64k(&img, &offs, 0x60 + round);
        let r = cbt_backup(&repo, &img, &dir.path().join("o.raw"));
        assert_eq!(cbt(&r)["used"], true, "{r}");
        assert_eq!(r["bytes_read"], blocks_of(&offs, MIB) as u64 * MIB, "{r}");
        let point = r["point"].as_str().unwrap();
        assert_eq!(bitmaps(&img), vec![format!("bulwark.vm.{point}")]);
        assert_eq!(cbt(&r)["new_bitmap"], format!("bulwark.vm.{point}"));
    }
}

#[test]
fn a_bitmap_deleted_behind_bulwarks_back_falls_back_to_reading_everything() {
    let t = "a_bitmap_deleted_behind_bulwarks_back_falls_back_to_reading_everything";
    let Some(Rig { dir, repo, img }) = rig(qsd_tools(t), "vm.qcow2", 64 * MIB, 8, 5) else {
        return;
    };
    let mut rng = Rng::new(seed());
    backup(&repo, "vm", img.as_os_str(), &["--cbt"]);
    // Each case: Bulwark's bitmap removed, four writes, then how it comes back (if at all),
    // and what the fallback must say.
    let cases: [(&str, Option<&[&str]>, u8, &str); 3] = [
        // Recreated under the same name after the writes: empty, it would hide them.
        ("recreated", Some(&["--add", "-g", "1M"]), 0x77, "recreated"),
        // Recreated with QEMU's default granularity (`qemu-img bitmap --add NAME`): told
        // apart too, since Bulwark's bitmaps use another.
        (
            "recreated with the default granularity",
            Some(&["--add"]),
            0x76,
            "recreated",
        ),
        // Deleted outright: missing.
        ("deleted", None, 0x78, "not on the source"),
    ];
    for (case, readd, pattern, reason) in cases {
        let name = bitmaps(&img).pop().unwrap();
        qcow2_bitmap(&img, &["--remove"], &name);
        qcow2_write_64k(&img, &offsets(&mut rng, 4, 64 * MIB), pattern);
        if let Some(op) = readd {
            qcow2_bitmap(&img, op, &name);
        }
        let r = cbt_backup(&repo, &img, &dir.path().join("o.raw"));
        assert_eq!(cbt(&r)["used"], false, "{case}: {r}");
        let why = cbt(&r)["fallback_reason"].as_str().unwrap();
        assert!(why.contains(reason), "{case}: {why}");
    }
    // And the next one uses CBT again.
    qcow2_write_64k(&img, &offsets(&mut rng, 2, 64 * MIB), 0x79);
    let r = cbt_backup(&repo, &img, &dir.path().join("o.raw"));
    assert_eq!(cbt(&r)["used"], true, "{r}");
}

#[test]
fn a_bitmap_from_another_disk_is_never_trusted() {
    let t = "a_bitmap_from_another_disk_is_never_trusted";
    let Some((dir, repo)) = scratch(qsd_tools(t)) else {
        return;
    };
    // Owner-managed: disk B, with a bitmap of the same name, served on the same socket.
    let a = make_disk(dir.path(), "a.qcow2", 64 * MIB, 8, 1);
    let b = make_disk(dir.path(), "b.qcow2", 64 * MIB, 8, 100);
    for img in [&a, &b] {
        qcow2_bitmap(img, &["--add"], "b0");
    }
    let sock = dir.path().join("nbd.sock");
    let uri = nbd_uri(&sock);
    {
        let _h = qemu_nbd(&a, "b0", &sock);
        backup(&repo, "vm", os(&uri), &["--dirty-bitmap", "b0"]);
    }
    let r = {
        let _h = qemu_nbd(&b, "b0", &sock);
        backup(&repo, "vm", os(&uri), &["--dirty-bitmap", "b0"])
    };
    assert_eq!(cbt(&r)["used"], false, "{r}");
    assert!(
        cbt(&r)["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("differs from the parent"),
        "{r}"
    );
    assert!(restore(&repo, "vm", None, &dir.path().join("o.raw")) == raw_of(&b));
    // Managed: another disk's image (with its own Bulwark bitmap) copied over the path.
    let c = make_disk(dir.path(), "c.qcow2", 64 * MIB, 8, 50);
    let d = make_disk(dir.path(), "d.qcow2", 64 * MIB, 8, 150);
    backup(&repo, "c", c.as_os_str(), &["--cbt"]);
    backup(&repo, "d", d.as_os_str(), &["--cbt"]);
    std::fs::copy(&d, &c).unwrap();
    let r = backup(&repo, "c", c.as_os_str(), &["--cbt"]);
    assert_eq!(cbt(&r)["used"], false, "{r}");
    assert!(restore(&repo, "c", None, &dir.path().join("o.raw")) == raw_of(&d));
}

#[test]
fn a_grown_disk_and_a_removed_parent_fall_back_with_their_reason() {
    let t = "a_grown_disk_and_a_removed_parent_fall_back_with_their_reason";
    let Some(Rig { dir, repo, img }) = rig(qsd_tools(t), "vm.qcow2", 64 * MIB, 8, 7) else {
        return;
    };
    let mut rng = Rng::new(seed());
    backup(&repo, "vm", img.as_os_str(), &["--cbt"]);
    qcow2_write_64k(&img, &offsets(&mut rng, 3, 64 * MIB), 0x11);
    let second = backup(&repo, "vm", img.as_os_str(), &["--cbt"]);
    assert_eq!(cbt(&second)["used"], true);
    // The newest point goes (as retention or an operator would remove it): its parent's
    // bitmap was dropped when it was made, so nothing proves what changed since.
    std::fs::remove_file(second["path"].as_str().unwrap()).unwrap();
    qcow2_write_64k(&img, &offsets(&mut rng, 3, 64 * MIB), 0x12);
    let r = cbt_backup(&repo, &img, &dir.path().join("o.raw"));
    assert_eq!(r["kind"], "incremental");
    assert_eq!(cbt(&r)["used"], false, "{r}");
    assert!(cbt(&r)["fallback_reason"]
        .as_str()
        .unwrap()
        .contains("not on the source"));
    // The disk grows by 16 MiB.
    qemu_img(&["resize", "-q"], &img, "+16M");
    qcow2_write_64k(&img, &[70 * MIB], 0x13);
    let r = cbt_backup(&repo, &img, &dir.path().join("o.raw"));
    assert_eq!(r["kind"], "full", "{r}");
    assert!(r["full_reason"].as_str().unwrap().contains("bytes"), "{r}");
    assert_eq!(cbt(&r)["used"], false);
}

#[test]
fn verify_by_reading_reports_the_blocks_a_bitmap_missed() {
    let t = "verify_by_reading_reports_the_blocks_a_bitmap_missed";
    let Some(Rig { dir, repo, img }) = rig(qsd_tools(t), "vm.qcow2", 64 * MIB, 8, 7) else {
        return;
    };
    backup(
        &repo,
        "vm",
        img.as_os_str(),
        &["--cbt", "--cbt-verify-every", "2"],
    );
    let name = bitmaps(&img).pop().unwrap();
    // A write the bitmap does not see.
    qcow2_bitmap(&img, &["--disable"], &name);
    qcow2_write_64k(&img, &[3 * MIB], 0x21);
    qcow2_bitmap(&img, &["--enable"], &name);
    qcow2_write_64k(&img, &[5 * MIB], 0x22);
    let expect = raw_of(&img);
    let o = bulwark(&[
        os("backup"),
        os("--json"),
        os("--repo"),
        repo.as_os_str(),
        os("--job"),
        os("vm"),
        img.as_os_str(),
        os("--cbt"),
        os("--cbt-verify-every"),
        os("1"),
    ]);
    assert_eq!(o.status.code(), Some(1), "missed blocks exit 1");
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(cbt(&r)["verify"]["missed"], serde_json::json!([3]), "{r}");
    assert!(restore(&repo, "vm", None, &dir.path().join("o.raw")) == expect);
}

/// A fake QEMU guest agent: answers guest-sync, records freeze and thaw.
fn fake_agent(path: &Path, events: Arc<Mutex<Vec<String>>>) -> std::thread::JoinHandle<()> {
    use std::io::{BufRead, BufReader, Write};
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            let v: Value = serde_json::from_str(&line).unwrap();
            let cmd = v["execute"].as_str().unwrap_or("").to_string();
            let ret = match cmd.as_str() {
                "guest-sync" => v["arguments"]["id"].clone(),
                _ => serde_json::json!(1),
            };
            events.lock().unwrap().push(cmd);
            writeln!(w, "{}", serde_json::json!({ "return": ret })).unwrap();
        }
    })
}

#[test]
fn a_running_disk_is_backed_up_as_it_was_at_the_transaction_while_the_guest_writes() {
    let t = "a_running_disk_is_backed_up_as_it_was_at_the_transaction_while_the_guest_writes";
    let Some(Rig { dir, repo, img }) = rig(qsd_tools(t), "vm.qcow2", 64 * MIB, 32, 1) else {
        return;
    };
    let base = raw_of(&img);
    let vm = Vm::start(dir.path(), &img);
    let qmp = vm.qmp.to_str().unwrap().to_string();
    let nbd = vm.nbd.to_str().unwrap().to_string();
    let slots = 32 * MIB / SLOT;
    let mut disk = base.clone();
    for round in 0..3u64 {
        let guest = Guest::start(&vm, round, slots, 20);
        let agent_sock = dir.path().join(format!("qga{round}.sock"));
        let events = Arc::new(Mutex::new(Vec::new()));
        let agent = fake_agent(&agent_sock, events.clone());
        let r = backup(
            &repo,
            "vm",
            os("vm-disk"),
            &[
                "--qmp",
                &qmp,
                "--node",
                "disk",
                "--nbd-socket",
                &nbd,
                "--cbt",
                "--guest-agent",
                agent_sock.to_str().unwrap(),
            ],
        );
        let before_end = guest.writes();
        std::thread::sleep(Duration::from_millis(50));
        let log = guest.stop();
        agent.join().unwrap();
        assert_eq!(
            *events.lock().unwrap(),
            ["guest-sync", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
        );
        // The writes of earlier rounds are part of this round's base.
        let got = restore(&repo, "vm", None, &dir.path().join("o.raw"));
        let seen = prefix_of(&disk, &got, round, &log);
        assert!(seen >= 20, "writes before the transaction are in the point");
        assert!(
            seen < before_end,
            "writes after the transaction are not ({seen} of {before_end})"
        );
        if round > 0 {
            assert_eq!(cbt(&r)["used"], true, "{r}");
        }
        // Next round's base: the disk now.
        apply(&mut disk, round, &log);
    }
    vm.assert_only_one_bitmap_left();
}

#[test]
fn a_client_killed_between_the_transaction_and_the_end_leaves_tracking_intact() {
    let t = "a_client_killed_between_the_transaction_and_the_end_leaves_tracking_intact";
    let Some((dir, repo)) = scratch(qsd_tools(t)) else {
        return;
    };
    let mut rng = Rng::new(seed());
    let img = dir.path().join("vm.qcow2");
    // Incompressible data, so that level 19 makes the killed backup slow.
    qcow2_holding(&img, 64 * MIB, &rng.bytes(24 * MIB as usize));
    let vm = Vm::start(dir.path(), &img);
    let qmp = vm.qmp.to_str().unwrap().to_string();
    let nbd = vm.nbd.to_str().unwrap().to_string();
    let live = [
        "--qmp",
        qmp.as_str(),
        "--node",
        "disk",
        "--nbd-socket",
        nbd.as_str(),
        "--cbt",
    ];
    backup(&repo, "vm", os("vm-disk"), &live);
    let writes = offsets(&mut rng, 4, 64 * MIB);
    {
        let c = vm.guest();
        for &o in &writes {
            c.write_at(o, &vec![0xab; SLOT as usize]).unwrap();
        }
        c.flush().unwrap();
    }
    // A full at level 19 (slow), killed once its export is up.
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["backup", "--repo"])
        .arg(&repo)
        .args(["--job", "vm", "vm-disk", "--full", "--compression", "19"])
        .args(live)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut q = vm.monitor();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ex = q
            .execute("query-block-exports", serde_json::json!({}))
            .unwrap();
        if ex
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "bulwark-vm")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the export never appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "bulwark ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Left behind: the fleecing node, its job, the export, a new bitmap. The next backup
    // clears them and still knows what changed since the last sealed point.
    let expect = raw_of(&img);
    let r = backup(&repo, "vm", os("vm-disk"), &live);
    assert_eq!(r["kind"], "incremental");
    assert_eq!(cbt(&r)["used"], true, "{r}");
    assert_eq!(r["bytes_read"], blocks_of(&writes, MIB) as u64 * MIB, "{r}");
    assert!(restore(&repo, "vm", None, &dir.path().join("o.raw")) == expect);
    let node = q.node("disk").unwrap().unwrap();
    assert_eq!(node.bitmaps.len(), 1, "{:?}", node.bitmaps);
    assert_eq!(
        node.bitmaps[0].name,
        format!("bulwark.vm.{}", r["point"].as_str().unwrap())
    );
    let list = bulwark(&[
        os("list"),
        os("--json"),
        os("--repo"),
        repo.as_os_str(),
        os("--job"),
        os("vm"),
    ]);
    let v: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        v["jobs"][0]["points"].as_array().unwrap().len(),
        2,
        "no point from the killed run"
    );
}

#[path = "../../nbd/tests/common/fake.rs"]
mod fake;

#[test]
fn a_broken_nbd_server_fails_the_backup_cleanly_and_leaves_no_partial_point() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path());
    for how in [
        fake::Misbehave::CloseMidReply,
        fake::Misbehave::HugeLength,
        fake::Misbehave::UnknownType,
        fake::Misbehave::ShortChunk,
    ] {
        let (sock, _h) = fake::start(dir.path(), how);
        let t = Instant::now();
        let o = bulwark(&[
            os("backup"),
            os("--repo"),
            repo.as_os_str(),
            os("--job"),
            os("vm"),
            os(&nbd_uri(&sock)),
        ]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{how:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(t.elapsed() < Duration::from_secs(30), "{how:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("NBD"), "{how:?}: {err}");
        let incoming: Vec<_> = std::fs::read_dir(repo.join("incoming")).unwrap().collect();
        assert!(incoming.is_empty(), "{how:?}: a partial file was left");
        assert!(
            !repo.join("store").join("vm").exists(),
            "{how:?}: a point was made"
        );
    }
}

/// A 1 MiB qcow2 at `img` whose backing file is the raw file `backing`.
fn qcow2_over_raw(img: &Path, backing: &Path) {
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(backing)
            .arg(img)
            .arg("1M"),
    );
}

/// A VM's raw disk whose guest wrote an image header at sector 0 (a qcow2 naming a host file
/// as its backing file, a vmdk descriptor naming one as its extent) is never read through
/// those names: as a file it is refused unless `--format` says what it is, as a block device
/// it is raw, and the host file appears in no restore.
#[test]
fn a_raw_disk_whose_guest_wrote_an_image_header_never_makes_bulwark_read_a_host_file() {
    let t = "a_raw_disk_whose_guest_wrote_an_image_header_never_makes_bulwark_read_a_host_file";
    let Some((dir, repo)) = scratch(tools(t)) else {
        return;
    };
    let d = dir.path();
    let secret = d.join("host-secret.txt");
    let marker = b"HOST-SECRET-4f1c9a";
    let mut s = marker.repeat(4096);
    s.resize(MIB as usize, 0);
    std::fs::write(&secret, &s).unwrap();
    let hdr = d.join("hdr.qcow2");
    qcow2_over_raw(&hdr, &secret);
    let vmdk = format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"{}\" 0\n",
        secret.display()
    );
    for (name, header) in [
        ("qcow2", std::fs::read(&hdr).unwrap()),
        ("vmdk", vmdk.into_bytes()),
    ] {
        let guest = d.join(format!("guest-{name}.img"));
        let mut disk = Rng::new(seed()).bytes(16 * MIB as usize);
        disk[..header.len()].copy_from_slice(&header);
        std::fs::write(&guest, &disk).unwrap();
        let o = bulwark(&[
            os("backup"),
            os("--repo"),
            repo.as_os_str(),
            os("--job"),
            os(name),
            guest.as_os_str(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{name}: a probed image naming a host file must be refused: {err}"
        );
        assert!(
            err.contains("--format raw") && err.contains("host-secret.txt"),
            "{name}: {err}"
        );
        let held = bulwark_repository::Repository::open(&repo)
            .unwrap()
            .scan_job(name)
            .map_or(0, |s| s.points.len());
        assert_eq!(held, 0, "{name}: a refused backup made a restore point");
        backup(&repo, name, guest.as_os_str(), &["--format", "raw"]);
        let got = restore(&repo, name, None, &d.join("out.raw"));
        assert!(
            got == disk,
            "{name}: --format raw restores the raw disk as it is"
        );
        if bulwark_testkit::skip::is_root() {
            let dev = bulwark_testkit::fs::LoopDev::attach(&guest);
            let job = format!("{name}-dev");
            let r = backup(&repo, &job, dev.dev.as_os_str(), &[]);
            assert_eq!(
                r["disk_size"],
                16 * MIB,
                "{name}: a block device is read raw: {r}"
            );
            let got = restore(&repo, &job, None, &d.join("out.raw"));
            assert!(
                got == disk,
                "{name}: the block device restores as the raw disk"
            );
            assert!(!got.windows(marker.len()).any(|w| w == marker));
        } else {
            eprintln!("SKIP part of {t}: the block-device case needs root (losetup)");
        }
    }
    // An overlay the administrator made, named with --format, still reads its backing file.
    let ov = d.join("overlay.qcow2");
    qcow2_over_raw(&ov, &secret);
    backup(&repo, "overlay", ov.as_os_str(), &["--format", "qcow2"]);
    assert!(restore(&repo, "overlay", None, &d.join("out.raw")) == s);
}

/// A running disk's fleecing overlay can grow to the disk's size while the VM writes; where
/// TMPDIR has less room than that, the backup is refused before anything is asked of QEMU
/// (a full overlay would fail the VM's writes), and with room it goes there.
#[test]
fn a_running_disk_is_not_fleeced_where_a_full_overlay_could_fail_the_vms_writes() {
    let t = "a_running_disk_is_not_fleeced_where_a_full_overlay_could_fail_the_vms_writes";
    if !bulwark_testkit::skip::require_root(t, "mounting a small tmpfs") {
        return;
    }
    let Some(Rig { dir, repo, img }) = rig(qsd_tools(t), "vm.qcow2", 64 * MIB, 8, 4) else {
        return;
    };
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let _m = bulwark_testkit::fs::Mount::new(
        "-t tmpfs -o size=16m,mode=0700",
        Path::new("tmpfs"),
        &small,
    );
    let vm = Vm::start(dir.path(), &img);
    let base = raw_of(&img);
    let run = |tmp: &Path| {
        Command::new(env!("CARGO_BIN_EXE_bulwark"))
            .args(["--json", "backup", "--repo"])
            .arg(&repo)
            .args(["--job", "vm", "vm-disk", "--qmp"])
            .arg(&vm.qmp)
            .args(["--node", "disk", "--nbd-socket"])
            .arg(&vm.nbd)
            .env("TMPDIR", tmp)
            .output()
            .unwrap()
    };
    let o = run(&small);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("fleecing overlay") && err.contains("TMPDIR"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&small).unwrap().count(),
        0,
        "nothing left in TMPDIR"
    );
    let roomy = dir.path().join("roomy");
    std::fs::create_dir(&roomy).unwrap();
    let o = run(&roomy);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(restore(&repo, "vm", None, &dir.path().join("o.raw")) == base);
    assert_eq!(
        std::fs::read_dir(&roomy).unwrap().count(),
        0,
        "the overlay is removed after"
    );
}

/// A job file with `cbt = true` says in each run's result what changed-block tracking did:
/// everything read on the first run (and why), only the dirty blocks after a change.
#[test]
fn a_cbt_job_file_reports_what_changed_block_tracking_did_in_each_run() {
    let t = "a_cbt_job_file_reports_what_changed_block_tracking_did_in_each_run";
    let Some(Rig { dir, repo, img }) = rig(qsd_tools(t), "vm.qcow2", 64 * MIB, 8, 6) else {
        return;
    };
    let job = dir.path().join("vm.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"vm\"\nsource = \"{}\"\nrepository = \"{}\"\ncbt = true\n",
            img.display(),
            repo.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let run = || {
        let o = bulwark(&[
            os("--json"),
            os("job"),
            os("run"),
            os("--state-dir"),
            state.as_os_str(),
            job.as_os_str(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["disks"][0]["cbt"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let first = run();
    assert!(first.starts_with("read everything: "), "{first}");
    qcow2_write_64k(&img, &[3 * MIB], 0x5a);
    let second = run();
    assert!(second.starts_with("read only the "), "{second}");
    assert!(restore(&repo, "vm", None, &dir.path().join("o.raw")) == raw_of(&img));
}
