//! Running disks through QMP (`--qmp SOCKET --node NODE`), with a real qemu-storage-daemon
//! standing in for the VM: which block node is the disk, and the private folder each run
//! keeps under TMPDIR (docs/sources.md, "Live disks through QMP").
//!
//! - A node a format node reads as its file (a qcow2's file node, directly or through a
//!   filter; the file a raw node with offset/size shows a slice of) holds the container, not
//!   the disk: it is refused, naming the node to give, and nothing is written. A file node
//!   nothing sits on, or only a raw node without offset/size, is the disk and is backed up.
//! - A run killed with SIGKILL leaves its folder (overlay, NBD socket); the next run removes
//!   it, and leaves the folder of a run that is still going alone.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bulwark_testkit::cmd::stderr;
use bulwark_testkit::images::{qcow2_create, qcow2_holding, raw_of};
use bulwark_testkit::run_ok;
use bulwark_testkit::vm::{require_qsd_tools, Helper};
use bulwark_testkit::Rng;
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

/// Where every test here starts: a scratch folder, a new repository in it, and an empty
/// folder `tmp` the runs get as TMPDIR.
struct Rig {
    dir: tempfile::TempDir,
    repo: PathBuf,
    tmp: PathBuf,
}

/// A [`Rig`], when the tools of a running disk are installed (else a printed SKIP of `test`).
fn rig(test: &str) -> Option<Rig> {
    if !require_qsd_tools(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    bulwark_repository::Repository::init(&repo, 14).unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    Some(Rig { dir, repo, tmp })
}

/// qemu-storage-daemon with the nodes `blockdevs` (JSON, in order) and two QMP monitors:
/// Bulwark's (`qmp.sock`) and the test's (`qmp-test.sock`), in `dir`.
struct Qsd {
    _h: Helper,
    qmp: PathBuf,
    test_qmp: PathBuf,
}

impl Qsd {
    fn start(dir: &Path, blockdevs: &[Value]) -> Qsd {
        let qmp = dir.join("qmp.sock");
        let test_qmp = dir.join("qmp-test.sock");
        let mut c = Command::new("qemu-storage-daemon");
        for b in blockdevs {
            c.arg("--blockdev").arg(b.to_string());
        }
        for (id, sock) in [("m0", &qmp), ("m1", &test_qmp)] {
            c.arg("--chardev")
                .arg(format!(
                    "socket,id={id},path={},server=on,wait=off",
                    sock.display()
                ))
                .arg("--monitor")
                .arg(format!("chardev={id}"));
        }
        let child = c.stdin(Stdio::null()).spawn().unwrap();
        let h = Helper::listening(child, &[&qmp, &test_qmp]);
        Qsd {
            _h: h,
            qmp,
            test_qmp,
        }
    }

    /// Runs one QMP command on the test's monitor; its `return`.
    fn query(&self, cmd: &str) -> Value {
        let s = UnixStream::connect(&self.test_qmp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let answer = |r: &mut BufReader<UnixStream>| loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("event").is_none() {
                return v;
            }
        };
        answer(&mut r); // the greeting
        for c in ["qmp_capabilities", cmd] {
            writeln!(w, "{}", json!({ "execute": c })).unwrap();
            let v = answer(&mut r);
            assert!(v.get("error").is_none(), "{c}: {v}");
            if c == cmd {
                return v["return"].clone();
            }
        }
        unreachable!()
    }

    /// Asserts that nothing of Bulwark's is left in the daemon: no `bulwark*` node, no block
    /// job, no export.
    fn assert_nothing_of_bulwarks_left(&self) {
        let nodes = self.query("query-named-block-nodes");
        assert!(
            nodes
                .as_array()
                .unwrap()
                .iter()
                .all(|n| !n["node-name"].as_str().unwrap().starts_with("bulwark")),
            "{nodes}"
        );
        assert_eq!(self.query("query-block-jobs"), json!([]));
        assert_eq!(self.query("query-block-exports"), json!([]));
    }
}

fn file_node(name: &str, file: &Path) -> Value {
    json!({"driver": "file", "node-name": name, "filename": file})
}

/// `bulwark ARGS` with TMPDIR `tmp`.
fn bulwark(tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .env("TMPDIR", tmp)
        .output()
        .unwrap()
}

/// The arguments of a backup of job `job` from node `node` of the daemon on `qmp`.
fn live_backup<'a>(repo: &'a Path, job: &'a str, qmp: &'a Path, node: &'a str) -> Vec<&'a str> {
    vec![
        "backup",
        "--repo",
        repo.to_str().unwrap(),
        "--job",
        job,
        "vm-disk",
        "--qmp",
        qmp.to_str().unwrap(),
        "--node",
        node,
    ]
}

/// A backup that must succeed; its stderr.
fn backup_ok(tmp: &Path, args: &[&str]) -> String {
    let o = bulwark(tmp, args);
    assert!(o.status.success(), "backup failed: {}", stderr(&o));
    stderr(&o)
}

fn restore(repo: &Path, job: &str, target: &Path) -> Vec<u8> {
    let _ = std::fs::remove_file(target);
    let o = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["restore", "--repo"])
        .arg(repo)
        .args(["--job", job])
        .arg(target)
        .output()
        .unwrap();
    assert!(o.status.success(), "restore failed: {}", stderr(&o));
    std::fs::read(target).unwrap()
}

