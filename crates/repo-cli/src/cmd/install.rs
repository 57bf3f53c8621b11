//! `bulwark-repo install`: takes a fresh host (the `bulwark-repository` package installed, a
//! data volume mounted, ideally XFS with reflink) to a hardened repository: the service user,
//! the repository folder owned by it (mode 0700), the repository guarded by the immutability
//! service, the service's configuration (`/etc/bulwark/immutd.toml`, root's), an nftables
//! snippet that opens only the transport's port, and the units enabled and started where
//! systemd runs. Existing configuration is never overwritten. Run as root; docs/install.md.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The firewall snippet (`dist/nftables-bulwark.nft`); its port is replaced by `--port`.
const NFTABLES: &str = include_str!("../../../../dist/nftables-bulwark.nft");

/// Units enabled and started, in this order (the immutability service first).
const UNITS: &[&str] = &[
    "bulwark-immutd.service",
    "bulwark-repo.service",
    "bulwark-retention.timer",
    "bulwark-verify.timer",
    "bulwark-monitor.timer",
];

/// XFS's magic number (statfs f_type).
const XFS_MAGIC: u64 = 0x5846_5342;

/// Arguments of `bulwark-repo install`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder to create (the units name /srv/bulwark/repo).
    #[arg(long, default_value = "/srv/bulwark/repo")]
    repo: PathBuf,
    /// The unprivileged service user (the package creates `bulwark`; created here if missing).
    #[arg(long, default_value = "bulwark")]
    user: String,
    /// Immutability period of the repository, in days (7 to 9999).
    #[arg(long, default_value_t = 30)]
    immutable_days: u32,
    /// The longest protection any request may ask for (root's policy).
    #[arg(long, default_value_t = 400)]
    max_period_days: u32,
    /// Most bytes locked at once (root's cap; default 90 % of the volume).
    #[arg(long)]
    max_locked_bytes: Option<u64>,
    /// Folder of the configuration written (immutd.toml, nftables-bulwark.nft).
    #[arg(long, default_value = "/etc/bulwark")]
    etc: PathBuf,
    /// The immutability service's socket.
    #[arg(long, default_value = "/run/bulwark/immutd.sock")]
    socket: PathBuf,
    /// The immutability service's state folder (ledger, audit log, trusted clock).
    #[arg(long, default_value = "/var/lib/bulwark-immutd")]
    state_dir: PathBuf,
    /// The transport service's port, the only one the firewall snippet opens.
    #[arg(long, default_value_t = 6162)]
    port: u16,
    /// Write everything but do not enable or start the units (implied without systemd).
    #[arg(long)]
    no_start: bool,
}

