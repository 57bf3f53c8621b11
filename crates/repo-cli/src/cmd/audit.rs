//! `bulwark-repo audit`: checks the hardening of the repository host, on the host.
//!
//! Each check says PASS, WARN or FAIL with what to do. Exit 0 when nothing fails, 1 otherwise.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use bulwark_immut_msg::layout;
use bulwark_repository::{ReflinkSupport, Repository};

/// Arguments of `bulwark-repo audit`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
    /// The transport service's port, the one listener expected on the host.
    #[arg(long, default_value_t = 6162)]
    port: u16,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Pass,
    Warn,
    Fail,
}

struct Finding {
    level: Level,
    check: &'static str,
    detail: String,
}

fn finding(level: Level, check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        level,
        check,
        detail: detail.into(),
    }
}

/// TCP ports in LISTEN state, from /proc/net/tcp and tcp6, with whether they are bound to
/// loopback only.
fn listening_ports() -> Vec<(u16, bool)> {
    let mut out = Vec::new();
    for (file, loopbacks) in [
        ("/proc/net/tcp", &["0100007F"][..]),
        ("/proc/net/tcp6", &["00000000000000000000000001000000"][..]),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "0A" {
                continue;
            }
            let Some((addr, port)) = cols[1].split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port, 16) else {
                continue;
            };
            out.push((port, loopbacks.contains(&addr)));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn clock_synchronized() -> Option<bool> {
    if Path::new("/run/systemd/timesync/synchronized").exists() {
        return Some(true);
    }
    let o = Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&o.stdout).trim() == "yes")
}

