//! Instant access with real tools: `bulwark export` read by qemu-img and qemu-io (full,
//! incremental, synthetic full; a qcow2 overlay; `--writable`), a damaged block, and
//! `bulwark mount` of a GPT disk with two ext4 partitions (root), without root, and killed
//! with SIGKILL.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use bulwark_testkit::guarded::wait_for as wait_until;
use bulwark_testkit::images::{
    change, gpt_ext4_disk, mixed as image, qemu_compare as compare, qemu_map,
};
use bulwark_testkit::{can_run, text, Rng, TestUser};
use common::{bin, bulwark_ok as bulwark, init_repo, ready_report, rig, s, Export};

fn tool(prog: &str, args: &[&str]) -> Output {
    Command::new(prog).args(args).output().unwrap()
}

fn backup(repo: &Path, job: &str, img: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["backup", "--repo", s(repo), "--job", job, "--json"];
    a.extend_from_slice(extra);
    a.push(s(img));
    serde_json::from_slice(&bulwark(&a).stdout).unwrap()
}

/// The JSON report a command prints once it is ready. The child is killed when it says
/// nothing parseable.
fn ready_json(child: &mut Child) -> serde_json::Value {
    ready_report(child).unwrap_or_else(|text| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the command said {text:?} before exiting");
    })
}

/// Runs qemu-io's `cmds` on `target`, which must all succeed.
fn qemu_io(fmt: &str, target: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", fmt]);
    for x in cmds {
        c.args(["-c", x]);
    }
    let o = c.arg(target).output().unwrap();
    assert!(
        o.status.success() && !text(&o).contains("failed"),
        "{}",
        text(&o)
    );
}

#[test]
fn export_serves_a_full_an_incremental_and_a_synthetic_full_byte_identical() {
    let t = "export_serves_a_full_an_incremental_and_a_synthetic_full_byte_identical";
    let Some((d, repo, img)) = rig(t, &["qemu-img"]) else {
        return;
    };
    image(&img, 1, 20);
    let mut points = Vec::new();
    let v = backup(&repo, "vm", &img, &["--block-size", "64K"]);
    assert_eq!(v["kind"], "full");
    let full = d.path().join("full.img");
    std::fs::copy(&img, &full).unwrap();
    points.push((v["point"].as_str().unwrap().to_string(), full));
    change(&img, 2);
    let v = backup(&repo, "vm", &img, &[]);
    assert_eq!(v["kind"], "incremental");
    let inc = d.path().join("inc.img");
    std::fs::copy(&img, &inc).unwrap();
    points.push((v["point"].as_str().unwrap().to_string(), inc));
    change(&img, 3);
    let v = backup(&repo, "vm", &img, &["--synthetic-full"]);
    let synth = v["synthetic_full"]["point"].as_str().unwrap().to_string();
    points.push((synth, img.clone()));
    for (i, (point, src)) in points.iter().enumerate() {
        let sock = d.path().join(format!("e{i}.sock"));
        let e = Export::start(&repo, "vm", point, &sock, &[]);
        compare(src, &e.uri());
        // Holes: the zero stretches are reported as zero, not data.
        let map = qemu_map(&e.uri());
        assert!(
            map.as_array()
                .unwrap()
                .iter()
                .any(|x| x["zero"] == true && x["data"] == false),
            "no zero extent in {map}"
        );
        assert!(e.stop().success());
        assert!(
            !sock.exists(),
            "the socket is removed when the export stops"
        );
    }
    // `latest` is the synthetic full.
    let sock = d.path().join("latest.sock");
    let e = Export::start(&repo, "vm", "latest", &sock, &["--cache", "0"]);
    compare(&img, &e.uri());
}

