//! The demo's instant-access step (docs/instant-access.md): the newest restore point served
//! by `bulwark export` over NBD and compared with the disk by `qemu-img compare`, then, as
//! root with FUSE, `bulwark mount` of the same point and one file read back from the
//! filesystem inside it. Each part says why it is skipped when a tool or root is missing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{file_hash, find_tool, s, Side};

/// A child stopped with SIGTERM (its graceful stop) and waited for on drop.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = bulwark_sys::terminate(self.0.id());
        let _ = self.0.wait();
    }
}

/// Runs the step; returns the lines to print.
pub fn instant_step(
    side: &Side,
    dir: &Path,
    repo: &Path,
    job: &str,
    image: &Path,
    inside: Option<(&str, &Path)>,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let exe = std::env::current_exe()?;
    let sock = std::path::absolute(dir.join("export.sock"))?;
    let _ = std::fs::remove_file(&sock);
    let child = side
        .command(&exe)
        .args(["export", "--repo", s(repo), "--job", job, "--nbd"])
        .arg(format!("unix:{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bulwark export")?;
    let export = Stopped(child);
    let started = Instant::now();
    while !sock.exists() {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("bulwark export did not open {}", sock.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = started.elapsed();
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    match find_tool("qemu-img") {
        Some(q) => {
            let o = std::process::Command::new(q)
                .args(["compare", "-f", "raw", "-F", "raw", s(image), &uri])
                .output()?;
            out.push(format!(
                "12. instant access: `bulwark export` served the newest point at {uri} after {} ms; qemu-img compare: {}",
                first.as_millis(),
                if o.status.success() {
                    "identical to the disk".to_string()
                } else {
                    format!("DIFFERENT: {}", String::from_utf8_lossy(&o.stdout).trim())
                }
            ));
        }
        None => out.push(format!(
            "12. instant access: `bulwark export` served the newest point at {uri} (install qemu-utils to compare it with qemu-img)"
        )),
    }
    drop(export);
    if bulwark_sys::effective_uid() != 0 {
        out.push("   file-level restore: skipped, `bulwark mount` mounts filesystems read-only as root (run the demo with sudo)".into());
        return Ok(out);
    }
    if !Path::new("/dev/fuse").exists() || find_tool("fusermount3").is_none() {
        out.push("   file-level restore: skipped, FUSE is not available (needs /dev/fuse and fusermount3: apt-get install fuse3)".into());
        return Ok(out);
    }
    let Some((rel, original)) = inside else {
        out.push(
            "   file-level restore: skipped, the demo disk holds no filesystem (install e2fsprogs)"
                .into(),
        );
        return Ok(out);
    };
    let mnt = std::path::absolute(dir.join("mnt"))?;
    std::fs::create_dir_all(&mnt)?;
    let mut child = std::process::Command::new(&exe)
        .args(["--json", "mount", "--repo", s(repo), "--job", job])
        .arg(&mnt)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bulwark mount")?;
    let stdout = child.stdout.take().context("mount's output")?;
    let mount = Stopped(child);
    let mut r = BufReader::new(stdout);
    let mut text = String::new();
    let report: serde_json::Value = loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("bulwark mount ended before mounting: {text}");
        }
        text.push_str(&line);
        if let Ok(v) = serde_json::from_str(&text) {
            break v;
        }
    };
    let at = report["partitions"][0]["mounted_at"]
        .as_str()
        .map(std::path::PathBuf::from)
        .context("bulwark mount mounted no filesystem")?;
    let same = file_hash(&at.join(rel))? == file_hash(original)?;
    out.push(format!(
        "   file-level restore: `bulwark mount` showed {} and mounted its filesystem read-only at {}; {rel} read back {}",
        report["disk_file"].as_str().unwrap_or_default(),
        at.display(),
        if same { "identical" } else { "DIFFERENT" }
    ));
    drop(mount);
    let left = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter(|l| l.contains(s(&mnt)))
        .count();
    out.push(format!(
        "   Ctrl-C (here SIGTERM) unmounted it: {}",
        if left == 0 {
            "nothing left mounted".to_string()
        } else {
            format!("{left} mounts LEFT, run `bulwark umount {}`", mnt.display())
        }
    ));
    Ok(out)
}
