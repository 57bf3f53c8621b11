//! What the monitor looks at on the repository host, as the service user: the immutability
//! service's status (through its socket: the service itself stays network-free), files
//! waiting in `incoming/`, verify's health records, and the space report. [`Facts`] holds
//! what was read; [`conditions`] turns it into the notifications due (a pure function of the
//! facts, the thresholds and `now`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulwark_immut_msg::{layout, ImmutClient, StatusInfo};
use bulwark_jobs::verified::Verified;
use bulwark_notify::Event;
use bulwark_repository::{Protection, Repository};

/// Thresholds of the conditions.
#[derive(Clone, Debug)]
pub struct Thresholds {
    /// A finished file in `incoming/` older than this is reported not sealed.
    pub seal_grace_secs: i64,
    /// Locked bytes above this percentage of the cap are reported.
    pub cap_percent: u64,
}

/// One job as the repository holds it.
#[derive(Clone, Debug, Default)]
pub struct JobFacts {
    pub job: String,
    pub points: u64,
    /// Creation time of the newest point (the last backup that succeeded).
    pub last_point_unix: Option<i64>,
    pub logical_bytes: u64,
    pub physical_bytes: u64,
    pub shared_bytes: u64,
    /// Oldest last-verify time over its points (`None`: a point was never verified).
    pub verified_unix: Option<i64>,
    /// What verify found damaged, when it did.
    pub damage: Option<String>,
}

/// Bytes locked until one day.
#[derive(Clone, Debug)]
pub struct LockedDay {
    pub until_unix: i64,
    pub files: u64,
    pub physical_bytes: u64,
}

/// Everything one look found.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub repo: PathBuf,
    pub jobs: Vec<JobFacts>,
    /// The immutability service's answer, or why there is none (`None` when unguarded).
    pub immutd: Option<Result<StatusInfo, String>>,
    /// `max_locked_bytes` of the service's configuration, when readable.
    pub cap_bytes: Option<u64>,
    /// Finished files in `incoming/`, with their age in seconds.
    pub unsealed: Vec<(String, i64)>,
    pub locked: Vec<LockedDay>,
    /// Established TCP connections to the transport service's port (`/proc/net/tcp*`).
    pub transport_connections: Option<u64>,
    pub now: i64,
}

/// Established TCP connections whose local port is `port`, from `/proc/net/tcp` and
/// `/proc/net/tcp6` (state 01); `None` when neither can be read.
pub fn established_connections(port: u16) -> Option<u64> {
    let mut n = 0;
    let mut read_any = false;
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        read_any = true;
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "01" {
                continue;
            }
            let local_port = cols[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                n += 1;
            }
        }
    }
    read_any.then_some(n)
}

/// `max_locked_bytes` from the immutability service's configuration file.
pub fn read_cap(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (for max_locked_bytes)", path.display()))?;
    let v: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    v.get("max_locked_bytes")
        .and_then(|x| x.as_integer())
        .and_then(|x| u64::try_from(x).ok())
        .with_context(|| format!("{} has no max_locked_bytes", path.display()))
}

/// Reads the facts of `repo`.
pub fn gather(
    repo_dir: &Path,
    immutd_config: Option<&Path>,
    transport_port: u16,
    now: i64,
) -> anyhow::Result<Facts> {
    let repo = Repository::open(repo_dir)
        .with_context(|| format!("opening repository {}", repo_dir.display()))?;
    let root = repo.root().to_path_buf();
    let mut f = Facts {
        repo: root.clone(),
        now,
        transport_connections: established_connections(transport_port),
        ..Facts::default()
    };
    if let Some(sock) = &repo.config().immutd_socket {
        f.immutd = Some(
            ImmutClient::connect(sock)
                .and_then(|mut c| c.status())
                .map_err(|e| bulwark_repository::error_chain(&e)),
        );
    }
    if let Some(p) = immutd_config {
        match read_cap(p) {
            Ok(c) => f.cap_bytes = Some(c),
            Err(e) => eprintln!("warning: {e:#}; the locked-bytes check is skipped"),
        }
    }
    let incoming = layout::incoming_dir(&root);
    if let Ok(rd) = std::fs::read_dir(&incoming) {
        for e in rd.flatten().take(100_000) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(layout::TMP_PREFIX) || name.starts_with('.') {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            let mtime = m
                .modified()
                .map(bulwark_time::UnixTime::from_system)
                .map(|t| t.secs())
                .unwrap_or(now);
            f.unsealed.push((name, now - mtime));
        }
        f.unsealed.sort();
    }
    let verified = Verified::load(&root).unwrap_or_else(|e| {
        eprintln!("warning: {e}; verify ages are unknown");
        Verified::default()
    });
    let space = repo
        .space()
        .with_context(|| format!("measuring the space of {}", root.display()))?;
    if let Protection::Locked(days) = &space.protection {
        f.locked = days
            .iter()
            .map(|d| LockedDay {
                until_unix: d.until_unix,
                files: d.files,
                physical_bytes: d.physical_bytes,
            })
            .collect();
    }
    for name in repo.jobs()? {
        let scan = repo.scan_job(&name)?;
        let ids: Vec<String> = scan.points.iter().map(|p| p.meta.point.to_hex()).collect();
        let mut j = JobFacts {
            job: name.clone(),
            points: scan.points.len() as u64,
            last_point_unix: scan.points.last().map(|p| p.meta.created_unix_secs),
            verified_unix: verified.oldest(&name, &ids),
            damage: repo.chain_damage(&name)?,
            ..JobFacts::default()
        };
        if let Some(s) = space.jobs.iter().find(|s| s.job == name) {
            for c in &s.chains {
                j.logical_bytes += c.logical_bytes;
                j.physical_bytes += c.physical_bytes;
                j.shared_bytes += c.shared_bytes;
            }
        }
        // A damaged file that no longer opens still counts as damage.
        if j.damage.is_none() && !scan.unreadable.is_empty() {
            j.damage = Some(format!(
                "{} unreadable restore-point files",
                scan.unreadable.len()
            ));
        }
        f.jobs.push(j);
    }
    Ok(f)
}

