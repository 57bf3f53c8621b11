//! `bulwark demo`: a complete tour with embedded defaults, in `./bulwark-demo`. A library of
//! its own, so that the client does not carry the demo's process harness (it starts a real
//! `bulwark-immutd` as root) among its commands.

/// `outln!` / `out!`: printing that survives a closed standard output (`… | head`).
#[macro_use]
extern crate bulwark_cli_common;

mod cbt_step;
mod instant_step;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;

use anyhow::{anyhow, bail, Context};
use bulwark_repository::{utc, Repository, DEFAULT_IMMUTABLE_DAYS};
use bulwark_testkit::immutd::{Immutd, ImmutdSetup};
use serde_json::Value;

use bulwark_cli_common::{human, Output, EXIT_DAMAGE, EXIT_OK};

const MARKER: &str = ".bulwark-demo";
const JOB: &str = "demo-disk";
/// The unprivileged service user the demo creates when run as root.
const DEMO_USER: &str = "bulwark-demo";

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

/// Who runs the repository side: the current user, or (as root) the unprivileged demo
/// service user, with an immutability service guarding the repository.
struct Side {
    user: Option<(u32, u32)>,
    immutd: Option<Immutd>,
}

impl Side {
    /// Runs `bulwark --json ARGS` as the repository side and returns its JSON output.
    fn bulwark(&self, args: &[&str]) -> anyhow::Result<Value> {
        json_of(self.command(&std::env::current_exe()?), args)
    }

    /// Runs `bulwark-repo --json ARGS` as the repository side.
    fn repo(&self, args: &[&str]) -> anyhow::Result<Value> {
        json_of(self.command(&sibling_binary("bulwark-repo")?), args)
    }

    /// `bulwark-tier --json ARGS` as the repository side's user.
    fn tier(&self, args: &[&str]) -> anyhow::Result<Value> {
        json_of(self.command(&sibling_binary("bulwark-tier")?), args)
    }

    /// A command that runs as the repository side's user.
    fn command(&self, prog: &Path) -> Command {
        let mut cmd = Command::new(prog);
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid).current_dir("/");
        }
        cmd
    }
}