#[test]
fn a_qcow2_overlay_and_a_writable_export_take_writes_and_leave_the_point_intact() {
    let t = "a_qcow2_overlay_and_a_writable_export_take_writes_and_leave_the_point_intact";
    let Some((d, repo, img)) = rig(t, &["qemu-img", "qemu-io"]) else {
        return;
    };
    image(&img, 4, 12);
    backup(&repo, "vm", &img, &[]);
    let sock = d.path().join("e.sock");
    {
        let e = Export::start(&repo, "vm", "latest", &sock, &[]);
        // The documented recipe: a qcow2 overlay backed by the export.
        let ov = d.path().join("overlay.qcow2");
        let o = tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                &e.uri(),
                s(&ov),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        qemu_io(
            "qcow2",
            s(&ov),
            &["write -P 0x5a 1M 64k", "write -P 0x33 7M 4k"],
        );
        qemu_io(
            "qcow2",
            s(&ov),
            &["read -P 0x5a 1M 64k", "read -P 0x33 7M 4k"],
        );
        // Moving the running disk to its final place: convert the overlay (base + writes).
        let fin = d.path().join("final.raw");
        let o = tool("qemu-img", &["convert", "-O", "raw", s(&ov), s(&fin)]);
        assert!(o.status.success(), "{}", text(&o));
        let mut want = std::fs::read(&img).unwrap();
        want[1 << 20..(1 << 20) + 65536].fill(0x5a);
        want[7 << 20..(7 << 20) + 4096].fill(0x33);
        assert!(
            std::fs::read(&fin).unwrap() == want,
            "the converted disk has the writes"
        );
        // The export still serves the point unchanged.
        compare(&img, &e.uri());
    }
    // --writable: writes go to a local overlay file and survive a restart of the export.
    let ovf = d.path().join("writes.overlay");
    {
        let e = Export::start(&repo, "vm", "latest", &sock, &["--writable", s(&ovf)]);
        qemu_io(
            "raw",
            &e.uri(),
            &["write -P 7 3M 12k", "write -P 9 5000 100", "flush"],
        );
        assert!(e.stop().success());
    }
    {
        let e = Export::start(&repo, "vm", "latest", &sock, &["--writable", s(&ovf)]);
        qemu_io("raw", &e.uri(), &["read -P 7 3M 12k", "read -P 9 5000 100"]);
    }
    // The restore point itself never changed.
    let o = bulwark(&["verify", "--repo", s(&repo)]);
    assert!(o.status.success());
    let back = d.path().join("back.img");
    bulwark(&["restore", "--repo", s(&repo), "--job", "vm", s(&back)]);
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&img).unwrap());
}

#[test]
fn a_flipped_byte_in_a_stored_block_is_a_read_error_for_exactly_that_block() {
    let t = "a_flipped_byte_in_a_stored_block_is_a_read_error_for_exactly_that_block";
    let Some((d, repo, img)) = rig(t, &["qemu-io"]) else {
        return;
    };
    std::fs::write(&img, Rng::new(9).bytes(4 << 20)).unwrap();
    let v = backup(&repo, "vm", &img, &["--block-size", "64K"]);
    let file = PathBuf::from(v["path"].as_str().unwrap());
    let r = bulwark_format::PointReader::open(std::fs::File::open(&file).unwrap()).unwrap();
    let bs = u64::from(r.meta.block_size);
    let e = r.map[20];
    drop(r);
    bulwark_testkit::fs::flip_byte(&file, e.offset + 100, 0x10);
    let start = e.block.0 * bs;
    let sock = d.path().join("e.sock");
    let ex = Export::start(&repo, "vm", "latest", &sock, &[]);
    for (off, len, ok) in [
        (start - 4096, 4096, true),
        (start, 4096, false),
        (start + bs - 4096, 4096, false),
        (start + bs, 4096, true),
        (start - 65536, 65536, true),
    ] {
        let o = Command::new("qemu-io")
            .args([
                "-r",
                "-f",
                "raw",
                "-c",
                &format!("read {off} {len}"),
                &ex.uri(),
            ])
            .output()
            .unwrap();
        assert_eq!(
            !text(&o).contains("failed"),
            ok,
            "read {off} {len}: {}",
            text(&o)
        );
    }
    // The good data is the image's.
    let out = d.path().join("good.raw");
    let o = Command::new("qemu-img")
        .args(["dd", "-f", "raw", "-O", "raw", "bs=65536", "count=20"])
        .arg(format!("if={}", ex.uri()))
        .arg(format!("of={}", out.display()))
        .output()
        .unwrap();
    if o.status.success() {
        assert!(std::fs::read(&out).unwrap()[..] == std::fs::read(&img).unwrap()[..20 * 65536]);
    }
}

