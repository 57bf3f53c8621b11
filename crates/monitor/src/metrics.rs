//! Prometheus metrics in the text exposition format (version 0.0.4), for node_exporter's
//! textfile collector: no listening port on the hardened host. The file is written by
//! temporary file, fsync, rename and fsync of the folder, so the collector never reads half a
//! file. Names and their meaning are listed in `docs/monitoring.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::watch::{Facts, LockedDay};

/// A label value escaped as the format requires (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} gauge");
    }
    fn value(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, x)| format!("{k}=\"{}\"", esc(x)))
                .collect();
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

/// The metrics text of `f`.
pub fn render(f: &Facts) -> String {
    let mut o = Out(String::new());
    let repo = f.repo.display().to_string();
    let r = repo.as_str();
    type JobGauge = (
        &'static str,
        &'static str,
        fn(&crate::watch::JobFacts) -> Option<f64>,
    );
    let per_job: [JobGauge; 7] = [
        (
            "bulwark_job_points",
            "Restore points the repository holds for the job.",
            |j| Some(j.points as f64),
        ),
        (
            "bulwark_job_last_success_timestamp_seconds",
            "Creation time (repository clock) of the job's newest restore point: its last successful backup.",
            |j| j.last_point_unix.map(|t| t as f64),
        ),
        (
            "bulwark_job_logical_bytes",
            "Logical size of the job's restore-point files.",
            |j| Some(j.logical_bytes as f64),
        ),
        (
            "bulwark_job_physical_bytes",
            "Bytes on disk of the job's files, extents shared between them counted once per chain.",
            |j| Some(j.physical_bytes as f64),
        ),
        (
            "bulwark_job_shared_bytes",
            "Bytes of the job's files on extents shared with another file (block cloning).",
            |j| Some(j.shared_bytes as f64),
        ),
        (
            "bulwark_job_verify_timestamp_seconds",
            "Oldest last-verify time over the job's restore points; absent while one was never verified.",
            |j| j.verified_unix.map(|t| t as f64),
        ),
        (
            "bulwark_job_verify_damaged",
            "1 when verify found a restore point of the job's current chain damaged, else 0.",
            |j| Some(if j.damage.is_some() { 1.0 } else { 0.0 }),
        ),
    ];
    for (name, help, get) in per_job {
        o.family(name, help);
        for j in &f.jobs {
            if let Some(v) = get(j) {
                o.value(name, &[("repository", r), ("job", &j.job)], v);
            }
        }
    }
    type DayGauge = (&'static str, &'static str, fn(&LockedDay) -> u64);
    let per_day: [DayGauge; 2] = [
        (
            "bulwark_locked_bytes",
            "Physical bytes that stay locked until the end of the day in label until (UTC).",
            |d| d.physical_bytes,
        ),
        (
            "bulwark_locked_files",
            "Files whose protection ends on the day in label until (UTC).",
            |d| d.files,
        ),
    ];
    for (name, help, get) in per_day {
        o.family(name, help);
        for d in &f.locked {
            let day = bulwark_time::utc(d.until_unix)[..10].to_string();
            o.value(name, &[("repository", r), ("until", &day)], get(d));
        }
    }
    o.family(
        "bulwark_immutd_up",
        "1 when the immutability service answered on its socket, 0 when it did not.",
    );
    match &f.immutd {
        Some(Ok(st)) => {
            o.value("bulwark_immutd_up", &[("repository", r)], 1);
            let gauges: [(&str, &str, i128); 6] = [
                (
                    "bulwark_immutd_clock_alert",
                    "1 while the trusted clock raises an alert.",
                    i128::from(!st.alert.is_empty()),
                ),
                (
                    "bulwark_immutd_unlocks_frozen",
                    "1 while every unlock is frozen by a clock alert.",
                    i128::from(st.unlocks_frozen),
                ),
                (
                    "bulwark_immutd_clock_skew_seconds",
                    "Wall clock minus the trusted clock, as the service reads them.",
                    i128::from(st.wall_unix) - i128::from(st.trusted_unix),
                ),
                (
                    "bulwark_immutd_trusted_time_seconds",
                    "The time the trusted clock credits.",
                    i128::from(st.trusted_unix),
                ),
                (
                    "bulwark_immutd_locked_bytes",
                    "Bytes the immutability service holds locked, all repositories.",
                    i128::from(st.bytes_locked),
                ),
                (
                    "bulwark_immutd_locked_files",
                    "Files the immutability service holds locked.",
                    i128::from(st.files_locked),
                ),
            ];
            for (name, help, v) in gauges {
                o.family(name, help);
                o.value(name, &[("repository", r)], v);
            }
            if let Some(cap) = f.cap_bytes {
                o.family(
                    "bulwark_immutd_locked_bytes_cap",
                    "The root-owned cap on locked bytes (max_locked_bytes).",
                );
                o.value("bulwark_immutd_locked_bytes_cap", &[("repository", r)], cap);
            }
        }
        Some(Err(_)) => o.value("bulwark_immutd_up", &[("repository", r)], 0),
        None => {}
    }
    o.family(
        "bulwark_unsealed_files",
        "Finished restore-point files in incoming/ not sealed yet.",
    );
    o.value(
        "bulwark_unsealed_files",
        &[("repository", r)],
        f.unsealed.len(),
    );
    o.family(
        "bulwark_unsealed_oldest_age_seconds",
        "Age of the oldest file waiting to be sealed (seal latency so far); 0 when none.",
    );
    let oldest = f.unsealed.iter().map(|(_, a)| *a).max().unwrap_or(0).max(0);
    o.value(
        "bulwark_unsealed_oldest_age_seconds",
        &[("repository", r)],
        oldest,
    );
    if let Some(n) = f.transport_connections {
        o.family(
            "bulwark_transport_connections",
            "Established TCP connections to the transport service's port.",
        );
        o.value("bulwark_transport_connections", &[("repository", r)], n);
    }
    o.family(
        "bulwark_monitor_last_run_timestamp_seconds",
        "When bulwark-monitor wrote this file.",
    );
    o.value(
        "bulwark_monitor_last_run_timestamp_seconds",
        &[("repository", r)],
        f.now,
    );
    o.0
}

/// Writes `text` to `path` atomically ([`bulwark_repository::write_atomic`]: temporary file
/// in the same folder, fsync, rename, fsync of the folder). The collector reads only
/// `*.prom`, and the temporary name ends otherwise.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    // Absolute, so that a bare file name has a folder to sync.
    let path =
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    anyhow::ensure!(
        path.file_name().is_some(),
        "{} names no file",
        path.display()
    );
    Ok(bulwark_repository::write_atomic(&path, text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let f = Facts {
            repo: "/srv/r\"x".into(),
            jobs: vec![crate::watch::JobFacts {
                job: "web01".into(),
                points: 3,
                ..Default::default()
            }],
            ..Facts::default()
        };
        let t = render(&f);
        assert!(
            t.contains("bulwark_job_points{repository=\"/srv/r\\\"x\",job=\"web01\"} 3\n"),
            "{t}"
        );
        // Never verified: no sample, the family is still declared.
        assert!(t.contains("# TYPE bulwark_job_verify_timestamp_seconds gauge"));
        assert!(!t.contains("bulwark_job_verify_timestamp_seconds{"));
    }
}
