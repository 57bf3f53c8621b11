//! `bulwark-monitor`: the repository host's watcher, run every minute by
//! `bulwark-monitor.timer` as the unprivileged service user. It asks the immutability service
//! for its status over the Unix socket (the service itself has no network and links no
//! notification code), looks at `incoming/`, verify's records and the space report, sends
//! the notifications due (`/etc/bulwark/notify.toml`), and writes Prometheus metrics for
//! node_exporter's textfile collector.
//!
//! A due condition counts as sent when at least one channel accepted it (or no channel wants
//! its event: then the journal line is the notification); otherwise it is not remembered and
//! is tried again at the next check. Each failed channel is named in a journal warning.
//!
//! Exit codes: 0 nothing to report, 1 a condition is active (and every due notification was
//! accepted by every channel), 2 operational error, including a channel that failed.
//!
//! Standard output never panics, by the rule of every Bulwark program (`bulwark_stdout`):
//! when it is a pipe whose reader has gone (`bulwark-monitor check … | head -1`), the rest of
//! the output is dropped and the check carries on with its own exit code. Any other write
//! error is said once on stderr, the check still sends, writes its metrics and state, and
//! exits 2.

mod metrics;
mod watch;

use std::path::PathBuf;

use anyhow::Context;
use bulwark_notify::{dedup::Sent, Config, Event, Notification};
use clap::{Parser, Subcommand};

use bulwark_stdout::outln;

/// Watch a Bulwark repository host: notifications and metrics.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Look at the repository once: notify what is wrong, optionally write metrics.
    Check(CheckArgs),
    /// Send one notification (for systemd OnFailure= hooks and tests).
    Send {
        /// backup_failed, backup_missed, verify_damage, clock_alert, clock_frozen,
        /// not_sealed, locked_bytes_high or tier_sync_failed.
        event: String,
        /// What it is about (job, repository, unit).
        subject: String,
        /// The message.
        message: String,
        /// Notification settings (default $BULWARK_NOTIFY_CONFIG, else
        /// /etc/bulwark/notify.toml when it exists).
        #[arg(long)]
        notify_config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The repository folder.
    repo: PathBuf,
    /// The immutability service's configuration, for its cap on locked bytes.
    #[arg(long, default_value = "/etc/bulwark/immutd.toml")]
    immutd_config: PathBuf,
    /// Notification settings (default $BULWARK_NOTIFY_CONFIG, else /etc/bulwark/notify.toml
    /// when it exists).
    #[arg(long)]
    notify_config: Option<PathBuf>,
    /// Where to remember what was sent, so that a lasting condition is not sent every minute.
    #[arg(long, default_value = "/var/lib/bulwark-monitor")]
    state_dir: PathBuf,
    /// Also write the metrics to this file (e.g.
    /// /var/lib/prometheus/node-exporter/bulwark.prom).
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Seconds a finished file may wait in incoming/ before it is reported not sealed.
    #[arg(long, default_value_t = 60)]
    seal_grace_secs: i64,
    /// Report locked bytes above this percentage of the cap.
    #[arg(long, default_value_t = 80)]
    cap_percent: u64,
    /// The transport service's port, whose established connections are counted.
    #[arg(long, default_value_t = 6162)]
    transport_port: u16,
}