/// Builds a GPT disk with two ext4 partitions from two folders of files (no root needed).
fn gpt_disk(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let img = dir.join("gpt.img");
    let mut trees = Vec::new();
    for n in 0..2 {
        let tree = dir.join(format!("tree{n}"));
        std::fs::create_dir_all(tree.join("etc/deep")).unwrap();
        let mut rng = Rng::new(n as u64 + 50);
        std::fs::write(tree.join("etc/hostname"), format!("host-{n}\n")).unwrap();
        std::fs::write(tree.join("etc/deep/blob.bin"), rng.bytes(3 << 20)).unwrap();
        std::fs::write(tree.join("small.txt"), b"a file\n").unwrap();
        // What a compromised guest could leave for the restoring host: a setuid program.
        let suid = tree.join("id-suid");
        std::fs::copy("/usr/bin/id", &suid).unwrap();
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        trees.push(tree);
    }
    gpt_ext4_disk(
        &img,
        48,
        &[(2048, 40960, &trees[0]), (43008, 43008, &trees[1])],
    );
    (img, trees)
}

fn files_of(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn mountinfo_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| Path::new(m).starts_with(dir))
        })
        .map(String::from)
        .collect()
}

/// True while loop device `dev` (`/dev/loopN`) is attached to a file.
fn attached(dev: &str) -> bool {
    let name = dev.trim_start_matches("/dev/");
    Path::new(&format!("/sys/block/{name}/loop/backing_file")).exists()
}

