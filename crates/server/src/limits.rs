//! Per-client limits (`[client_limits]` in `repository.toml`): new job names per day, bytes
//! of new restore points per day, and bytes of restore points in all, per certificate
//! identity. One client cannot fill the repository by backing up under ever new job names;
//! the immutability service's `max_locked_bytes` stays the outer cap.
//!
//! The files are the truth: what a client holds is computed from its jobs' restore-point
//! files (logical file bytes) and its job claims (`net/owners/<job>`, the claim time is the
//! file's time). Bytes of backups still being received are counted in memory, per client,
//! across connections; a finished backup bumps the client's generation, which makes every
//! running backup of that client recount from the files, so nothing is counted zero times.

use std::collections::HashMap;
use std::sync::Mutex;

use bulwark_protocol::ErrorCode;
use bulwark_repository::{ClientLimits, Repository};

use crate::handlers::Fail;
use crate::Registry;

const DAY: i64 = 86_400;

/// What one client holds, from the files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    /// Bytes of all restore-point files of the client's jobs.
    pub sealed: u64,
    /// Of those, bytes of files created in the last 24 hours.
    pub day_bytes: u64,
    /// Job names the client claimed in the last 24 hours.
    pub day_jobs: u32,
}

/// The limits in bytes for this repository's filesystem.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resolved {
    pub new_jobs_per_day: u32,
    pub new_bytes_per_day: u64,
    pub sealed_bytes: u64,
}

impl Resolved {
    pub(crate) fn of(l: &ClientLimits, fs_total: u64) -> Self {
        Resolved {
            new_jobs_per_day: l.new_jobs_per_day,
            new_bytes_per_day: l.new_bytes_per_day.resolve(fs_total),
            sealed_bytes: l.sealed_bytes.resolve(fs_total),
        }
    }
}

/// Counts what `client` holds now.
pub(crate) fn held(
    repo: &Repository,
    registry: &Registry,
    client: &str,
    now: i64,
) -> crate::Result<Held> {
    let mut h = Held::default();
    for (_, owner, when) in registry.claims()? {
        if owner == client && when > now - DAY {
            h.day_jobs += 1;
        }
    }
    for job in repo.jobs()? {
        if registry.owner(repo, &job)?.as_deref() != Some(client) {
            continue;
        }
        for p in repo.scan_job(&job)?.points {
            h.sealed += p.file_size;
            if p.meta.created_unix_secs > now - DAY {
                h.day_bytes += p.file_size;
            }
        }
    }
    Ok(h)
}

fn refuse(client: &str, what: String, todo: &str) -> Fail {
    Fail::new(
        ErrorCode::Limit,
        format!(
            "client {client}: {what} ([client_limits] in the repository's repository.toml); \
             {todo}, or ask the repository's administrator to raise the limit"
        ),
    )
}

const TODO_JOBS: &str = "back up under one of your existing jobs (`bulwark list` shows them) \
                         or wait until a claim is 24 hours old";
const TODO_DAY: &str = "nothing was kept of this backup; run it again when the points of the \
                        last 24 hours are older";
const TODO_SEALED: &str = "nothing was kept of this backup; it can run again once retention \
                           has removed expired points of this client";

/// Refuses a new backup that is already over a limit; `new_job` when it claims a new name.
pub(crate) fn check_start(
    client: &str,
    h: &Held,
    l: &Resolved,
    new_job: bool,
) -> std::result::Result<(), Fail> {
    if new_job && h.day_jobs >= l.new_jobs_per_day {
        return Err(refuse(
            client,
            format!(
                "already created {} new jobs in the last 24 hours, the limit is {} \
                 (new_jobs_per_day)",
                h.day_jobs, l.new_jobs_per_day
            ),
            TODO_JOBS,
        ));
    }
    check_bytes(client, h, l, 0)
}

