//! `bulwark demo`: a complete tour with embedded defaults, in `./bulwark-demo`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use bulwark_engine::{backup_local, restore_local, BackupOptions, RestoreOptions};
use bulwark_repository::{Repository, DEFAULT_IMMUTABLE_DAYS};

use crate::output::{human, Output, EXIT_DAMAGE, EXIT_OK};

const MARKER: &str = ".bulwark-demo";
const JOB: &str = "demo-disk";

/// Arguments of `bulwark demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Folder to create (replaced if it holds an earlier demo).
    #[arg(long, default_value = "bulwark-demo")]
    dir: PathBuf,
    /// Size of the sample disk image in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
}

/// Finds a system tool that may live in /sbin, which is not always on a user's PATH.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Deterministic pseudo-random bytes (xorshift), so the demo is the same on every machine.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "backup",
        "restore",
        "chain",
        "block",
        "immutable",
        "ransomware",
        "repository",
        "sealed",
        "clone",
        "expiry",
        "verify",
        "disk",
    ];
    let n = noise(seed, len / 4 + 8);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(WORDS[n[i % n.len()] as usize % WORDS.len()].as_bytes());
        out.push(if i % 11 == 10 { b'\n' } else { b' ' });
        i += 1;
    }
    out.truncate(len);
    out
}

/// Fills `files` with a small "system": text, logs and binary-looking data.
fn make_files(files: &Path) -> anyhow::Result<()> {
    for (dir, count) in [
        ("etc", 40),
        ("var/log", 8),
        ("usr/lib", 12),
        ("home/user", 6),
    ] {
        std::fs::create_dir_all(files.join(dir))?;
        for i in 0..count {
            let seed = (dir.len() as u64) << 32 | i as u64;
            let data = match dir {
                "etc" => text(seed, 4096 + (i * 997) % 16384),
                "var/log" => text(seed, 2 << 20),
                "usr/lib" => noise(seed, 3 << 20),
                _ => noise(seed, 5 << 20),
            };
            std::fs::write(files.join(dir).join(format!("file{i:03}")), data)?;
        }
    }
    Ok(())
}

fn run_tool(cmd: &mut Command) -> anyhow::Result<()> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// Creates the sample disk image: a real ext4 filesystem when mkfs.ext4 exists.
fn make_image(dir: &Path, image: &Path, size_mib: u64) -> anyhow::Result<String> {
    let files = dir.join("files");
    make_files(&files)?;
    if let Some(mkfs) = find_tool("mkfs.ext4") {
        run_tool(
            Command::new(mkfs)
                .args(["-q", "-F", "-b", "4096", "-d"])
                .arg(&files)
                .arg(image)
                .arg(format!("{size_mib}M")),
        )?;
        return Ok("a real ext4 filesystem".into());
    }
    let f = std::fs::File::create(image)?;
    f.set_len(size_mib << 20)?;
    use std::os::unix::fs::FileExt;
    for i in 0..(size_mib / 4) {
        f.write_all_at(&noise(i, 1 << 20), i * (4 << 20))?;
    }
    Ok("generated data (mkfs.ext4 not found: install e2fsprogs for a real filesystem)".into())
}

/// Changes the image as a day of use would: new and rewritten files inside the filesystem.
fn change_image(dir: &Path, image: &Path) -> anyhow::Result<()> {
    if let Some(debugfs) = find_tool("debugfs") {
        let new = dir.join("new-report.txt");
        std::fs::write(&new, text(99, 3 << 20))?;
        let rewritten = dir.join("rewritten.bin");
        std::fs::write(&rewritten, noise(7, 2 << 20))?;
        let cmds = dir.join("debugfs.cmds");
        let mut c = std::fs::File::create(&cmds)?;
        writeln!(c, "write {} home/user/new-report.txt", new.display())?;
        writeln!(c, "rm usr/lib/file003")?;
        writeln!(c, "write {} usr/lib/file003", rewritten.display())?;
        drop(c);
        run_tool(
            Command::new(debugfs)
                .arg("-w")
                .arg("-f")
                .arg(&cmds)
                .arg(image),
        )?;
        return Ok(());
    }
    let f = std::fs::OpenOptions::new().write(true).open(image)?;
    use std::os::unix::fs::FileExt;
    f.write_all_at(&noise(12345, 4 << 20), 16 << 20)?;
    Ok(())
}