/// A qcow2 `name` in `dir` of `size` holding `data` (written from its start).
fn qcow2_with(dir: &Path, name: &str, size: u64, data: &[u8]) -> PathBuf {
    let img = dir.join(name);
    qcow2_holding(&img, size, data);
    img
}

/// The entries of folder `d`.
fn entries(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn points(repo: &Path, job: &str) -> usize {
    bulwark_repository::Repository::open(repo)
        .unwrap()
        .scan_job(job)
        .map_or(0, |s| s.points.len())
}

#[test]
fn a_node_a_format_node_reads_as_its_file_is_refused_naming_the_disks_node_and_nothing_is_written()
{
    let t = "a_node_a_format_node_reads_as_its_file_is_refused_naming_the_disks_node_and_nothing_is_written";
    let Some(Rig { dir, repo, tmp }) = rig(t) else {
        return;
    };
    let d = dir.path();
    let mut rng = Rng::seeded();
    let img0 = qcow2_with(d, "x.qcow2", 32 * MIB, &rng.bytes(4 * MIB as usize));
    let img1 = qcow2_with(d, "y.qcow2", 32 * MIB, &rng.bytes(4 * MIB as usize));
    let sliced = d.join("s.raw");
    let whole = rng.bytes(8 * MIB as usize);
    std::fs::write(&sliced, &whole).unwrap();
    // disk0: qcow2 on file proto0 (as `-blockdev driver=qcow2,node-name=disk0,
    // file.driver=file,file.node-name=proto0,…`); disk1: qcow2 on a preallocate filter on
    // file proto1; raw3: a raw node showing 4 MiB from offset 1 MiB of file proto3.
    let vm = Qsd::start(
        d,
        &[
            file_node("proto0", &img0),
            json!({"driver": "qcow2", "node-name": "disk0", "file": "proto0"}),
            file_node("proto1", &img1),
            json!({"driver": "preallocate", "node-name": "pre1", "file": "proto1"}),
            json!({"driver": "qcow2", "node-name": "disk1", "file": "pre1"}),
            file_node("proto3", &sliced),
            json!({"driver": "raw", "node-name": "raw3", "file": "proto3",
                   "offset": MIB, "size": 4 * MIB}),
        ],
    );
    for (node, disk, driver) in [
        ("proto0", "disk0", "qcow2"),
        ("proto1", "disk1", "qcow2"),
        ("pre1", "disk1", "qcow2"),
        ("proto3", "raw3", "raw"),
    ] {
        let o = bulwark(&tmp, &live_backup(&repo, node, &vm.qmp, node));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{node}: {err}");
        assert!(
            err.contains(&format!("give --node {disk}"))
                && err.contains(&format!("the {driver} node \"{disk}\""))
                && err.contains(&format!("block node \"{node}\"")),
            "{node}: {err}"
        );
        assert_eq!(
            points(&repo, node),
            0,
            "{node}: a refused backup made a point"
        );
        assert!(!repo.join("store").join(node).exists(), "{node}");
        assert_eq!(entries(&repo.join("incoming")), Vec::<String>::new());
        assert_eq!(entries(&tmp), Vec::<String>::new(), "nothing in TMPDIR");
        vm.assert_nothing_of_bulwarks_left();
    }
    // The nodes named in the refusals are the disks.
    backup_ok(&tmp, &live_backup(&repo, "disk0", &vm.qmp, "disk0"));
    assert!(restore(&repo, "disk0", &d.join("o.raw")) == raw_of(&img0));
    backup_ok(&tmp, &live_backup(&repo, "disk1", &vm.qmp, "disk1"));
    assert!(restore(&repo, "disk1", &d.join("o.raw")) == raw_of(&img1));
    backup_ok(&tmp, &live_backup(&repo, "raw3", &vm.qmp, "raw3"));
    assert!(
        restore(&repo, "raw3", &d.join("o.raw")) == whole[MIB as usize..5 * MIB as usize],
        "raw3 restores as its slice"
    );
    vm.assert_nothing_of_bulwarks_left();
}

#[test]
fn a_file_node_nothing_or_only_a_plain_raw_node_sits_on_is_the_disk_and_restores_byte_identical() {
    let t = "a_file_node_nothing_or_only_a_plain_raw_node_sits_on_is_the_disk_and_restores_byte_identical";
    let Some(Rig { dir, repo, tmp }) = rig(t) else {
        return;
    };
    let d = dir.path();
    // A raw disk the VM uses directly; its guest put a qcow2 header at sector 0, which a
    // file node never reads as one.
    let raw = d.join("lone.raw");
    let hdr = d.join("hdr.qcow2");
    qcow2_create(&hdr, MIB);
    let mut disk = Rng::seeded().bytes(16 * MIB as usize);
    let h = std::fs::read(&hdr).unwrap();
    disk[..h.len()].copy_from_slice(&h);
    disk[(4 * MIB) as usize..(8 * MIB) as usize].fill(0);
    std::fs::write(&raw, &disk).unwrap();
    // The same disk under a raw node without offset/size (`-drive file=…,format=raw`):
    // the raw node shows exactly the file's bytes, so either node is the disk.
    let raw2 = d.join("r.raw");
    std::fs::write(&raw2, &disk).unwrap();
    let vm = Qsd::start(
        d,
        &[
            file_node("lone0", &raw),
            file_node("proto2", &raw2),
            json!({"driver": "raw", "node-name": "raw2", "file": "proto2"}),
        ],
    );
    for (job, node) in [("vm", "lone0"), ("proto2", "proto2"), ("raw2", "raw2")] {
        backup_ok(&tmp, &live_backup(&repo, job, &vm.qmp, node));
        assert!(
            restore(&repo, job, &d.join("o.raw")) == disk,
            "{node}: the restore is the raw disk, byte for byte"
        );
    }
    vm.assert_nothing_of_bulwarks_left();
    assert_eq!(entries(&tmp), Vec::<String>::new());
}

/// A `bulwark` run, stopped (SIGCONT, SIGKILL, reaped) when dropped unfinished.
struct Run(Option<Child>);

impl Run {
    fn start(tmp: &Path, args: &[&str]) -> Run {
        let child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
            .args(args)
            .env("TMPDIR", tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Run(Some(child))
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    fn signal(&self, sig: &str) {
        run_ok(Command::new("kill").args([sig, &self.pid().to_string()]));
    }

    /// Waits until the daemon `vm` exports `export` (the run took its point in time).
    fn wait_export(&self, vm: &Qsd, export: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !vm
            .query("query-block-exports")
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == export)
        {
            assert!(Instant::now() < deadline, "the export never appeared");
            let gone = Command::new("kill")
                .args(["-0", &self.pid().to_string()])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| !s.success());
            assert!(!gone, "bulwark ended before its export was seen");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn kill(mut self) {
        let mut c = self.0.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// Waits for the end, which must be a success.
    fn finish(mut self) {
        let o = self.0.take().unwrap().wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The folder of run `pid` of `job` in TMPDIR `tmp`, which must be there.
fn folder_of(tmp: &Path, pid: u32, job: &str) -> PathBuf {
    let prefix = format!("bulwark-live-{pid}-{job}+");
    let found: Vec<String> = entries(tmp)
        .into_iter()
        .filter(|e| e.starts_with(&prefix))
        .collect();
    assert_eq!(found.len(), 1, "{:?}", entries(tmp));
    tmp.join(&found[0])
}

#[test]
fn the_folder_of_a_killed_backup_is_removed_by_the_next_run_and_a_running_ones_is_left_alone() {
    let t =
        "the_folder_of_a_killed_backup_is_removed_by_the_next_run_and_a_running_ones_is_left_alone";
    let Some(Rig { dir, repo, tmp }) = rig(t) else {
        return;
    };
    let d = dir.path();
    let mut rng = Rng::seeded();
    // Incompressible, so that level 19 makes a backup slow enough to catch.
    let (da, db) = (d.join("a"), d.join("b"));
    std::fs::create_dir(&da).unwrap();
    std::fs::create_dir(&db).unwrap();
    let img_a = qcow2_with(&da, "a.qcow2", 64 * MIB, &rng.bytes(24 * MIB as usize));
    let img_b = qcow2_with(&db, "b.qcow2", 64 * MIB, &rng.bytes(24 * MIB as usize));
    let disk = |img: &Path| {
        [
            file_node("f0", img),
            json!({"driver": "qcow2", "node-name": "disk", "file": "f0"}),
        ]
    };
    let slow = ["--full", "--compression", "19"];
    // Job b's run on one VM, caught (stopped) after its point in time: it is running.
    let vm_b = Qsd::start(&db, &disk(&img_b));
    let b_args = live_backup(&repo, "b", &vm_b.qmp, "disk");
    let running = Run::start(&tmp, &[b_args.as_slice(), &slow].concat());
    running.wait_export(&vm_b, "bulwark-b");
    running.signal("-STOP");
    let live = folder_of(&tmp, running.pid(), "b");
    // Job a's run on another, killed once it took its point in time: its folder stays.
    let vm_a = Qsd::start(&da, &disk(&img_a));
    let qmp_a = vm_a.qmp.clone();
    let a_args = live_backup(&repo, "a", &qmp_a, "disk");
    let killed = Run::start(&tmp, &[a_args.as_slice(), &slow].concat());
    killed.wait_export(&vm_a, "bulwark-a");
    let stale = folder_of(&tmp, killed.pid(), "a");
    assert!(stale.join("fleece.qcow2").exists());
    killed.kill();
    // The VM is restarted: its QEMU no longer knows the killed run's overlay.
    drop(vm_a);
    let vm_a = Qsd::start(&da, &disk(&img_a));
    assert!(stale.exists());
    // The next run of job a removes the killed run's folder, says so, and leaves b's.
    let err = backup_ok(&tmp, &a_args);
    assert!(!stale.exists(), "the killed run's folder is still there");
    assert!(
        err.contains("removed the private folder") && err.contains(&*stale.to_string_lossy()),
        "{err}"
    );
    assert!(
        live.join("fleece.qcow2").exists(),
        "the running backup's folder was touched"
    );
    assert!(
        !err.contains(&*live.to_string_lossy()),
        "the running backup's folder is named: {err}"
    );
    assert!(restore(&repo, "a", &d.join("o.raw")) == raw_of(&img_a));
    // The running backup ends as if nothing happened.
    running.signal("-CONT");
    running.finish();
    assert!(restore(&repo, "b", &d.join("o.raw")) == raw_of(&img_b));
    assert_eq!(entries(&tmp), Vec::<String>::new(), "TMPDIR is empty after");
    vm_a.assert_nothing_of_bulwarks_left();
    vm_b.assert_nothing_of_bulwarks_left();
}