fn check(a: CheckArgs, json: bool) -> anyhow::Result<i32> {
    let now = bulwark_time::UnixTime::now().secs();
    let cap_cfg = a
        .immutd_config
        .exists()
        .then_some(a.immutd_config.as_path());
    let facts = watch::gather(&a.repo, cap_cfg, a.transport_port, now)?;
    if let Some(out) = &a.metrics {
        metrics::write_atomic(out, &metrics::render(&facts))
            .with_context(|| format!("writing the metrics to {}", out.display()))?;
    }
    let conds = watch::conditions(
        &facts,
        &watch::Thresholds {
            seal_grace_secs: a.seal_grace_secs,
            cap_percent: a.cap_percent,
        },
    );
    let cfg = Config::find(a.notify_config.as_deref())?;
    let repeat = i64::from(cfg.as_ref().and_then(|c| c.repeat_hours).unwrap_or(24)) * 3600;
    let sent_path = a.state_dir.join("sent.json");
    let mut sent = Sent::load(&sent_path);
    let mut failures = 0;
    let mut undelivered = 0;
    let mut rows = Vec::new();
    for c in &conds {
        let due = sent.due(c.event, &c.subject, now, repeat);
        let mut delivered = false;
        let mut failed = Vec::new();
        if due {
            let n = Notification::new(c.event, &c.subject, &c.message);
            let deliveries = bulwark_notify::send(cfg.as_ref(), &n);
            delivered = accepted(&deliveries);
            for d in deliveries {
                if let Err(e) = d.result {
                    failures += 1;
                    // `<4>`: journald keeps it as a warning.
                    eprintln!(
                        "<4>warning: notification {} about {} to {} failed: {e}{}",
                        c.event.as_str(),
                        c.subject,
                        d.channel,
                        if delivered {
                            "; another channel accepted it, so it is not sent again to this \
                             channel before repeat_hours"
                        } else {
                            "; no channel accepted it: it is tried again at the next check"
                        }
                    );
                    failed.push(serde_json::json!({"channel": d.channel, "error": e.to_string()}));
                }
            }
            if delivered {
                sent.mark(c.event, &c.subject, now);
            } else {
                undelivered += 1;
            }
        }
        if !json {
            let note = if due && !delivered {
                " (not delivered: tried again at the next check)"
            } else {
                ""
            };
            outln!("{:18} {}{note}", c.event.as_str(), c.message);
        }
        rows.push(
            serde_json::json!({"event": c.event.as_str(), "subject": c.subject,
            "message": c.message, "due": due, "sent": delivered, "failed": failed}),
        );
    }
    let active: Vec<(Event, String)> = conds.iter().map(|c| (c.event, c.subject.clone())).collect();
    sent.retain_active(&active);
    if let Err(e) = sent.save(&sent_path) {
        eprintln!("warning: {e}; a lasting condition may be sent again at the next check");
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({"repository": facts.repo, "conditions": rows,
                "delivery_failures": failures, "metrics": a.metrics})
        );
    } else if conds.is_empty() {
        outln!("ok: nothing to report for {}", facts.repo.display());
    }
    if failures > 0 {
        eprintln!(
            "error: {failures} notification deliveries failed (see the warnings above); \
             {undelivered} conditions reached no channel and are tried again at the next check; \
             fix the channels in the notification settings"
        );
        return Ok(2);
    }
    Ok(if conds.is_empty() { 0 } else { 1 })
}

/// Whether a notification counts as sent: a channel accepted it, or no channel wants its
/// event (the journal line `send` wrote is then the notification).
fn accepted(deliveries: &[bulwark_notify::Delivery]) -> bool {
    deliveries.is_empty() || deliveries.iter().any(|d| d.result.is_ok())
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Check(a) => check(a, cli.json),
        Command::Send {
            event,
            subject,
            message,
            notify_config,
        } => (|| {
            let e = Event::parse(&event).with_context(|| {
                let all: Vec<_> = Event::ALL.iter().map(|e| e.as_str()).collect();
                format!("unknown event {event:?}: use one of {}", all.join(", "))
            })?;
            let cfg = Config::find(notify_config.as_deref())?;
            let n = Notification::new(e, &subject, &message);
            let mut failed = 0;
            for d in bulwark_notify::send(cfg.as_ref(), &n) {
                if let Err(err) = d.result {
                    failed += 1;
                    eprintln!("error: {err}");
                }
            }
            anyhow::ensure!(failed == 0, "{failed} channels failed");
            Ok(0)
        })(),
    };
    match res {
        Ok(code) => bulwark_stdout::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_notify::{Delivery, NotifyError};

    fn d(ok: bool) -> Delivery {
        Delivery {
            channel: "webhook http://x".into(),
            result: if ok {
                Ok(())
            } else {
                Err(NotifyError::Webhook {
                    url: "http://x".into(),
                    msg: "HTTP 503".into(),
                })
            },
        }
    }

    #[test]
    fn a_notification_counts_as_sent_only_when_a_channel_accepted_it_or_none_wants_it() {
        assert!(accepted(&[]));
        assert!(accepted(&[d(true)]));
        assert!(accepted(&[d(false), d(true)]));
        assert!(!accepted(&[d(false)]));
        assert!(!accepted(&[d(false), d(false)]));
    }
}