fn loops_backed_under(dir: &Path) -> Vec<String> {
    let o = tool("losetup", &["-l", "-n", "-O", "NAME,BACK-FILE"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(s(dir)))
        .map(String::from)
        .collect()
}

/// A running `bulwark mount` of job `gpt` of `repo` on `mnt`, with its JSON report.
fn mount_gpt(cmd: &mut Command, repo: &Path, mnt: &Path) -> (Child, serde_json::Value) {
    let cmd = cmd.args(["--json", "mount", "--repo", s(repo), "--job", "gpt", s(mnt)]);
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let v = ready_json(&mut child);
    (child, v)
}

/// Where the root mount tests start: a [`gpt_disk`] backed up as job `gpt` into a new
/// repository, and an empty folder `mnt` to mount it on, all in the scratch folder `_d`
/// (removed with the rig).
struct GptRig {
    _d: tempfile::TempDir,
    repo: PathBuf,
    img: PathBuf,
    trees: Vec<PathBuf>,
    mnt: PathBuf,
}

/// A [`GptRig`], once loop devices, mount(2) and the tools of [`gpt_disk`] are there (else
/// the test skips).
fn gpt_rig(t: &str) -> Option<GptRig> {
    if !can_run(
        t,
        "loop devices and mount(2)",
        &["sfdisk", "mkfs.ext4", "losetup", "fusermount3"],
    ) {
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    let (img, trees) = gpt_disk(d.path());
    let repo = init_repo(d.path());
    backup(&repo, "gpt", &img, &[]);
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    Some(GptRig {
        _d: d,
        repo,
        img,
        trees,
        mnt,
    })
}

impl GptRig {
    /// A running `bulwark mount` (as root) of the rig's disk on its `mnt`, with its report.
    fn mount(&self) -> (Child, serde_json::Value) {
        mount_gpt(&mut Command::new(bin()), &self.repo, &self.mnt)
    }
}

#[test]
fn mount_as_root_shows_every_file_of_two_ext4_partitions_and_umount_undoes_it() {
    let t = "mount_as_root_shows_every_file_of_two_ext4_partitions_and_umount_undoes_it";
    let Some(rig) = gpt_rig(t) else {
        return;
    };
    let GptRig {
        repo,
        img,
        trees,
        mnt,
        ..
    } = &rig;
    let repo_before = files_of(repo)
        .into_iter()
        .map(|p| (std::fs::read(repo.join(&p)).unwrap(), p))
        .collect::<Vec<_>>();
    let (mut child, v) = rig.mount();
    let parts = v["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{v}");
    for (n, tree) in trees.iter().enumerate() {
        assert_eq!(parts[n]["filesystem"], "ext4", "{v}");
        let at = mnt.join(format!("part{}", n + 1));
        assert_eq!(parts[n]["mounted_at"], s(&at), "{v}");
        let want = files_of(tree);
        let got: Vec<PathBuf> = files_of(&at)
            .into_iter()
            .filter(|p| !p.starts_with("lost+found"))
            .collect();
        assert_eq!(got, want);
        for f in &want {
            assert!(
                std::fs::read(at.join(f)).unwrap() == std::fs::read(tree.join(f)).unwrap(),
                "{} differs",
                f.display()
            );
        }
        // Read-only: nothing can be written.
        assert!(std::fs::write(at.join("new"), b"x").is_err());
    }
    assert!(std::fs::read(mnt.join("disk.raw")).unwrap() == std::fs::read(img).unwrap());
    let o = bulwark(&["umount", s(mnt)]);
    assert!(text(&o).contains("unmounted"));
    assert!(child.wait().unwrap().success());
    assert!(
        mountinfo_under(mnt).is_empty(),
        "{:?}",
        mountinfo_under(mnt)
    );
    assert!(
        loops_backed_under(mnt).is_empty(),
        "{:?}",
        loops_backed_under(mnt)
    );
    for p in parts {
        let l = p["loop_device"].as_str().unwrap();
        assert!(!attached(l), "{l} is still attached");
    }
    // bulwark mount wrote nothing to the repository.
    for (bytes, p) in repo_before {
        assert!(
            std::fs::read(repo.join(&p)).unwrap() == bytes,
            "{} changed",
            p.display()
        );
    }
    assert!(std::fs::read_dir(mnt).unwrap().next().is_none());
}

#[test]
fn a_mount_killed_with_sigkill_leaves_no_mount_and_no_loop_device() {
    let t = "a_mount_killed_with_sigkill_leaves_no_mount_and_no_loop_device";
    let Some(rig) = gpt_rig(t) else {
        return;
    };
    let mnt = &rig.mnt;
    let (mut child, v) = rig.mount();
    assert_eq!(v["partitions"][1]["filesystem"], "ext4", "{v}");
    assert_eq!(mountinfo_under(mnt).len(), 3, "{:?}", mountinfo_under(mnt));
    let loops = bulwark_testkit::cmd::strings(&v["partitions"], "loop_device");
    assert!(loops.iter().all(|l| attached(l)), "{loops:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    // Also after the FUSE mount is gone (the kernel then names the backing file "/disk.raw",
    // so the devices are checked by name).
    let clean = wait_until(20, || {
        mountinfo_under(mnt).is_empty() && !loops.iter().any(|l| attached(l))
    });
    assert!(
        clean,
        "left behind: {:?} {:?}",
        mountinfo_under(mnt),
        loops.iter().filter(|l| attached(l)).collect::<Vec<_>>()
    );
    // The folder can be mounted on again.
    let (mut again, _) = rig.mount();
    let _ = tool("kill", &["-INT", &again.id().to_string()]);
    assert!(again.wait().unwrap().success());
    assert!(mountinfo_under(mnt).is_empty());
}

#[test]
fn mount_without_root_offers_the_disk_file_and_says_what_needs_root() {
    let t = "mount_without_root_offers_the_disk_file_and_says_what_needs_root";
    if !can_run(
        t,
        "creating the unprivileged user to run as",
        &["sfdisk", "mkfs.ext4", "fusermount3"],
    ) {
        return;
    }
    // Users reach FUSE through /dev/fuse, which udev's default rule makes 0666 on every
    // Debian host; this machine has no udev and leaves it 0600. Give it the usual mode.
    let mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777;
    if mode != 0o666 {
        eprintln!("note {t}: /dev/fuse was {mode:o}; setting 0666 as udev does on a normal host");
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let user = TestUser::create();
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = d.path().join("u");
    std::fs::create_dir(&home).unwrap();
    let (img, _) = gpt_disk(&home);
    for p in [&home, &img] {
        std::os::unix::fs::chown(p, Some(user.uid), Some(user.gid)).unwrap();
    }
    let repo = home.join("repo");
    let mnt = home.join("mnt");
    bulwark_repository::Repository::init(&repo, 7).unwrap();
    let o = tool(
        "chown",
        &["-R", &format!("{}:{}", user.uid, user.gid), s(&repo)],
    );
    assert!(o.status.success());
    let o = user
        .cmd(bin())
        .args(["backup", "--repo", s(&repo), "--job", "gpt", s(&img)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = user.cmd("mkdir").args(["-p", s(&mnt)]).output().unwrap();
    assert!(o.status.success());
    let (mut child, v) = mount_gpt(&mut user.cmd(bin()), &repo, &mnt);
    assert!(
        v["needs_root"].as_str().unwrap().contains("root"),
        "says what needs root: {v}"
    );
    assert_eq!(v["partitions"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["partitions"][0]["mounted_at"].is_null());
    // The user reads the disk file, byte-identical to the image.
    let o = user
        .cmd("cmp")
        .arg(&img)
        .arg(mnt.join("disk.raw"))
        .output()
        .unwrap();
    assert!(o.status.success(), "cmp: {}", text(&o));
    let o = user.cmd(bin()).args(["umount", s(&mnt)]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(child.wait().unwrap().success());
    assert!(mountinfo_under(&mnt).is_empty());
}

#[test]
fn an_export_killed_with_sigkill_leaves_only_its_socket_file_which_the_next_export_replaces() {
    let t =
        "an_export_killed_with_sigkill_leaves_only_its_socket_file_which_the_next_export_replaces";
    let Some((d, repo, img)) = rig(t, &["qemu-img"]) else {
        return;
    };
    image(&img, 21, 4);
    backup(&repo, "vm", &img, &[]);
    let sock = d.path().join("e.sock");
    let mut e = Export::start(&repo, "vm", "latest", &sock, &[]);
    let pid = e.child.id();
    e.child.kill().unwrap();
    e.child.wait().unwrap();
    // The kernel keeps the socket's file (nobody listens on it) and nothing else: the process
    // and its threads are gone, connections to the file are refused.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(sock.exists());
    let refused = std::os::unix::net::UnixStream::connect(&sock).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    drop(e);
    // The next export on the same path replaces the stale file; Ctrl-C stops it cleanly.
    let e = Export::start(&repo, "vm", "latest", &sock, &[]);
    compare(&img, &e.uri());
    e.signal("-INT");
    let mut e = e;
    assert!(e.child.wait().unwrap().success());
    assert!(!sock.exists(), "Ctrl-C removes the socket");
}

/// A root mount honours nothing the backed-up machine put in its filesystems (every partition
/// mount is nosuid, nodev, noexec: a guest's setuid program neither runs nor gains root), and
/// the mount is root's alone: another user reads neither the whole disk nor a partition.
#[test]
fn a_root_mount_runs_nothing_of_the_guest_and_is_readable_by_root_only() {
    let t = "a_root_mount_runs_nothing_of_the_guest_and_is_readable_by_root_only";
    let Some(rig) = gpt_rig(t) else {
        return;
    };
    let mnt = &rig.mnt;
    let (mut child, v) = rig.mount();
    assert_eq!(v["partitions"].as_array().unwrap().len(), 2, "{v}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let parts: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(1)
                .is_some_and(|m| m.starts_with(&format!("{}/part", s(mnt))))
        })
        .collect();
    assert_eq!(parts.len(), 2, "{mounts}");
    for l in &parts {
        let opts: Vec<&str> = l.split(' ').nth(3).unwrap().split(',').collect();
        for f in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(opts.contains(&f), "{f} missing: {l}");
        }
    }
    let suid = mnt.join("part1/id-suid");
    let mode = std::fs::metadata(&suid).unwrap().permissions().mode();
    assert_ne!(
        mode & 0o4000,
        0,
        "the file keeps its bits; the mount ignores them"
    );
    assert!(
        Command::new(&suid).output().is_err(),
        "a program of the guest ran on the host"
    );
    let user = TestUser::create();
    for p in [mnt.join("disk.raw"), mnt.join("part1/small.txt")] {
        let o = user.cmd("cat").arg(&p).output().unwrap();
        assert!(!o.status.success(), "another user read {}", p.display());
    }
    let o = bulwark(&["umount", s(mnt)]);
    assert!(text(&o).contains("unmounted"), "{}", text(&o));
    assert!(child.wait().unwrap().success());
}
