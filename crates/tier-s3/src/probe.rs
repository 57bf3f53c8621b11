//! Proof that a store enforces Object Lock before it is trusted with copies.
//!
//! Several S3-compatible servers accept lock headers and silently ignore them (a "locked"
//! object deletes fine), or let COMPLIANCE retention be shortened. `tier add` uploads a small
//! probe locked for a short time and checks that the store refuses both attacks.

use std::collections::HashMap;

use crate::store::Store;
use crate::{Result, TierError};

/// How long the probe stays locked (seconds): long enough for the checks, short enough to
/// be harmless.
pub const PROBE_LOCK_SECS: i64 = 120;

/// What the store did with the probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeObservations {
    /// Retention read back after the upload: (mode, retain-until), `None` if it has none.
    pub retention: Option<(String, i64)>,
    /// The retain-until that was asked for.
    pub asked_until: i64,
    /// Outcome of deleting the locked version: `Ok` if it was deleted, else the error code.
    pub delete: std::result::Result<(), String>,
    /// Outcome of shortening its retention: `Ok` if accepted, else the error code.
    pub shorten: std::result::Result<(), String>,
}

/// Decides whether the observations prove that the store enforces COMPLIANCE locks; the
/// `Err` says why not.
pub fn judge(o: &ProbeObservations) -> std::result::Result<(), String> {
    match &o.retention {
        None => {
            return Err("it accepted the lock headers but the probe object has no retention".into())
        }
        Some((mode, _)) if mode != "COMPLIANCE" => {
            return Err(format!(
                "the probe was uploaded in COMPLIANCE mode but reads back as {mode:?}"
            ))
        }
        Some((_, until)) if *until < o.asked_until => {
            return Err(format!(
                "the probe's retain-until reads back {} s earlier than asked",
                o.asked_until - until
            ))
        }
        _ => {}
    }
    if o.delete.is_ok() {
        return Err("deleting a COMPLIANCE-locked version succeeded".into());
    }
    if o.shorten.is_ok() {
        return Err("shortening a COMPLIANCE retention was accepted".into());
    }
    Ok(())
}

/// Uploads the probe under `prefix`, tries the two attacks, and judges the outcome.
pub fn run(store: &Store, prefix: &str) -> Result<ProbeObservations> {
    let now = store.store_now();
    let key = format!("{prefix}/probe/{}", crate::store::now_unix());
    let asked_until = now + PROBE_LOCK_SECS;
    let version = store.put_locked(
        &key,
        b"bulwark object lock probe\n".to_vec(),
        asked_until,
        &HashMap::new(),
    )?;
    let retention = store.get_retention(&key, &version)?;
    let refused = |r: Result<()>| match r {
        Ok(()) => Ok(()),
        Err(e @ TierError::BadCredentials { .. }) => Err(e.to_string()),
        Err(e) => Err(e.code().unwrap_or("refused").to_string()),
    };
    let shorten = refused(store.put_retention(&key, &version, asked_until - 60));
    let delete = refused(store.delete_version(&key, &version));
    let o = ProbeObservations {
        retention,
        asked_until,
        delete,
        shorten,
    };
    judge(&o).map_err(TierError::LockNotEnforced)?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> ProbeObservations {
        ProbeObservations {
            retention: Some(("COMPLIANCE".into(), 1000)),
            asked_until: 1000,
            delete: Err("AccessDenied".into()),
            shorten: Err("AccessDenied".into()),
        }
    }

    #[test]
    fn an_enforcing_store_passes() {
        assert_eq!(judge(&good()), Ok(()));
    }

    #[test]
    fn a_store_that_ignores_lock_headers_is_refused() {
        let o = ProbeObservations {
            retention: None,
            delete: Ok(()),
            ..good()
        };
        assert!(judge(&o).unwrap_err().contains("no retention"));
        let o = ProbeObservations {
            delete: Ok(()),
            ..good()
        };
        assert!(judge(&o).unwrap_err().contains("deleting"));
    }

    #[test]
    fn a_store_that_lets_retention_shrink_is_refused() {
        let o = ProbeObservations {
            shorten: Ok(()),
            ..good()
        };
        assert!(judge(&o).unwrap_err().contains("shortening"));
    }

    #[test]
    fn governance_or_short_retention_is_refused() {
        let o = ProbeObservations {
            retention: Some(("GOVERNANCE".into(), 1000)),
            ..good()
        };
        assert!(judge(&o).is_err());
        let o = ProbeObservations {
            retention: Some(("COMPLIANCE".into(), 900)),
            ..good()
        };
        assert!(judge(&o).is_err());
    }
}