fn unit_setting(unit: &str, prop: &str) -> Option<String> {
    let o = Command::new("systemctl")
        .args(["show", unit, "-p", prop, "--value"])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Runs the checks.
fn checks(a: &Args) -> anyhow::Result<Vec<Finding>> {
    use Level::*;
    let mut f = Vec::new();
    let repo = Repository::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let root = repo.root();
    let euid = bulwark_sys::effective_uid();
    let meta = std::fs::metadata(root)?;
    f.push(if meta.uid() == 0 {
        finding(Fail, "service user", "the repository is owned by root: create an unprivileged user (e.g. `bulwark`) and give it the folder")
    } else {
        finding(Pass, "service user", format!("repository owned by uid {}, not root", meta.uid()))
    });
    if euid == 0 {
        f.push(finding(Warn, "run as", "audit runs as root here; the service itself must run as the service user (it refuses root)"));
    }
    let mode = meta.permissions().mode() & 0o777;
    f.push(if mode & 0o077 == 0 {
        finding(
            Pass,
            "folder mode",
            format!("{} is {mode:o}", root.display()),
        )
    } else {
        finding(
            Fail,
            "folder mode",
            format!("{} is {mode:o}: run chmod 700 on it", root.display()),
        )
    });
    match &repo.config().immutd_socket {
        None => f.push(finding(Fail, "immutability", "no immutability service configured: restore points are NOT immutable (see README, 'Setting up a hardened repository host')")),
        Some(sock) => match bulwark_immut_msg::ImmutClient::connect(sock).and_then(|mut c| c.status()) {
            Ok(st) => {
                f.push(finding(Pass, "immutability", format!("bulwark-immutd answers on {}: {} files locked, {} bytes", sock.display(), st.files_locked, st.bytes_locked)));
                if st.unlocks_frozen {
                    f.push(finding(Fail, "trusted clock", format!("unlocks are FROZEN: {}", st.alert)));
                } else if !st.alert.is_empty() {
                    f.push(finding(Fail, "trusted clock", st.alert.clone()));
                } else {
                    f.push(finding(Pass, "trusted clock", "no clock alert: the wall clock agrees with the boot-time clock"));
                }
                if !st.audit_problem.is_empty() {
                    f.push(finding(Fail, "audit log", st.audit_problem));
                }
                let settings = root.join("repository.toml");
                let locked = std::fs::File::open(&settings)
                    .and_then(|f| bulwark_sys::get_flags(&f))
                    .map(|fl| fl & bulwark_sys::FS_IMMUTABLE_FL != 0);
                f.push(match locked {
                    Ok(true) => finding(Pass, "settings", "repository.toml is immutable: its settings cannot change behind the immutability service's back"),
                    Ok(false) => finding(Fail, "settings", "repository.toml is not immutable, so the service user can change the settings (drop the immutability service, raise limits); the immutability service locks it at its start and at every seal: restart it, and check lock_repository_root = true in its configuration"),
                    Err(e) => finding(Fail, "settings", format!("cannot check {}: {e}", settings.display())),
                });
            }
            Err(e) => f.push(finding(Fail, "immutability", format!("the immutability service does not answer: {}", bulwark_repository::error_chain(&e)))),
        },
    }
    let store = layout::store_dir(root);
    if let Ok(m) = std::fs::metadata(&store) {
        f.push(if m.uid() == 0 && m.permissions().mode() & 0o022 == 0 {
            finding(
                Pass,
                "sealed store",
                "store/ is root-owned and not writable by others",
            )
        } else {
            finding(
                Fail,
                "sealed store",
                "store/ is writable by the service user: the repository is not guarded yet",
            )
        });
    }
    if let Ok(dirf) = std::fs::File::open(root) {
        if bulwark_sys::has_flag(&dirf, bulwark_sys::FS_APPEND_FL).unwrap_or(false) {
            f.push(finding(
                Pass,
                "store cannot be renamed",
                "the repository folder is append-only",
            ));
        } else if repo.config().immutd_socket.is_some() {
            f.push(finding(Warn, "store cannot be renamed", "the repository folder is not append-only, so the service user could rename store/; let bulwark-immutd guard it (lock_repository_root)"));
        }
    }
    f.push(match repo.reflink_support()? {
        ReflinkSupport::Supported => finding(
            Pass,
            "block cloning",
            "the filesystem clones blocks: synthetic fulls cost metadata only",
        ),
        ReflinkSupport::Unsupported(why) => finding(
            Warn,
            "block cloning",
            format!("{why}: {}", bulwark_repository::REFLINK_ADVICE),
        ),
    });
    f.push(match clock_synchronized() {
        Some(true) => finding(Pass, "clock", "the system clock is synchronized (NTP)"),
        Some(false) => finding(Warn, "clock", "the system clock is not synchronized: enable NTP (systemd-timesyncd or chrony) before the immutability service first starts"),
        None => finding(Warn, "clock", "cannot tell whether the clock is synchronized (no timedatectl)"),
    });
    let ports = listening_ports();
    let exposed: Vec<u16> = ports
        .iter()
        .filter(|(p, lo)| !lo && *p != a.port)
        .map(|(p, _)| *p)
        .collect();
    f.push(if exposed.is_empty() {
        finding(Pass, "open ports", format!("no listener but the transport service's port {}", a.port))
    } else {
        finding(Warn, "open ports", format!("other TCP listeners on public addresses: {exposed:?}; close them or firewall them, keep only {}", a.port))
    });
    f.push(if ports.iter().any(|(p, lo)| *p == 22 && !lo) {
        finding(Warn, "ssh", "sshd listens on port 22: after deployment, stop it (or allow keys only and restrict it to a management network)")
    } else {
        finding(Pass, "ssh", "no ssh listener on a public address")
    });
    if Path::new("/run/systemd/system").exists() {
        match unit_setting("bulwark-immutd.service", "PrivateNetwork") {
            Some(v) if v == "yes" => f.push(finding(Pass, "service sandboxing", "bulwark-immutd.service has no network (PrivateNetwork=yes)")),
            Some(_) => f.push(finding(Warn, "service sandboxing", "bulwark-immutd.service is not sandboxed: install dist/systemd/bulwark-immutd.service")),
            None => {}
        }
    }
    Ok(f)
}

/// Runs `bulwark-repo audit`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let findings = checks(&a)?;
    let worst = findings
        .iter()
        .map(|f| f.level)
        .max()
        .unwrap_or(Level::Pass);
    let name = |l: Level| match l {
        Level::Pass => "PASS",
        Level::Warn => "WARN",
        Level::Fail => "FAIL",
    };
    if json {
        let v: Vec<_> = findings
            .iter()
            .map(|f| serde_json::json!({"level": name(f.level), "check": f.check, "detail": f.detail}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"findings": v, "ok": worst != Level::Fail})
        );
    } else {
        for f in &findings {
            outln!("{:4}  {:24} {}", name(f.level), f.check, f.detail);
        }
    }
    Ok(if worst == Level::Fail { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_loopback_listener_is_found_and_known_as_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(
            super::listening_ports().contains(&(port, true)),
            "port {port} not found"
        );
    }

    #[test]
    fn error_chains_say_each_cause_once() {
        let inner = std::io::Error::other("disk on fire");
        let e = bulwark_immut_msg::ClientError::Connect {
            path: "/x".into(),
            source: inner,
        };
        let s = bulwark_repository::error_chain(&e);
        assert_eq!(s.matches("disk on fire").count(), 1, "{s}");
    }
}