/// Refuses when what the client holds plus `receiving` (bytes of its running backups)
/// exceeds a byte limit.
pub(crate) fn check_bytes(
    client: &str,
    h: &Held,
    l: &Resolved,
    receiving: u64,
) -> std::result::Result<(), Fail> {
    let h_ = bulwark_repository::human;
    let sealed = h.sealed.saturating_add(receiving);
    if sealed > l.sealed_bytes || (receiving == 0 && sealed >= l.sealed_bytes) {
        return Err(refuse(
            client,
            format!(
                "holds {} of restore points (with backups in progress), the limit is {} \
                 (sealed_bytes)",
                h_(sealed),
                h_(l.sealed_bytes)
            ),
            TODO_SEALED,
        ));
    }
    let day = h.day_bytes.saturating_add(receiving);
    if day > l.new_bytes_per_day || (receiving == 0 && day >= l.new_bytes_per_day) {
        return Err(refuse(
            client,
            format!(
                "added {} in the last 24 hours (with backups in progress), the limit is {} \
                 (new_bytes_per_day)",
                h_(day),
                h_(l.new_bytes_per_day)
            ),
            TODO_DAY,
        ));
    }
    Ok(())
}

/// Bytes being received per client, across connections, and a generation per client that
/// grows with every restore point the client finishes.
#[derive(Default)]
pub(crate) struct InFlight {
    m: Mutex<HashMap<String, (u64, u64)>>,
}

impl InFlight {
    /// Adds `n` received bytes; returns the client's total in flight and its generation.
    pub(crate) fn add(&self, client: &str, n: u64) -> (u64, u64) {
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(client.to_string()).or_default();
        e.0 = e.0.saturating_add(n);
        *e
    }
    /// The client's generation now.
    pub(crate) fn generation(&self, client: &str) -> u64 {
        let m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        m.get(client).map_or(0, |e| e.1)
    }
    /// A backup ended: its `n` bytes are no longer in flight; `finished` when its restore
    /// point is now in the files (the other backups of the client must recount).
    pub(crate) fn end(&self, client: &str, n: u64, finished: bool) {
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(client.to_string()).or_default();
        e.0 = e.0.saturating_sub(n);
        if finished {
            e.1 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Resolved {
        Resolved {
            new_jobs_per_day: 2,
            new_bytes_per_day: 100,
            sealed_bytes: 200,
        }
    }

    #[test]
    fn each_client_limit_refuses_at_its_bound() {
        let l = lim();
        let mut h = Held::default();
        assert!(check_start("c", &h, &l, true).is_ok());
        h.day_jobs = 2;
        let e = check_start("c", &h, &l, true).err().unwrap();
        assert_eq!(e.code, ErrorCode::Limit);
        assert!(e.message.contains("new_jobs_per_day"), "{}", e.message);
        // An existing job is still allowed.
        assert!(check_start("c", &h, &l, false).is_ok());
        h.day_bytes = 60;
        h.sealed = 60;
        assert!(check_bytes("c", &h, &l, 40).is_ok());
        let e = check_bytes("c", &h, &l, 41).err().unwrap();
        assert!(e.message.contains("new_bytes_per_day"), "{}", e.message);
        h.day_bytes = 100;
        assert!(check_start("c", &h, &l, false).is_err());
        h.day_bytes = 0;
        h.sealed = 199;
        assert!(check_bytes("c", &h, &l, 1).is_ok());
        let e = check_bytes("c", &h, &l, 2).err().unwrap();
        assert!(e.message.contains("sealed_bytes"), "{}", e.message);
    }

    #[test]
    fn bytes_in_flight_are_shared_by_a_clients_connections() {
        let f = InFlight::default();
        assert_eq!(f.add("a", 10), (10, 0));
        assert_eq!(f.add("a", 5), (15, 0));
        assert_eq!(f.add("b", 1), (1, 0));
        f.end("a", 10, true);
        assert_eq!(f.add("a", 0), (5, 1));
        f.end("a", 5, false);
        assert_eq!(f.add("a", 0), (0, 1));
        assert_eq!(f.generation("b"), 0);
    }
}