/// A condition to notify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub event: Event,
    pub subject: String,
    pub message: String,
}

/// The conditions the facts show.
pub fn conditions(f: &Facts, t: &Thresholds) -> Vec<Condition> {
    let repo = f.repo.display().to_string();
    let c = |event, subject: &str, message: String| Condition {
        event,
        subject: subject.to_string(),
        message,
    };
    let mut out = Vec::new();
    match &f.immutd {
        Some(Ok(st)) => {
            if st.unlocks_frozen {
                out.push(c(
                    Event::ClockFrozen,
                    &repo,
                    format!(
                        "the immutability service froze every unlock: {}; nothing expires until \
                         root checks the time and runs `bulwark-immutctl time accept` with the \
                         officers' approval",
                        st.alert
                    ),
                ));
            } else if !st.alert.is_empty() {
                out.push(c(
                    Event::ClockAlert,
                    &repo,
                    format!("the immutability service's clock alert: {}", st.alert),
                ));
            }
            if let Some(cap) = f.cap_bytes.filter(|&c| c > 0) {
                if u128::from(st.bytes_locked) * 100 > u128::from(cap) * u128::from(t.cap_percent) {
                    out.push(c(
                        Event::LockedBytesHigh,
                        &repo,
                        format!(
                            "{} of the cap of {} bytes are locked ({:.1} %, alert above {} %): \
                             new backups will be refused at the cap; free space by retention, \
                             or raise max_locked_bytes (an approved change)",
                            st.bytes_locked,
                            cap,
                            st.bytes_locked as f64 * 100.0 / cap as f64,
                            t.cap_percent
                        ),
                    ));
                }
            }
        }
        Some(Err(why)) => out.push(c(
            Event::ClockAlert,
            &repo,
            format!(
                "the immutability service does not answer ({why}): nothing new is sealed and \
                 its clock cannot be checked; start bulwark-immutd.service"
            ),
        )),
        None => {}
    }
    for (name, age) in &f.unsealed {
        if *age > t.seal_grace_secs {
            out.push(c(
                Event::NotSealed,
                &format!("{repo}/incoming/{name}"),
                format!(
                    "incoming/{name} has waited {age} s without being sealed (more than {} s): \
                     it is not immutable; check that bulwark-immutd runs and its log",
                    t.seal_grace_secs
                ),
            ));
        }
    }
    for j in &f.jobs {
        if let Some(d) = &j.damage {
            out.push(c(
                Event::VerifyDamage,
                &j.job,
                format!(
                    "job {}: {d}; the next backup starts a new chain; restore from an earlier \
                     point or another copy if needed",
                    j.job
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(alert: &str, frozen: bool, locked: u64) -> StatusInfo {
        StatusInfo {
            unlocks_frozen: frozen,
            alert: alert.into(),
            files_locked: 1,
            bytes_locked: locked,
            ..StatusInfo::default()
        }
    }

    #[test]
    fn each_fact_gives_its_condition_and_only_past_its_threshold() {
        let t = Thresholds {
            seal_grace_secs: 60,
            cap_percent: 80,
        };
        let mut f = Facts {
            repo: "/r".into(),
            immutd: Some(Ok(st("", false, 80))),
            cap_bytes: Some(100),
            unsealed: vec![("a.bwrp".into(), 60)],
            ..Facts::default()
        };
        assert_eq!(conditions(&f, &t), vec![]);
        f.immutd = Some(Ok(st("wall clock jumped", false, 81)));
        f.unsealed.push(("b.bwrp".into(), 61));
        f.jobs.push(JobFacts {
            job: "web01".into(),
            damage: Some("verify found restore point x damaged".into()),
            ..JobFacts::default()
        });
        let got: Vec<Event> = conditions(&f, &t).iter().map(|c| c.event).collect();
        assert_eq!(
            got,
            [
                Event::ClockAlert,
                Event::LockedBytesHigh,
                Event::NotSealed,
                Event::VerifyDamage
            ]
        );
        f.immutd = Some(Ok(st("wall clock jumped", true, 0)));
        let got: Vec<Event> = conditions(&f, &t).iter().map(|c| c.event).collect();
        assert_eq!(got[0], Event::ClockFrozen);
        assert!(!got.contains(&Event::ClockAlert));
    }
}
