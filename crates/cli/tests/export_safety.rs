//! Who can reach an export or a mount, and what `bulwark umount` may signal: a TCP export
//! listens on loopback unless `--allow-remote-clients` (then with a warning), its Unix socket
//! is 0600 whatever the umask, `umount` never signals a process that only reuses a dead
//! mount's pid, a folder in use is said to be in use, and a mount whose cleanup failed exits 2.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bulwark_testkit::guarded::wait_for as wait_until;
use bulwark_testkit::{can_run, require_tools, skip, text, Rng};
use common::{bin, bulwark_ok, init_repo, ready_report, s};

/// A repository in `d` holding one point of job `e`, a small disk image.
fn repo_with_point(d: &Path) -> PathBuf {
    let repo = init_repo(d);
    let img = d.join("disk.img");
    std::fs::write(&img, Rng::new(7).bytes(2 << 20)).unwrap();
    bulwark_ok(&["backup", "--repo", s(&repo), "--job", "e", s(&img)]);
    repo
}

/// A command the test started, stopped with SIGTERM (then SIGKILL) if the test ends first,
/// so that a failing test leaves no export or mount running.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
    fn take(mut self) -> Child {
        self.0.take().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut c) = self.0.take() else {
            return;
        };
        // Exited and reaped: its pid may be another process's by now.
        if c.try_wait().is_ok_and(|s| s.is_some()) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .output();
        if !wait_until(10, || c.try_wait().is_ok_and(|s| s.is_some())) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `sh -c SCRIPT` with the `bulwark` binary as `$B`, which must serve: its JSON report.
fn start_sh(script: &str) -> (Running, serde_json::Value) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("B", bin())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let v = ready_report(&mut child);
    let running = Running(Some(child));
    (running, v.unwrap_or_else(|e| panic!("did not serve: {e}")))
}

/// Stops a running command with SIGTERM; its standard error.
fn stop(r: Running) -> String {
    let mut child = r.take();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .output();
    let err = bulwark_testkit::cmd::read_stderr(&mut child);
    child.wait().unwrap();
    err
}

/// Serves job `e` of `repo` on TCP with `nbd` (the address and its options), checks that the
/// export's URI starts with `uri`, and stops it: what it said on its standard error.
fn tcp_export(repo: &Path, nbd: &str, uri: &str) -> String {
    let (child, v) = start_sh(&format!(
        "exec \"$B\" --json export --repo {} --job e --nbd {nbd}",
        s(repo)
    ));
    assert!(v["uri"].as_str().unwrap().starts_with(uri), "{v}");
    stop(child)
}

#[test]
fn an_export_on_a_non_loopback_address_needs_allow_remote_clients_and_then_warns() {
    let d = tempfile::tempdir().unwrap();
    // Refused before anything is opened: the repository does not even exist.
    let missing = d.path().join("no-repo");
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:10809"] {
        let o = Command::new(bin())
            .args(["export", "--repo", s(&missing), "--job", "e", "--nbd", addr])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{addr}: {}", text(&o));
        assert!(
            err.contains("not a loopback address") && err.contains("--allow-remote-clients"),
            "{addr}: {err}"
        );
        assert!(!err.contains("no-repo"), "nothing opened first: {err}");
    }
    let repo = repo_with_point(d.path());
    // With the option it serves, and warns on stderr.
    let err = tcp_export(&repo, "0.0.0.0:0 --allow-remote-clients", "nbd://0.0.0.0:");
    assert!(
        err.contains("WARNING") && err.contains("reachable from other machines"),
        "{err}"
    );
    // Loopback needs no option and gets no warning.
    let err = tcp_export(&repo, "127.0.0.1:0", "nbd://127.0.0.1:");
    assert!(!err.contains("WARNING"), "{err}");
}

