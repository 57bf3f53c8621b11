//! Sealing through the immutability service, and checking files against its ledger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bulwark_format::{Digest, PointMeta};
use bulwark_immut_msg::{ErrorCode, FileInfo, FileState, ImmutClient, Target};

use crate::{error_chain, RepoError, Result};

/// Asks the immutability service at `socket` to seal `done`; returns where the file now lives,
/// whether it is locked, and its expiry.
pub(crate) fn seal(
    socket: &Path,
    done: &Path,
    meta: &PointMeta,
    root: Digest,
) -> Result<(PathBuf, bool, Option<i64>)> {
    let fail = |why: String| RepoError::Seal {
        path: done.to_path_buf(),
        why,
    };
    let mut client = ImmutClient::connect(socket).map_err(|e| fail(error_chain(&e)))?;
    // The writer has just closed the file; a lease may take a moment to be grantable.
    let mut attempt = 0;
    let info = loop {
        match client.seal_path(done) {
            Ok(i) => break i,
            Err(e) if e.code() == Some(ErrorCode::Busy) && attempt < 10 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100 * attempt));
            }
            Err(e) => {
                return Err(fail(format!(
                    "{}; the file stays in incoming/",
                    error_chain(&e)
                )))
            }
        }
    };
    if info.point != meta.point || info.root_digest != root {
        return Err(fail(format!(
            "the service sealed point {} with root {}, but {} with root {} was written",
            info.point, info.root_digest, meta.point, root
        )));
    }
    Ok((
        info.sealed_path.clone(),
        info.state == FileState::Locked,
        Some(info.expiry_unix),
    ))
}

/// Asks the immutability service to protect the earlier files of a chain until at least
/// `until` and the new point until at least `own` (the repository's period, or a GFS full's
/// lifetime); returns the new point's resulting expiry. The service may cap requests at its
/// maximum period, and never shortens anything.
pub(crate) fn extend_chain(
    socket: &Path,
    chain: &[bulwark_format::PointId],
    until: i64,
    point: bulwark_format::PointId,
    own: i64,
) -> Result<i64> {
    let fail = |why: String| RepoError::Seal {
        path: PathBuf::from(point.to_hex()),
        why,
    };
    let mut client = ImmutClient::connect(socket).map_err(|e| fail(error_chain(&e)))?;
    let mut ask = |p: bulwark_format::PointId, t: i64| -> Result<i64> {
        let query =
            |e: bulwark_immut_msg::ClientError| fail(format!("querying {p}: {}", error_chain(&e)));
        // The service's own clock may already have granted more (it seals a moment later than
        // this process stamped the file); asking for less would be refused as shortening.
        let current = client.query(Target::Point(p)).map_err(query)?.expiry_unix;
        if t <= current {
            return Ok(current);
        }
        let (info, capped) = client.extend(Target::Point(p), t).map_err(|e| {
            fail(format!(
                "extending the protection of {p}: {}",
                error_chain(&e)
            ))
        })?;
        if capped {
            tracing::warn!(point = %p, "the immutability service capped the protection at its maximum period");
        }
        Ok(info.expiry_unix)
    };
    for &p in chain {
        ask(p, until)?;
    }
    ask(point, own)
}

/// A connection for looking files up in the immutability service's ledger.
pub(crate) struct Ledger {
    client: ImmutClient,
}

impl Ledger {
    pub(crate) fn connect(socket: &Path) -> Result<Ledger> {
        let client = ImmutClient::connect(socket).map_err(|e| {
            RepoError::Config(format!("cannot check the ledger: {}", error_chain(&e)))
        })?;
        Ok(Ledger { client })
    }

    /// The ledger's entry for a point, or `None` when the service never sealed it.
    pub(crate) fn entry(&mut self, point: bulwark_format::PointId) -> Result<Option<FileInfo>> {
        match self.client.query(Target::Point(point)) {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(RepoError::Config(format!(
                "ledger query failed: {}",
                error_chain(&e)
            ))),
        }
    }
}
