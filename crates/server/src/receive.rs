//! What a backup (`handlers.rs`) and a copy pushed into this repository (`copy.rs`) share
//! when they write: the job's owner and the client's limits before anything is claimed, the
//! claimed job name given back when nothing is kept, and the received bytes counted against
//! the client's limits until the write ends.

use bulwark_protocol::ErrorCode;

use crate::clients::Claim;
use crate::handlers::{Fail, Res};
use crate::limits;
use crate::serve::State;

/// Logs a refusal by one of the client's limits.
pub(crate) fn log_limit(client: &str, f: &Fail) {
    tracing::warn!(%client, "refused by a client limit: {}", f.log);
}

/// Checks the count of blocks a client's `Finish` says it sent against those received.
pub(crate) fn check_finish(blocks: u64, received: u64) -> Res {
    if blocks != received {
        return Err(Fail::new(
            ErrorCode::Malformed,
            format!("client says it sent {blocks} blocks, the server received {received}"),
        ));
    }
    Ok(())
}

/// A write into a job that may start: the job is the client's or free, and the client is
/// under its limits.
pub(crate) struct Start {
    pub(crate) lim: limits::Resolved,
    /// The client's generation when `held` was counted.
    pub(crate) gen: u64,
    pub(crate) held: limits::Held,
}

/// Checks that `job` is `client`'s or free (`not_yours` when another owns it) and that the
/// client is under its limits.
pub(crate) fn start(
    state: &State,
    client: &str,
    job: &str,
    not_yours: &dyn Fn() -> Fail,
) -> Res<Start> {
    let new_job = match state.registry.owner(&state.repo, job)? {
        Some(o) if o == client => false,
        Some(_) => return Err(not_yours()),
        None => true,
    };
    let fs_total = bulwark_sys::statvfs(state.repo.root())
        .map(|st| st.blocks.saturating_mul(st.frsize))
        .unwrap_or(u64::MAX);
    let lim = limits::Resolved::of(&state.repo.config().client_limits, fs_total);
    let gen = state.inflight.generation(client);
    let held = limits::held(&state.repo, &state.registry, client, crate::now_unix())?;
    limits::check_start(client, &held, &lim, new_job).inspect_err(|f| log_limit(client, f))?;
    Ok(Start { lim, gen, held })
}

/// Claims `job` for `client` (`not_yours` when another client got it first); the guard gives
/// an unused name back when it drops. Bind the guard before the writer of the point, so that
/// it drops after it (and after its job lock).
pub(crate) fn claim<'a>(
    state: &'a State,
    job: &'a str,
    client: &'a str,
    not_yours: &dyn Fn() -> Fail,
) -> Res<(Claim, ClaimGuard<'a>)> {
    let claim = state.registry.claim_job(&state.repo, job, client)?;
    if claim == Claim::Refused {
        return Err(not_yours());
    }
    Ok((claim, ClaimGuard { state, job, client }))
}

/// Gives an unused job name back when the write that claimed it ends without a point.
pub(crate) struct ClaimGuard<'a> {
    state: &'a State,
    job: &'a str,
    client: &'a str,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        // Not while another backup of the job runs (it holds the job's lock).
        let Ok(_lock) = bulwark_repository::JobLock::acquire(self.state.repo.root(), self.job)
        else {
            return;
        };
        match self
            .state
            .registry
            .release_unused(&self.state.repo, self.job, self.client)
        {
            Ok(true) => tracing::info!(job = %self.job, "released the unused job name"),
            Ok(false) => {}
            Err(e) => tracing::warn!(job = %self.job, "cannot release the unused job name: {e}"),
        }
    }
}

/// The bytes a write has received, counted against its client's limits until it ends.
pub(crate) struct Receiving<'a> {
    state: &'a State,
    client: &'a str,
    lim: limits::Resolved,
    gen: u64,
    held: limits::Held,
    bytes: u64,
    /// The point was written (sealed, or waiting to be): its bytes are in the files now.
    pub(crate) finished: bool,
}

impl<'a> Receiving<'a> {
    /// Starts counting for the write that `start` allowed.
    pub(crate) fn new(state: &'a State, client: &'a str, start: Start) -> Self {
        Receiving {
            state,
            client,
            lim: start.lim,
            gen: start.gen,
            held: start.held,
            bytes: 0,
            finished: false,
        }
    }

    /// Counts `n` more bytes received, refusing them when they take the client over a limit.
    pub(crate) fn add(&mut self, n: u64) -> Res {
        let (in_flight, g) = self.state.inflight.add(self.client, n);
        self.bytes += n;
        if g != self.gen {
            // Another write of this client finished: its bytes are in the files now.
            self.held = limits::held(
                &self.state.repo,
                &self.state.registry,
                self.client,
                crate::now_unix(),
            )?;
            self.gen = g;
        }
        limits::check_bytes(self.client, &self.held, &self.lim, in_flight)
            .inspect_err(|f| log_limit(self.client, f))
    }
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.state
            .inflight
            .end(self.client, self.bytes, self.finished);
    }
}