#[test]
fn an_export_socket_is_its_owners_only_whatever_the_umask() {
    let d = tempfile::tempdir().unwrap();
    let repo = repo_with_point(d.path());
    let sock = d.path().join("s.sock");
    let (child, v) = start_sh(&format!(
        "umask 000; exec \"$B\" --json export --repo {} --job e --nbd unix:{}",
        s(&repo),
        s(&sock)
    ));
    assert!(v["uri"].as_str().unwrap().contains(s(&sock)), "{v}");
    let mode = std::fs::symlink_metadata(&sock)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the socket is {mode:o} under umask 000");
    // Its owner connects; the private folder it was bound in is gone.
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    stop(child);
    assert!(!sock.exists(), "the socket is removed at stop");
}

/// The state file `bulwark umount DIR` reads, as `bulwark mount` names it.
fn state_file(state_dir: &Path, dir: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let h = bulwark_format::Digest::of(dir.as_os_str().as_bytes()).to_hex();
    state_dir.join(format!("{}.json", &h[..32]))
}

/// The start time of `pid` (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
}

#[test]
fn umount_never_signals_a_process_that_only_reuses_a_dead_mounts_pid() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = std::fs::canonicalize(&mnt).unwrap();
    // Where `bulwark umount` looks: fixed for root, under XDG_RUNTIME_DIR for anyone else.
    let runtime = d.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let state_dir = if bulwark_testkit::is_root() {
        PathBuf::from("/run/bulwark/mounts")
    } else {
        runtime.join("bulwark-mounts")
    };
    std::fs::create_dir_all(&state_dir).unwrap();
    // An unrelated process whose command line says "bulwark" now holds the dead mount's pid.
    let mut other = Running(Some(
        Command::new("bash")
            .args(["-c", "exec -a bulwark-fake sleep 120"])
            .spawn()
            .unwrap(),
    ));
    let pid = other.child().id();
    assert!(wait_until(5, || std::fs::read(format!(
        "/proc/{pid}/cmdline"
    ))
    .is_ok_and(|c| c.starts_with(b"bulwark-fake"))));
    // A state file of an older bulwark (no start time), then one whose start time is not
    // that process's.
    for start in [None, Some(start_time(pid) + 1)] {
        let mut state = serde_json::json!({
            "pid": pid, "dir": mnt, "disk": mnt.join("disk.raw"),
            "fuse": false, "loops": [], "mounts": [],
        });
        if let Some(t) = start {
            state["start_time"] = t.into();
        }
        let f = state_file(&state_dir, &mnt);
        std::fs::write(&f, serde_json::to_vec(&state).unwrap()).unwrap();
        let o = Command::new(bin())
            .args(["umount", s(&mnt)])
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            alive(pid),
            "bulwark umount killed pid {pid}, which is not the mount (start time {start:?}): {}",
            text(&o)
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(!f.exists(), "the state is cleaned up");
    }
    other.child().kill().unwrap();
    other.child().wait().unwrap();
}

/// The pids whose command line holds every one of `words`.
fn pids_with(words: &[&str]) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(c) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = c
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if words.iter().all(|w| args.iter().any(|a| a == w)) {
            v.push(pid);
        }
    }
    v
}

fn mounted_under(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| Path::new(m).starts_with(dir))
        })
}

/// A running `bulwark --json mount … DIR` with `extra` options, once it reports.
fn mount(repo: &Path, job: &str, mnt: &Path, extra: &[&str]) -> (Running, serde_json::Value) {
    let mut child = Command::new(bin())
        .args(["--json", "mount", "--repo", s(repo), "--job", job])
        .args(extra)
        .arg(mnt)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    match ready_report(&mut child) {
        Ok(v) => (Running(Some(child)), v),
        Err(t) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bulwark mount said {t:?}");
        }
    }
}

fn mount_again(repo: &Path, mnt: &Path) -> Output {
    Command::new(bin())
        .args([
            "mount",
            "--repo",
            s(repo),
            "--job",
            "e",
            "--no-partitions",
            s(mnt),
        ])
        .output()
        .unwrap()
}

