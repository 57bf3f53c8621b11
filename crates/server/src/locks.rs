//! `ListLocks` (0x80): what the immutability service's ledger says about one of the client's
//! own jobs — each sealed file's seal time and expiry — and the service's clock, for
//! `bulwark dashboard`. Read-only: it asks the service for its status and ledger listing,
//! the two requests that change nothing.

use std::time::Duration;

use bulwark_immut_msg::{FileState, ImmutClient};
use bulwark_protocol::{
    LockClock, LockEntry, LockMsg, LockPage, Msg, MAX_LOCKS_PER_FRAME, MAX_LOCK_ALERT,
};

use crate::conn::Session;
use crate::handlers::{authorize_read, Res};
use crate::serve::State;

/// How long the service may take to answer before the page says it does not.
const IMMUTD_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `ListLocks { job }` with `Locks` pages.
pub(crate) fn list_locks(s: &mut Session, client: &str, state: &State, job: &str) -> Res {
    authorize_read(client, state, job)?;
    let (guarded, clock, mut entries) = match &state.repo.config().immutd_socket {
        None => (false, None, Vec::new()),
        Some(sock) => {
            let asked = ImmutClient::connect(sock).and_then(|mut c| {
                c.set_timeout(IMMUTD_TIMEOUT)?;
                let st = c.status()?;
                let list = c.list(state.repo.root())?;
                Ok((st, list))
            });
            match asked {
                Ok((st, list)) => {
                    let clock = LockClock {
                        trusted_unix: st.trusted_unix,
                        wall_unix: st.wall_unix,
                        unlocks_frozen: st.unlocks_frozen,
                        alert: truncate(&st.alert, MAX_LOCK_ALERT),
                    };
                    let entries: Vec<LockEntry> = list
                        .into_iter()
                        .filter(|e| e.job == job)
                        .map(|e| LockEntry {
                            point: e.point,
                            chain: e.chain,
                            sealed_unix: e.sealed_unix,
                            expiry_unix: e.expiry_unix,
                            size: e.size,
                            state: match e.state {
                                FileState::Locked => 1,
                                FileState::Unlocked => 2,
                                FileState::Deleted => 3,
                            },
                        })
                        .collect();
                    (true, Some(clock), entries)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the immutability service did not answer ListLocks");
                    (true, None, Vec::new())
                }
            }
        }
    };
    entries.sort_by_key(|e| (e.sealed_unix, e.point));
    let mut pages = entries.chunks(MAX_LOCKS_PER_FRAME).peekable();
    let page = |last: bool, entries: Vec<LockEntry>| {
        Msg::Locks(LockMsg::Page(LockPage {
            last,
            guarded,
            clock: clock.clone(),
            entries,
        }))
    };
    if pages.peek().is_none() {
        s.send(&page(true, vec![]))?;
    }
    while let Some(p) = pages.next() {
        s.send(&page(pages.peek().is_none(), p.to_vec()))?;
    }
    Ok(())
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