/// uid and gid of `name`, from the passwd database.
fn lookup(name: &str) -> anyhow::Result<Option<(u32, u32)>> {
    let o = Command::new("getent")
        .args(["passwd", name])
        .output()
        .context("running getent passwd")?;
    if !o.status.success() {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&o.stdout);
    let f: Vec<&str> = line.trim().split(':').collect();
    anyhow::ensure!(
        f.len() >= 4,
        "getent passwd {name}: unexpected answer {line:?}"
    );
    Ok(Some((f[2].parse()?, f[3].parse()?)))
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let o = cmd.output().with_context(|| format!("running {what}"))?;
    if !o.status.success() {
        anyhow::bail!(
            "{what} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Writes `text` to a new root-owned file `path` (mode `mode`): temporary file, fsync,
/// rename, fsync of the folder. An existing file is kept: returns false.
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let dir = path.parent().context("a file path has a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().context("a file name")?.to_string_lossy()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(true)
}

/// The immutability service's configuration for one repository.
fn immutd_config(a: &Args, cap: u64) -> String {
    format!(
        "# Written by `bulwark-repo install`. Root's policy for bulwark-immutd: who may ask\n\
         # (service_user), how long and how much may be locked. Raising a limit later is an\n\
         # approved change (docs/immutd-protocol.md).\n\
         service_user = \"{}\"\nsocket = \"{}\"\nstate_dir = \"{}\"\n\
         max_period_days = {}\nmax_locked_bytes = {cap}\nlock_repository_root = true\n\n\
         [[repository]]\npath = \"{}\"\nmin_period_days = {}\n",
        a.user,
        a.socket.display(),
        a.state_dir.display(),
        a.max_period_days,
        a.repo.display(),
        a.immutable_days,
    )
}

/// Runs `bulwark-repo install`.
pub fn run_install(a: Args, json: bool) -> anyhow::Result<i32> {
    anyhow::ensure!(
        bulwark_sys::effective_uid() == 0,
        "bulwark-repo install sets up the host: run it as root (sudo bulwark-repo install)"
    );
    bulwark_format::validate_name("user", &a.user).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        a.repo.is_absolute()
            && a.etc.is_absolute()
            && a.socket.is_absolute()
            && a.state_dir.is_absolute(),
        "give absolute paths for --repo, --etc, --socket and --state-dir"
    );
    let mut notes: Vec<String> = Vec::new();
    // 1. The service user.
    let (uid, gid) = match lookup(&a.user)? {
        Some(ids) => ids,
        None => {
            run(
                Command::new("adduser").args([
                    "--system",
                    "--group",
                    "--quiet",
                    "--home",
                    "/nonexistent",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    &a.user,
                ]),
                "adduser --system",
            )?;
            notes.push(format!("created the system user {}", a.user));
            lookup(&a.user)?.context("the new user is not in the passwd database")?
        }
    };
    anyhow::ensure!(
        uid != 0,
        "the service user {} is root: pick an unprivileged user",
        a.user
    );
    // 2. The repository folder on the data volume.
    let base = a.repo.parent().context("--repo has a parent folder")?;
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    match bulwark_sys::filesystem_type(base) {
        Ok(XFS_MAGIC) => {}
        Ok(_) => notes.push(format!(
            "{} is not on XFS: synthetic fulls will copy instead of cloning ({})",
            base.display(),
            bulwark_repository::REFLINK_ADVICE
        )),
        Err(e) => notes.push(format!(
            "cannot tell the filesystem of {}: {e}",
            base.display()
        )),
    }
    let fresh = !a.repo.join("repository.toml").exists();
    let mut fingerprint = None;
    if fresh {
        if !a.repo.exists() {
            std::fs::create_dir(&a.repo)
                .with_context(|| format!("creating {}", a.repo.display()))?;
        }
        let m = std::fs::metadata(&a.repo)?;
        anyhow::ensure!(
            std::fs::read_dir(&a.repo)?.next().is_none(),
            "{} exists and is not empty, and holds no repository: give an empty or new folder",
            a.repo.display()
        );
        if m.uid() != uid {
            std::os::unix::fs::chown(&a.repo, Some(uid), Some(gid))?;
        }
        std::fs::set_permissions(&a.repo, std::fs::Permissions::from_mode(0o700))?;
        // 3. The repository, created by its user, guarded by the service.
        let exe = std::env::current_exe().context("finding bulwark-repo")?;
        let out = run(
            Command::new(exe)
                .uid(uid)
                .gid(gid)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .current_dir("/")
                .arg("--json")
                .arg("init")
                .arg(&a.repo)
                .arg("--immutable-days")
                .arg(a.immutable_days.to_string())
                .arg("--immutd-socket")
                .arg(&a.socket),
            "bulwark-repo init as the service user",
        )?;
        let v: serde_json::Value = serde_json::from_str(&out).context("reading init's answer")?;
        fingerprint = v["fingerprint"].as_str().map(str::to_string);
    } else {
        notes.push(format!(
            "{} already holds a repository: kept",
            a.repo.display()
        ));
    }
    // 4. The immutability service's configuration (root's; never overwritten).
    let cap = match a.max_locked_bytes {
        Some(c) => c,
        None => {
            let st = bulwark_sys::statvfs(base)
                .with_context(|| format!("measuring {}", base.display()))?;
            st.blocks.saturating_mul(st.frsize) / 10 * 9
        }
    };
    let cfg_path = a.etc.join("immutd.toml");
    if !write_new(&cfg_path, &immutd_config(&a, cap), 0o644)? {
        notes.push(format!(
            "{} exists: kept as it is (check that it lists {})",
            cfg_path.display(),
            a.repo.display()
        ));
    }
    // 5. The firewall snippet.
    let nft_path = a.etc.join("nftables-bulwark.nft");
    let nft = NFTABLES.replace("tcp dport 6162", &format!("tcp dport {}", a.port));
    write_new(&nft_path, &nft, 0o644)?;
    // 6. The units.
    let systemd = Path::new("/run/systemd/system").is_dir();
    let mut started = Vec::new();
    if systemd && !a.no_start {
        run(
            Command::new("systemctl").arg("daemon-reload"),
            "systemctl daemon-reload",
        )?;
        for u in UNITS {
            run(
                Command::new("systemctl").args(["enable", "--now", u]),
                &format!("systemctl enable --now {u}"),
            )?;
            started.push(u.to_string());
        }
    } else {
        notes.push(format!(
            "units not started ({}): run `systemctl enable --now {}`",
            if systemd {
                "--no-start"
            } else {
                "systemd is not running"
            },
            UNITS.join(" ")
        ));
    }
    let next = vec![
        format!(
            "nft -f {}   # and include it from /etc/nftables.conf",
            nft_path.display()
        ),
        format!("sudo -u {} bulwark-repo audit {}", a.user, a.repo.display()),
        format!(
            "sudo -u {} bulwark-repo enroll {} --client NAME   # one token per client",
            a.user,
            a.repo.display()
        ),
    ];
    if json {
        outln!(
            "{}",
            serde_json::json!({"repository": a.repo, "user": a.user, "uid": uid,
                "immutd_config": cfg_path, "nftables": nft_path, "max_locked_bytes": cap,
                "fingerprint": fingerprint, "units_started": started, "notes": notes, "next": next})
        );
    } else {
        outln!(
            "repository {} for user {} (uid {uid})",
            a.repo.display(),
            a.user
        );
        if let Some(fp) = &fingerprint {
            outln!("fingerprint for clients' `bulwark enroll --fingerprint`: {fp}");
        }
        outln!("immutability service configuration: {}", cfg_path.display());
        outln!(
            "firewall snippet (TCP {} only): {}",
            a.port,
            nft_path.display()
        );
        for u in &started {
            outln!("started {u}");
        }
        for n in &notes {
            outln!("note: {n}");
        }
        outln!("next:");
        for n in &next {
            outln!("  {n}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_firewall_snippet_opens_the_transport_port_only() {
        let inbound: Vec<&str> = super::NFTABLES
            .lines()
            .map(str::trim)
            .filter(|l| l.contains("dport") && !l.starts_with('#'))
            .collect();
        assert_eq!(inbound, ["tcp dport 6162 ct state new accept"]);
        assert!(super::NFTABLES.contains("policy drop;"));
    }
}