/// Runs `cmd --json ARGS` and parses its JSON output (verify reports damage with exit 1).
fn json_of(mut cmd: Command, args: &[&str]) -> anyhow::Result<Value> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let o = cmd
        .arg("--json")
        .args(args)
        .output()
        .with_context(|| format!("running {prog} {}", args.join(" ")))?;
    let text = String::from_utf8_lossy(&o.stdout);
    match serde_json::from_str(&text) {
        // verify reports damage, and report a page with failing alerts, with exit 1.
        Ok(v)
            if o.status.success()
                || args[0] == "verify"
                || (args[0] == "report" && o.status.code() == Some(1)) =>
        {
            Ok(v)
        }
        _ => Err(anyhow!(
            "{prog} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

/// A program of this workspace next to this one, built from the source checkout if missing
/// (`cargo run --bin bulwark` builds only `bulwark`).
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let found = |exe: &Path| exe.parent().map(|d| d.join(name)).filter(|p| p.is_file());
    if let Some(p) = found(&exe) {
        return Ok(p);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if workspace.join("Cargo.toml").exists()
        && exe.parent().is_some_and(|d| d.ends_with("target/release"))
    {
        outln!("   (building {name} once)");
        run_tool(
            Command::new("cargo")
                .args(["build", "--release", "-q", "--bin", name])
                .current_dir(&workspace),
        )?;
    }
    found(&exe).ok_or_else(|| {
        anyhow!(
            "{name} is not installed next to {}; build it with cargo build --release --bin {name}",
            exe.display()
        )
    })
}

/// Stops the transport service when the demo ends, also on error.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn id_of(user: &str, flag: &str) -> Option<u32> {
    let o = Command::new("id").arg(flag).arg(user).output().ok()?;
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}

/// The demo service user's (uid, gid), created if missing.
fn demo_user() -> anyhow::Result<(u32, u32)> {
    if id_of(DEMO_USER, "-u").is_none() {
        let useradd = find_tool("useradd")
            .ok_or_else(|| anyhow!("useradd not found (apt-get install passwd)"))?;
        let nologin = find_tool("nologin").unwrap_or_else(|| PathBuf::from("/bin/false"));
        run_tool(
            Command::new(useradd)
                .args(["--system", "--user-group", "--no-create-home", "--shell"])
                .arg(nologin)
                .arg(DEMO_USER),
        )?;
    }
    let uid = id_of(DEMO_USER, "-u").ok_or_else(|| anyhow!("user {DEMO_USER} has no uid"))?;
    let gid = id_of(DEMO_USER, "-g").ok_or_else(|| anyhow!("user {DEMO_USER} has no gid"))?;
    Ok((uid, gid))
}

/// True when every folder above `dir` lets other users through, as the service user needs.
fn reachable_by_others(dir: &Path) -> bool {
    let Ok(abs) = std::path::absolute(dir) else {
        return false;
    };
    abs.ancestors().skip(1).all(|a| {
        std::fs::metadata(a)
            .map(|m| m.mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// Removes an earlier demo folder, clearing the immutable and append-only attributes first
/// (as root may, at the console).
fn remove_demo(dir: &Path) -> anyhow::Result<()> {
    if bulwark_sys::effective_uid() == 0 {
        unlock_tree(dir);
    }
    std::fs::remove_dir_all(dir)
        .with_context(|| format!("removing the previous demo in {}", dir.display()))
}

fn unlock_tree(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = bulwark_sys::set_flag(
            &f,
            bulwark_sys::FS_IMMUTABLE_FL | bulwark_sys::FS_APPEND_FL,
            false,
        );
    }
    if path.is_dir() && !path.is_symlink() {
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                unlock_tree(&e.path());
            }
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Runs the demo.
/// The encryption step (docs/encryption.md): a key file, an encrypted backup of the same
/// image as another job, a search of its stored file for a run of the image's plaintext, a
/// restore without the key (refused) and with it.
fn encrypted_step(
    side: &Side,
    dir: &Path,
    repo_dir: &Path,
    image: &Path,
) -> anyhow::Result<Vec<String>> {
    // The demo's own key and passphrase; a real key's passphrase comes from the terminal.
    std::env::set_var("BULWARK_PASSPHRASE", "bulwark demo passphrase");
    let key = std::path::absolute(dir.join("demo.key"))?;
    let k = side.bulwark(&["key", "create", "--out", s(&key)])?;
    let job = ["--repo", s(repo_dir), "--job", "demo-encrypted"];
    let b =
        side.bulwark(&[&["backup"][..], &job[..], &["--key", s(&key), s(image)][..]].concat())?;
    // Stored blocks that open as zstd frames (what a plain job stores): the encrypted job's
    // stored bytes start with a random salt instead, and hold no frame to decompress.
    let repo = Repository::open(repo_dir)?;
    let frames = |job: &str| -> anyhow::Result<(usize, usize)> {
        use std::os::unix::fs::FileExt;
        let chain = repo.open_point(job, None)?;
        let (mut zstd, mut total) = (0, 0);
        for e in chain.entries().iter().filter(|e| e.file_ref == 0) {
            let mut magic = [0u8; 4];
            chain.point().file().read_exact_at(&mut magic, e.offset)?;
            zstd += usize::from(magic == [0x28, 0xb5, 0x2f, 0xfd]);
            total += 1;
        }
        Ok((zstd, total))
    };
    let (plain_z, plain_n) = frames(JOB)?;
    let (enc_z, enc_n) = frames("demo-encrypted")?;
    let restored = std::path::absolute(dir.join("restored-encrypted.img"))?;
    let refused = side
        .bulwark(&[&["restore"][..], &job[..], &[s(&restored)][..]].concat())
        .is_err();
    side.bulwark(
        &[
            &["restore"][..],
            &job[..],
            &["--key", s(&key), s(&restored)][..],
        ]
        .concat(),
    )?;
    let same = file_hash(&restored)? == file_hash(image)?;
    Ok(vec![format!(
        "   encrypted: key {} (fingerprint {}), job demo-encrypted backed up with --key ({} stored): stored blocks that are readable zstd frames: {plain_z} of {plain_n} in the plain job's newest point, {enc_z} of {enc_n} in the encrypted one (AES-256-GCM, verified without a key); restore without the key {}, with it {}",
        key.display(),
        k["fingerprint"].as_str().unwrap_or("?"),
        human(b["bytes_stored"].as_u64().unwrap_or(0)),
        if refused { "is refused" } else { "WAS NOT REFUSED" },
        if same { "byte-identical" } else { "DIFFERENT" }
    ),
    "   (losing every copy of a key loses its backups: keep `bulwark key paper` of it offline)".into()])
}

pub fn run(a: Args, out: &Output) -> anyhow::Result<i32> {
    let root = bulwark_sys::effective_uid() == 0;
    let mut dir = a.dir.clone();
    if root && !reachable_by_others(&dir) {
        let alt = PathBuf::from("/var/tmp/bulwark-demo");
        outln!(
            "note: {} is not reachable by an unprivileged user, so the demo runs in {}",
            dir.display(),
            alt.display()
        );
        dir = alt;
    }
    let dir = &dir;
    for d in [dir.as_path(), a.dir.as_path()] {
        if d.exists() {
            if !d.join(MARKER).exists() {
                bail!(
                    "{} exists and is not a Bulwark demo folder; remove it or pass --dir",
                    d.display()
                );
            }
            remove_demo(d)?;
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        b"created by `bulwark demo`; safe to delete\n",
    )?;
    let say = |s: String| {
        if !out.json {
            outln!("{s}");
        }
    };
    let repo_dir = std::path::absolute(dir.join("repo"))?;
    let image = std::path::absolute(dir.join("disk.img"))?;
    let what = make_image(dir, &image, a.size_mib)?;

    // The repository side: as root, an unprivileged service user and a real immutability service.
    let mut side = Side {
        user: None,
        immutd: None,
    };
    let fingerprint: String;
    if root {
        let (uid, gid) = demo_user()?;
        let immutd_dir = dir.join("immutd");
        std::fs::create_dir(&immutd_dir)?;
        std::fs::set_permissions(
            &immutd_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let setup = ImmutdSetup::new(
            DEMO_USER,
            repo_dir.clone(),
            std::path::absolute(&immutd_dir)?,
        );
        std::fs::create_dir(&repo_dir)?;
        std::os::unix::fs::chown(&repo_dir, Some(uid), Some(gid))?;
        std::os::unix::fs::chown(&image, Some(uid), Some(gid))?;
        side.user = Some((uid, gid));
        let init = side.repo(&["init", s(&repo_dir), "--immutd-socket", s(&setup.socket())])?;
        fingerprint = init["fingerprint"].as_str().unwrap_or_default().to_string();
        say(format!(
            "1. created repository {} owned by the unprivileged user {DEMO_USER}",
            repo_dir.display()
        ));
        let d = setup
            .spawn(&sibling_binary("bulwark-immutd")?)
            .context("starting bulwark-immutd")?;
        say(format!(
            "   started bulwark-immutd (root, no network) guarding it: socket {}",
            d.socket().display()
        ));
        side.immutd = Some(d);
    } else {
        let init = side.repo(&["init", s(&repo_dir)])?;
        fingerprint = init["fingerprint"].as_str().unwrap_or_default().to_string();
        say(format!(
            "1. created repository {} ({}-day immutability period)",
            repo_dir.display(),
            DEFAULT_IMMUTABLE_DAYS
        ));
    }
    say(format!(
        "2. made sample disk {} ({} MiB, {what})",
        image.display(),
        a.size_mib
    ));
    let mb_s = |bytes: f64, secs: f64| bytes / secs.max(1e-9) / 1e6;
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let backup = |extra: &[&str]| {
        let mut args = vec!["backup", "--repo", s(&repo_dir), "--job", JOB];
        args.extend_from_slice(extra);
        args.push(s(&image));
        side.bulwark(&args)
    };
    let full = backup(&[])?;
    say(format!(
        "3. full backup {}: {} blocks stored as {} in {:.2}s ({:.0} MB/s of disk)",
        full["point"].as_str().unwrap_or("?"),
        full["blocks_new"],
        human(num(&full, "bytes_stored") as u64),
        num(&full, "seconds"),
        mb_s(num(&full, "disk_size"), num(&full, "seconds"))
    ));
    change_image(dir, &image)?;
    let inc = backup(&["--synthetic-full"])?;
    say(format!(
        "4. changed files inside the image, then incremental {}: {} changed blocks ({} stored), {} unchanged referenced",
        inc["point"].as_str().unwrap_or("?"),
        inc["blocks_new"],
        human(num(&inc, "bytes_stored") as u64),
        inc["blocks_unchanged"]
    ));
    let sy = &inc["synthetic_full"];
    say(format!(
        "5. synthetic full {} built on the repository by {} in {:.3}s: {} cloned, {} copied, nothing sent{}",
        sy["point"].as_str().unwrap_or("?"),
        sy["method"].as_str().unwrap_or("?"),
        num(sy, "seconds"),
        human(num(sy, "bytes_cloned") as u64),
        human(num(sy, "bytes_copied") as u64),
        sy["fallback_reason"].as_str().map(|w| format!(" ({w})")).unwrap_or_default()
    ));
    let restored = std::path::absolute(dir.join("restored.img"))?;
    if let Some((uid, gid)) = side.user {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    let r = side.bulwark(&[
        "restore",
        "--repo",
        s(&repo_dir),
        "--job",
        JOB,
        s(&restored),
    ])?;
    let same = file_hash(&restored)? == file_hash(&image)?;
    say(format!(
        "6. restored the newest point (the synthetic full) to {} in {:.2}s: {}",
        restored.display(),
        num(&r, "seconds"),
        if same {
            "byte-identical to the source"
        } else {
            "DIFFERENT from the source"
        }
    ));
    let v = side.bulwark(&["verify", "--repo", s(&repo_dir)])?;
    let clean = v["clean"].as_bool() == Some(true);
    say(format!(
        "7. verify re-read {} blocks of {} restore points{}: {}",
        v["blocks_checked"],
        v["points_checked"],
        if side.immutd.is_some() {
            " and checked each against the immutability ledger"
        } else {
            ""
        },
        if clean { "all good" } else { "DAMAGE FOUND" }
    ));
    for line in encrypted_step(&side, dir, &repo_dir, &image)? {
        say(line);
    }
    match cbt_step::cbt_step(&side, dir, &repo_dir) {
        Ok(lines) => lines.into_iter().for_each(&say),
        Err(e) => say(format!("   live VM disk: FAILED: {e:#}")),
    }
    // The network path: the transport service runs as the service user on loopback, and a
    // client enrolls with a single-use token, pinning the repository's CA fingerprint.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut serve = side.command(&sibling_binary("bulwark-repo")?);
    serve
        .args(["serve", s(&repo_dir), "--listen", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _serve = Serve(serve.spawn().context("starting bulwark-repo serve")?);
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            bail!("bulwark-repo serve did not start listening on {addr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let enroll = side.repo(&[
        "enroll",
        s(&repo_dir),
        "--client",
        "demo-client",
        "--expires",
        "10m",
    ])?;
    let token = enroll["token"].as_str().unwrap_or_default().to_string();
    let client_dir = std::path::absolute(dir.join("client"))?;
    let client = |args: &[&str]| {
        let mut all = vec!["--config-dir", s(&client_dir)];
        all.extend_from_slice(args);
        json_of(Command::new(std::env::current_exe()?), &all)
    };
    client(&["enroll", &addr, &token, "--fingerprint", &fingerprint])?;
    let nb = client(&["backup", "--repo", &addr, "--job", "demo-net", s(&image)])?;
    let net_restored = std::path::absolute(dir.join("restored-net.img"))?;
    let nr = client(&[
        "restore",
        "--repo",
        &addr,
        "--job",
        "demo-net",
        s(&net_restored),
    ])?;
    let net_same = file_hash(&net_restored)? == file_hash(&image)?;
    say(format!(
        "8. over the network ({addr}, TLS 1.3, mutual certificates): client demo-client enrolled with a single-use token,"
    ));
    say(format!(
        "   pinned CA {fingerprint}; backup at {:.0} MB/s, restore at {:.0} MB/s: {}",
        mb_s(
            num(&nb, "disk_size").max(num(&full, "disk_size")),
            num(&nb, "seconds")
        ),
        mb_s(num(&full, "disk_size"), num(&nr, "seconds")),
        if net_same {
            "byte-identical"
        } else {
            "DIFFERENT from the source"
        }
    ));
    // A backup copy job (docs/copy-jobs.md): every restore point of the job copied to a second
    // repository; in production that one lives on another host with its own services.
    let second = std::path::absolute(dir.join("repo2"))?;
    side.repo(&["init", s(&second)])?;
    let copy = ["--from", s(&repo_dir), "--to", s(&second), "--job", JOB];
    let cp = side.bulwark(&[&["copy"][..], &copy[..]].concat())?;
    let cv = side.bulwark(&[&["copy", "--verify"][..], &copy[..]].concat())?;
    say(format!(
        "   copied job {JOB} to a second repository {} (`bulwark copy`): {} points, {} sent, {} of {} points with the same root digest",
        second.display(),
        cp["jobs"][0]["points_copied"],
        human(num(&cp, "bytes_sent") as u64),
        cv["jobs"][0]["same"],
        cv["jobs"][0]["points"].as_array().map_or(0, |p| p.len()),
    ));
    // The S3 Object Lock tier, when a store is configured in the environment.
    match (std::env::var("S3_ENDPOINT"), std::env::var("S3_ACCESS_KEY"), std::env::var("S3_SECRET_KEY")) {
        (Ok(endpoint), Ok(ak), Ok(sk)) => {
            let cred = std::path::absolute(dir.join("s3.credentials"))?;
            std::fs::write(&cred, format!("access_key_id = \"{ak}\"\nsecret_access_key = \"{sk}\"\n"))?;
            std::fs::set_permissions(&cred, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            if let Some((uid, gid)) = side.user {
                std::os::unix::fs::chown(&cred, Some(uid), Some(gid))?;
            }
            let id: String = Repository::open(&repo_dir)?.config().id.chars().take(12).collect();
            let bucket = format!("bulwark-demo-{id}");
            let add = side.tier(&[
                "add", s(&repo_dir), "--endpoint", &endpoint, "--bucket", &bucket,
                "--credentials", s(&cred), "--create-bucket",
            ])?;
            let sync = side.tier(&["sync", s(&repo_dir)])?;
            let check = side.tier(&["verify", s(&repo_dir)])?;
            let refused = add["lock_probe"]["delete_refused"].is_string() && add["lock_probe"]["shorten_refused"].is_string();
            say(format!(
                "   S3 tier {endpoint} bucket {bucket}: the store {} deleting and shortening a COMPLIANCE-locked probe;",
                if refused { "refused" } else { "did NOT refuse" }
            ));
            say(format!(
                "   {} restore points copied with the same retain-until dates, tier verify: {}",
                [&sync["uploaded"], &sync["adopted"]].iter().map(|v| v.as_array().map_or(0, |a| a.len())).sum::<usize>()
                    + sync["already"].as_u64().unwrap_or(0) as usize,
                if check["problems"].as_array().is_some_and(|p| p.is_empty()) { "all good" } else { "PROBLEMS" }
            ));
        }
        _ => say("   (with S3_ENDPOINT, S3_ACCESS_KEY and S3_SECRET_KEY set, the demo also copies every restore point to an S3 Object Lock bucket)".into()),
    }
    let repo = Repository::open(&repo_dir)?;
    let space = repo.space()?;
    say(format!(
        "9. space: {} logical (what du counts), {} physical, {} shared between files by cloning",
        human(space.logical_bytes),
        human(space.physical_bytes),
        human(space.shared_bytes)
    ));
    let mut immutable_all = true;
    let mut files = Vec::new();
    for p in repo.scan_job(JOB)?.points {
        let f = std::fs::File::open(&p.path)?;
        let immutable = bulwark_sys::has_flag(&f, bulwark_sys::FS_IMMUTABLE_FL).unwrap_or(false);
        immutable_all &= immutable;
        let expiry = match &side.immutd {
            Some(d) => d
                .client()
                .ok()
                .and_then(|mut c| c.query(bulwark_immut_msg::Target::Point(p.meta.point)).ok())
                .map(|i| i.expiry_unix),
            None => None,
        };
        files.push((p.meta.point, p.meta.kind.as_str(), immutable, expiry));
    }
    say("10. sealed restore points:".to_string());
    for (point, kind, immutable, expiry) in &files {
        say(format!(
            "   {point} {kind:14} {} {}",
            if *immutable {
                "immutable (chattr +i)"
            } else {
                "NOT immutable"
            },
            expiry
                .map(|e| format!("until {}", utc(e)))
                .unwrap_or_default()
        ));
    }
    if side.immutd.is_none() {
        say("   No immutability service guards this demo repository. Run the demo as root (sudo) to see the real".into());
        say("   thing: it creates the unprivileged service user bulwark-demo, starts bulwark-immutd (root, no network)".into());
        say("   for the repository, and every restore point is sealed with the immutable attribute.".into());
    } else {
        say(format!("   As {DEMO_USER}, try: rm, mv, chattr -i on any of them: all fail. Root removes the demo with `bulwark demo` again."));
    }
    // The report page (docs/report.md), written by the repository side while the
    // immutability service still answers, so the lock timeline has the ledger's dates.
    let page = std::path::absolute(dir.join("report.html"))?;
    let rep = side.repo(&["report", s(&repo_dir), "--html", s(&page)])?;
    say(format!(
        "11. wrote the report page {} ({} sealed files on the lock timeline, {} alerts): open it in a browser",
        page.display(),
        rep["sealed_files"],
        rep["alerts"]
    ));
    let new_file = dir.join("new-report.txt");
    let inside = (what.contains("ext4") && new_file.is_file())
        .then_some(("home/user/new-report.txt", new_file.as_path()));
    match instant_step::instant_step(&side, dir, &repo_dir, JOB, &image, inside) {
        Ok(lines) => lines.into_iter().for_each(&say),
        Err(e) => say(format!("12. instant access: FAILED: {e:#}")),
    }
    if let Some(d) = side.immutd.take() {
        d.stop();
    }
    say(format!("Try: bulwark list --repo {}", repo_dir.display()));
    if out.json {
        out.json(&serde_json::json!({
            "repository": repo_dir, "image": image, "full": full["point"], "incremental": inc["point"],
            "synthetic_full": sy["point"], "restore_identical": same, "network_restore_identical": net_same, "verify_clean": clean,
            "immutable": immutable_all && !files.is_empty(), "guarded": root, "report": page,
        }));
    }
    Ok(if same && clean && net_same {
        EXIT_OK
    } else {
        EXIT_DAMAGE
    })
}
