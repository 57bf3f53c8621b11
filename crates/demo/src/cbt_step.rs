//! The demo's live-source step (docs/sources.md): a qcow2 VM disk with a persistent dirty
//! bitmap, served read-only by `qemu-nbd -B`, a full and an incremental through the bitmap
//! (which reads only the dirty blocks), and a restore compared with `qemu-img convert`.
//! Skipped, with the reason, when QEMU's tools are not installed.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{file_hash, find_tool, s, Side};

struct Nbd(Child);

impl Drop for Nbd {
    fn drop(&mut self) {
        let _ = bulwark_sys::terminate(self.0.id());
        let _ = self.0.wait();
    }
}

fn tool(side: &Side, name: &str, args: &[&str]) -> anyhow::Result<()> {
    let path = find_tool(name).with_context(|| format!("{name} is not installed"))?;
    let o = side
        .command(&path)
        .args(args)
        .output()
        .with_context(|| format!("running {name}"))?;
    if !o.status.success() {
        bail!(
            "{name} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

fn serve(side: &Side, img: &Path, sock: &Path) -> anyhow::Result<Nbd> {
    let _ = std::fs::remove_file(sock);
    let path = find_tool("qemu-nbd").context("qemu-nbd is not installed")?;
    let mut cmd = side.command(&path);
    cmd.args(["-r", "-t", "-f", "qcow2", "-B", "b0"])
        .arg(format!("--socket={}", sock.display()))
        .arg(img)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    bulwark_sys::die_with_parent(&mut cmd);
    let nbd = Nbd(cmd.spawn().context("starting qemu-nbd")?);
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("qemu-nbd did not open {}", sock.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(nbd)
}

/// Runs the step; the lines to print.
pub(crate) fn cbt_step(side: &Side, dir: &Path, repo_dir: &Path) -> anyhow::Result<Vec<String>> {
    let missing: Vec<&str> = ["qemu-img", "qemu-io", "qemu-nbd"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if !missing.is_empty() {
        return Ok(vec![format!(
            "   live VM disk: skipped, {} not installed (apt-get install qemu-utils)",
            missing.join(", ")
        )]);
    }
    let live = std::path::absolute(dir.join("live"))?;
    std::fs::create_dir_all(&live)?;
    if let Some((uid, gid)) = side.user {
        std::os::unix::fs::chown(&live, Some(uid), Some(gid))?;
    }
    let img = live.join("vm.qcow2");
    let sock = live.join("nbd.sock");
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    tool(
        side,
        "qemu-img",
        &["create", "-q", "-f", "qcow2", s(&img), "256M"],
    )?;
    tool(
        side,
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 1 0 64M", s(&img)],
    )?;
    tool(side, "qemu-img", &["bitmap", "--add", s(&img), "b0"])?;
    let backup = |side: &Side| {
        side.bulwark(&[
            "backup",
            "--repo",
            s(repo_dir),
            "--job",
            "demo-vm",
            "--dirty-bitmap",
            "b0",
            &uri,
        ])
    };
    let full = {
        let _nbd = serve(side, &img, &sock)?;
        backup(side)?
    };
    // The guest writes three 64 KiB clusters.
    tool(
        side,
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 7 5M 64k",
            "-c",
            "write -P 8 100M 64k",
            "-c",
            "write -P 9 200M 64k",
            s(&img),
        ],
    )?;
    let incr = {
        let _nbd = serve(side, &img, &sock)?;
        backup(side)?
    };
    let restored = live.join("restored.raw");
    let expected = live.join("expected.raw");
    side.bulwark(&[
        "restore",
        "--repo",
        s(repo_dir),
        "--job",
        "demo-vm",
        s(&restored),
    ])?;
    tool(
        side,
        "qemu-img",
        &["convert", "-O", "raw", s(&img), s(&expected)],
    )?;
    let same = file_hash(&restored)? == file_hash(&expected)?;
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let used = incr["cbt"]["used"].as_bool() == Some(true);
    let _ = std::fs::remove_file(&restored);
    let _ = std::fs::remove_file(&expected);
    Ok(vec![
        format!(
            "   live VM disk: a 256 MiB qcow2 served by qemu-nbd -B b0; full {} read {}",
            full["point"].as_str().unwrap_or("?"),
            bulwark_cli_common::human(n(&full, "bytes_read"))
        ),
        format!(
            "   after 3 × 64 KiB written, the incremental through dirty bitmap b0 {} {} ({} of whole blocks marked dirty, {} blocks referenced unread); restored: {}",
            if used { "read" } else { "DID NOT USE THE BITMAP and read" },
            bulwark_cli_common::human(n(&incr, "bytes_read")),
            bulwark_cli_common::human(incr["cbt"]["dirty_block_bytes"].as_u64().unwrap_or(0)),
            n(&incr, "blocks_referenced"),
            if same { "byte-identical to qemu-img convert of the image" } else { "DIFFERENT from the image" }
        ),
    ])
}