fn file_hash(path: &Path) -> anyhow::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize())
}

/// Runs the demo.
pub fn run(a: Args, out: &Output) -> anyhow::Result<i32> {
    let dir = &a.dir;
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!(
                "{} exists and is not a Bulwark demo folder; remove it or pass --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        b"created by `bulwark demo`; safe to delete\n",
    )?;
    let say = |s: String| {
        if !out.json {
            println!("{s}");
        }
    };
    let repo_dir = dir.join("repo");
    let repo = Repository::init(&repo_dir, DEFAULT_IMMUTABLE_DAYS)?;
    say(format!(
        "1. created repository {} ({}-day immutability period)",
        repo_dir.display(),
        DEFAULT_IMMUTABLE_DAYS
    ));
    let image = dir.join("disk.img");
    let what = make_image(dir, &image, a.size_mib)?;
    say(format!(
        "2. made sample disk {} ({} MiB, {what})",
        image.display(),
        a.size_mib
    ));
    let opts = BackupOptions::default();
    let full = backup_local(&repo, JOB, &image, &opts, &|_| {})?;
    let mb_s = |bytes: u64, secs: f64| bytes as f64 / secs.max(1e-9) / 1e6;
    say(format!(
        "3. full backup {}: {} blocks stored as {} in {:.2}s ({:.0} MB/s of disk)",
        full.sealed.meta.point,
        full.counters.blocks_new,
        human(full.counters.bytes_stored),
        full.elapsed.as_secs_f64(),
        mb_s(full.sealed.meta.disk_size, full.elapsed.as_secs_f64())
    ));
    change_image(dir, &image)?;
    let inc = backup_local(&repo, JOB, &image, &opts, &|_| {})?;
    say(format!(
        "4. changed files inside the image, then incremental {}: {} changed blocks ({} stored), {} unchanged referenced",
        inc.sealed.meta.point,
        inc.counters.blocks_new,
        human(inc.counters.bytes_stored),
        inc.counters.blocks_unchanged
    ));
    let restored = dir.join("restored.img");
    let r = restore_local(
        &repo,
        JOB,
        None,
        &restored,
        &RestoreOptions::default(),
        &|_| {},
    )?;
    let same = file_hash(&restored)? == file_hash(&image)?;
    say(format!(
        "5. restored the incremental to {} in {:.2}s: {}",
        restored.display(),
        r.elapsed.as_secs_f64(),
        if same {
            "byte-identical to the source"
        } else {
            "DIFFERENT from the source"
        }
    ));
    let v = repo.verify(None, bulwark_engine::default_threads(), &|_| {})?;
    say(format!(
        "6. verify re-read {} blocks of {} restore points: {}",
        v.blocks_checked,
        v.points_checked,
        if v.is_clean() {
            "all good"
        } else {
            "DAMAGE FOUND"
        }
    ));
    let immutable = full.sealed.immutable && inc.sealed.immutable;
    say(format!(
        "7. {}",
        if immutable {
            "both restore points are sealed immutable".to_string()
        } else {
            "the restore points are NOT immutable: no immutability service guards this demo repository".to_string()
        }
    ));
    say(format!("Try: bulwark list --repo {}", repo_dir.display()));
    if out.json {
        out.json(&serde_json::json!({
            "repository": repo_dir, "image": image, "full": full.sealed.meta.point.to_hex(),
            "incremental": inc.sealed.meta.point.to_hex(), "restore_identical": same, "verify_clean": v.is_clean(),
            "immutable": immutable,
        }));
    }
    Ok(if same && v.is_clean() {
        EXIT_OK
    } else {
        EXIT_DAMAGE
    })
}
