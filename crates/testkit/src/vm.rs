//! A running disk for the live-source tests: qemu-storage-daemon standing in for a VM, a
//! guest that keeps writing through its NBD export while Bulwark fleeces it over QMP, the
//! check that a point is the disk as it was at one moment, and `qemu-nbd` for the tests that
//! read an image through an owner's dirty bitmap. Every process started here is stopped when
//! its guard is dropped, also when the test panics.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// True when the tools of a test of a running disk are installed: qemu-img, qemu-io and
/// qemu-storage-daemon (in Debian 12 the daemon comes with qemu-system-common, in later
/// releases with qemu-utils); prints `SKIP <test>: …` naming the missing one otherwise.
pub fn require_qsd_tools(test: &str) -> bool {
    crate::require_tools(test, &["qemu-img", "qemu-io", "qemu-storage-daemon"])
}

/// A QEMU helper the test started, stopped (SIGTERM, then waited for) when dropped.
pub struct Helper(Child);

impl Helper {
    /// Guards `child` and waits until it listens on every one of `sockets`.
    pub fn listening(child: Child, sockets: &[&Path]) -> Helper {
        let h = Helper(child);
        for s in sockets {
            wait_socket(s);
        }
        h
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = bulwark_sys::terminate(self.0.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to 20 s) until the Unix socket `p` accepts connections.
pub fn wait_socket(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(p).is_err() {
        assert!(Instant::now() < deadline, "{} never opened", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `qemu-nbd -r -B bitmap` serving the qcow2 `img` on `sock` (export name "").
pub fn qemu_nbd(img: &Path, bitmap: &str, sock: &Path) -> Helper {
    let _ = std::fs::remove_file(sock);
    let child = Command::new("qemu-nbd")
        .args(["-r", "-t", "-f", "qcow2", "-B", bitmap])
        .arg(format!("--socket={}", sock.display()))
        .arg(img)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Helper::listening(child, &[sock])
}

/// The NBD URI of the default export on the Unix socket `sock`.
pub fn nbd_uri(sock: &Path) -> String {
    format!("nbd+unix:///?socket={}", sock.display())
}

/// qemu-storage-daemon standing in for a running VM: node `disk` on a qcow2, a writable NBD
/// export `live` for the guest's writes, and two QMP monitors (Bulwark's and the test's).
pub struct Vm {
    _qsd: Helper,
    /// Bulwark's QMP monitor (`--qmp`).
    pub qmp: PathBuf,
    /// The test's own QMP monitor.
    pub test_qmp: PathBuf,
    /// The daemon's NBD server (`--nbd-socket`), exporting `live`.
    pub nbd: PathBuf,
}

impl Vm {
    /// Starts the daemon on the qcow2 `img`, its sockets in `dir`.
    pub fn start(dir: &Path, img: &Path) -> Vm {
        let qmp = dir.join("qmp.sock");
        let test_qmp = dir.join("qmp-test.sock");
        let nbd = dir.join("vm-nbd.sock");
        let child = Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!(
                r#"{{"driver":"file","node-name":"f0","filename":"{}"}}"#,
                img.display()
            ))
            .arg("--blockdev")
            .arg(r#"{"driver":"qcow2","node-name":"disk","file":"f0"}"#)
            .arg("--nbd-server")
            .arg(format!("addr.type=unix,addr.path={}", nbd.display()))
            .arg("--export")
            .arg("type=nbd,id=live,node-name=disk,name=live,writable=on")
            .arg("--chardev")
            .arg(format!(
                "socket,id=m0,path={},server=on,wait=off",
                qmp.display()
            ))
            .arg("--monitor")
            .arg("chardev=m0")
            .arg("--chardev")
            .arg(format!(
                "socket,id=m1,path={},server=on,wait=off",
                test_qmp.display()
            ))
            .arg("--monitor")
            .arg("chardev=m1")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let h = Helper::listening(child, &[&qmp, &test_qmp, &nbd]);
        Vm {
            _qsd: h,
            qmp,
            test_qmp,
            nbd,
        }
    }

    /// A client of the writable export `live`, as the guest writes.
    pub fn guest(&self) -> bulwark_nbd::Client {
        bulwark_nbd::Client::connect(
            &bulwark_nbd::NbdUri::unix(&self.nbd, "live"),
            &bulwark_nbd::ClientOptions {
                meta_contexts: vec![],
                timeout: Duration::from_secs(30),
            },
        )
        .unwrap()
    }

    /// The test's QMP monitor, connected.
    pub fn monitor(&self) -> bulwark_qemu::Qmp {
        bulwark_qemu::Qmp::connect(&self.test_qmp, Duration::from_secs(10)).unwrap()
    }

    /// Asserts that nothing of Bulwark's is left in the running process but its one bitmap
    /// on `disk`: no `bulwark*` node (the fleecing nodes) and no block job.
    pub fn assert_only_one_bitmap_left(&self) {
        let mut q = self.monitor();
        let node = q.node("disk").unwrap().unwrap();
        let names: Vec<_> = node.bitmaps.iter().map(|b| b.name.clone()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(q
            .node_names()
            .unwrap()
            .iter()
            .all(|n| !n.starts_with("bulwark")));
        let jobs = q
            .execute("query-block-jobs", serde_json::json!({}))
            .unwrap();
        assert_eq!(jobs, serde_json::json!([]));
    }
}

/// The size of each of the guest's writes.
pub const SLOT: u64 = 64 * 1024;

/// The bytes of write `i` of writer `round` (each write of each round is unique).
pub fn slot_data(round: u64, i: u64) -> Vec<u8> {
    let mut d = vec![(i % 251) as u8 + 1; SLOT as usize];
    d[..8].copy_from_slice(&(i + 1).to_le_bytes());
    d[8..16].copy_from_slice(&round.to_le_bytes());
    d
}

/// The guest: writes 64 KiB slots (of the first `slots`) one after another (one in flight)
/// until stopped; its log is (slot offset) per write index. Stopped when dropped too.
pub struct Guest {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<u64>>>,
    thread: Option<JoinHandle<()>>,
}

impl Guest {
    /// Starts writer `round` through `vm`'s export and returns once it made `first` writes.
    pub fn start(vm: &Vm, round: u64, slots: u64, first: usize) -> Guest {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let c = vm.guest();
        let thread = std::thread::spawn({
            let (stop, log) = (stop.clone(), log.clone());
            move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let off = ((i * 7919) % slots) * SLOT;
                    // Logged before the write: a write in flight at the transaction may or
                    // may not be in the point, and either is a prefix of the log.
                    log.lock().unwrap().push(off);
                    c.write_at(off, &slot_data(round, i)).unwrap();
                    i += 1;
                }
                c.flush().unwrap();
            }
        });
        let g = Guest {
            stop,
            log,
            thread: Some(thread),
        };
        while g.writes() < first {
            let ended = g.thread.as_ref().is_some_and(|t| t.is_finished());
            assert!(!ended, "the guest stopped after {} writes", g.writes());
            std::thread::sleep(Duration::from_millis(2));
        }
        g
    }

    /// How many writes were started so far.
    pub fn writes(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Stops the writer (its last write flushed) and returns its log.
    pub fn stop(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Checks that `got` is the disk `base` after exactly a prefix of the writes in `log`, and
/// returns the prefix's length.
pub fn prefix_of(base: &[u8], got: &[u8], round: u64, log: &[u64]) -> usize {
    assert_eq!(base.len(), got.len());
    let mut newest = 0usize;
    for &off in log.iter() {
        let s = &got[off as usize..(off + SLOT) as usize];
        let idx = u64::from_le_bytes(s[..8].try_into().unwrap());
        if idx > 0 && idx as usize <= log.len() && s == slot_data(round, idx - 1).as_slice() {
            newest = newest.max(idx as usize);
        }
    }
    let mut want = base.to_vec();
    apply(&mut want, round, &log[..newest]);
    assert!(
        want == got,
        "the point is not the disk at any one moment (newest write seen: {newest})"
    );
    newest
}

/// Applies the writes in `log` of writer `round` to `disk` (the next round's base).
pub fn apply(disk: &mut [u8], round: u64, log: &[u64]) {
    for (i, &off) in log.iter().enumerate() {
        disk[off as usize..(off + SLOT) as usize].copy_from_slice(&slot_data(round, i as u64));
    }
}
