//! `bulwark job run` and `bulwark job plan`: scheduled backups from a job file.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_engine::{backup_local_source, BackupOptions};
use bulwark_format::PointKind;
use bulwark_jobs::{decide, plan, JobFile, JobState};
use bulwark_repository::{utc, Repository};
use serde_json::json;

use crate::output::{human, Output, EXIT_OK};

/// Arguments of `bulwark job`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Run the job now: decide incremental, synthetic full or active full, and do it.
    Run {
        /// The job file (see docs/jobs.md).
        file: PathBuf,
    },
    /// Show what the next daily runs would be, and why.
    Plan {
        /// The job file.
        file: PathBuf,
        /// How many daily runs to show.
        #[arg(long, default_value_t = 14)]
        runs: usize,
    },
}

fn now() -> i64 {
    bulwark_time::UnixTime::now().secs()
}

fn load(file: &std::path::Path) -> anyhow::Result<(JobFile, Repository, JobState)> {
    let job = JobFile::load(file)?;
    let path = std::path::Path::new(&job.repository);
    if !path.is_dir() && job.repository.contains(':') {
        anyhow::bail!(
            "job file {}: repository {:?} looks like a network address; jobs support local repositories only \
             for now: run `bulwark backup --repo {}` from a timer instead",
            file.display(),
            job.repository,
            job.repository
        );
    }
    let repo = super::open_repo(path)?;
    let scan = repo.scan_job(&job.name)?;
    let state = JobState {
        points: scan
            .points
            .iter()
            .map(|p| (p.meta.kind, p.meta.created_unix_secs))
            .collect(),
        damage: repo.chain_damage(&job.name)?,
    };
    Ok((job, repo, state))
}

/// Runs `bulwark job`.
pub fn run(a: Args, out: &Output) -> anyhow::Result<i32> {
    match a.action {
        Action::Plan { file, runs } => {
            let (job, _, state) = load(&file)?;
            let p = plan(&job.schedule, &state, now(), runs);
            if out.json {
                let v: Vec<_> = p
                    .iter()
                    .map(|(t, d)| json!({"at": utc(*t), "kind": d.kind.as_str(), "reason": d.reason}))
                    .collect();
                out.json(&json!({"job": job.name, "runs": v}));
            } else {
                println!("job {} (one run a day from now):", job.name);
                for (t, d) in p {
                    println!("  {}  {:14}  {}", &utc(t)[..10], d.kind.as_str(), d.reason);
                }
            }
            Ok(EXIT_OK)
        }
        Action::Run { file } => {
            // Root on a guarded host: open the source, continue as the repository's owner.
            let mut opened = match JobFile::load(&file) {
                Ok(j) => super::become_repo_owner(std::path::Path::new(&j.repository), &j.source)?,
                Err(_) => None,
            };
            let (job, repo, state) = load(&file)?;
            let decision = decide(&job.schedule, &state, now());
            if !out.json {
                println!(
                    "job {}: {} — {}",
                    job.name,
                    decision.kind.as_str(),
                    decision.reason
                );
            }
            let block_size = job
                .block_size
                .as_deref()
                .map(super::parse_size)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let opts = BackupOptions {
                block_size,
                compression_level: job
                    .compression
                    .unwrap_or(bulwark_engine::DEFAULT_COMPRESSION),
                force_full: decision.kind == PointKind::ActiveFull,
                threads: bulwark_engine::default_threads(),
            };
            let pb = out.progress(0, "backup");
            let src = match opened.take() {
                Some(s) => s,
                None => bulwark_engine::Source::open(&job.source)?,
            };
            let s = backup_local_source(&repo, &job.name, src, &opts, &|n| pb.inc(n))
                .with_context(|| {
                    format!("backing up {} for job {}", job.source.display(), job.name)
                })?;
            pb.finish_and_clear();
            let synth = if decision.kind == PointKind::SyntheticFull {
                Some(
                    repo.synthesize(&job.name)
                        .context("building the synthetic full")?,
                )
            } else {
                None
            };
            if out.json {
                out.json(&json!({
                    "job": job.name, "decision": decision.kind.as_str(), "reason": decision.reason,
                    "point": s.sealed.meta.point.to_hex(), "kind": s.sealed.meta.kind.as_str(),
                    "bytes_stored": s.counters.bytes_stored, "seconds": s.elapsed.as_secs_f64(),
                    "synthetic_full": synth.as_ref().map(|o| o.sealed.meta.point.to_hex()),
                    "synthetic_method": synth.as_ref().map(|o| o.method.as_str()),
                }));
            } else {
                println!(
                    "  {} {}: {} new blocks, {} stored, in {:.1}s",
                    s.sealed.meta.kind.as_str(),
                    s.sealed.meta.point,
                    s.counters.blocks_new,
                    human(s.counters.bytes_stored),
                    s.elapsed.as_secs_f64()
                );
                if let Some(o) = synth {
                    println!(
                        "  synthetic full {} by {} in {:.2}s",
                        o.sealed.meta.point,
                        o.method.as_str(),
                        o.elapsed.as_secs_f64()
                    );
                }
            }
            Ok(EXIT_OK)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_example_job_file_parses() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/jobs/web01.toml");
        let job = bulwark_jobs::JobFile::load(&p).unwrap();
        assert_eq!(job.name, "web01");
        assert_eq!(job.schedule.active_full_every_weeks, 4);
        assert_eq!(
            job.schedule.synthetic_full_day,
            Some(bulwark_jobs::Weekday::Sunday)
        );
    }
}