#[test]
fn mounting_on_a_folder_in_use_says_it_is_in_use_live_or_dead() {
    let t = "mounting_on_a_folder_in_use_says_it_is_in_use_live_or_dead";
    if !require_tools(t, &["fusermount3"]) {
        return;
    }
    let fuse = std::fs::metadata("/dev/fuse");
    if !fuse.is_ok_and(|m| bulwark_testkit::is_root() || m.permissions().mode() & 0o006 == 0o006) {
        skip!(
            t,
            "/dev/fuse is missing or not usable by this user (modprobe fuse; mode 0666)"
        );
    }
    let d = tempfile::tempdir().unwrap();
    let repo = repo_with_point(d.path());
    let mnt = std::fs::canonicalize(d.path()).unwrap().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (mut child, _) = mount(&repo, "e", &mnt, &["--no-partitions"]);
    let in_use = |o: &Output, when: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{when}: {}", text(o));
        assert!(
            err.contains("already in use by a mount")
                && err.contains(&format!("bulwark umount {}", mnt.display())),
            "{when}: {err}"
        );
    };
    // Live: the folder shows disk.raw, yet it is in use, not "not empty".
    in_use(&mount_again(&repo, &mnt), "on a live mount");
    // Dead: the mount and its guard both killed, the kernel keeps the FUSE mount (ENOTCONN).
    let guards = pids_with(&["umount", "--guard", s(&mnt)]);
    assert_eq!(guards.len(), 1, "{guards:?}");
    let _ = Command::new("kill")
        .args(["-KILL", &guards[0].to_string()])
        .output();
    assert!(wait_until(5, || !alive(guards[0])));
    child.child().kill().unwrap();
    child.child().wait().unwrap();
    assert!(mounted_under(&mnt));
    in_use(&mount_again(&repo, &mnt), "on a dead mount");
    let o = Command::new(bin())
        .args(["umount", s(&mnt)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!mounted_under(&mnt));
}

/// A GPT disk `gpt.img` in `d` with one ext4 partition holding `f.txt`.
fn one_partition_disk(d: &Path) -> PathBuf {
    let img = d.join("gpt.img");
    let tree = d.join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f.txt"), b"held open\n").unwrap();
    bulwark_testkit::images::gpt_ext4_disk(&img, 24, &[(2048, 40960, &tree)]);
    img
}

#[test]
fn a_mount_whose_cleanup_fails_exits_2_and_says_what_is_left() {
    let t = "a_mount_whose_cleanup_fails_exits_2_and_says_what_is_left";
    if !can_run(
        t,
        "loop devices and mount(2)",
        &["sfdisk", "mkfs.ext4", "losetup", "fusermount3"],
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = one_partition_disk(d.path());
    let repo = init_repo(d.path());
    bulwark_ok(&["backup", "--repo", s(&repo), "--job", "g", s(&img)]);
    let mnt = std::fs::canonicalize(d.path()).unwrap().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut child = Running(Some(
        Command::new(bin())
            .args(["--json", "mount", "--repo", s(&repo), "--job", "g", s(&mnt)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let v = ready_report(child.child()).unwrap_or_else(|e| panic!("bulwark mount said {e:?}"));
    let part = mnt.join("part1");
    assert_eq!(v["partitions"][0]["mounted_at"], s(&part), "{v}");
    let dev = v["partitions"][0]["loop_device"]
        .as_str()
        .unwrap()
        .to_string();
    // A program keeps a file of the partition open while the mount is stopped.
    let mut holder = Running(Some(
        Command::new("sleep")
            .arg("120")
            .stdin(std::fs::File::open(part.join("f.txt")).unwrap())
            .spawn()
            .unwrap(),
    ));
    let child = child.take();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .output();
    let o = child.wait_with_output().unwrap();
    holder.child().kill().unwrap();
    holder.child().wait().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        err.contains("could not undo everything") && err.contains("busy"),
        "{err}"
    );
    // Once the file is closed, nothing is left: the guard detached the tree lazily and the
    // loop device clears itself.
    let name = dev.trim_start_matches("/dev/");
    let gone = wait_until(20, || {
        !mounted_under(&mnt) && !Path::new(&format!("/sys/block/{name}/loop/backing_file")).exists()
    });
    if !gone {
        let _ = Command::new("umount").args(["-l", s(&mnt)]).output();
        let _ = Command::new("losetup").args(["-d", &dev]).output();
    }
    assert!(gone, "{dev} or a mount under {} is left", mnt.display());
}
