//! Sealing through the immutability service, and checking files against its ledger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bulwark_format::{Digest, PointMeta};
use bulwark_immut_msg::{ErrorCode, FileInfo, FileState, ImmutClient, Target};

use crate::{error_chain, RepoError, Result};

/// Longest a seal (or the query after one that timed out) may take.
const SEAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Asks the immutability service at `socket` to seal `done`; returns where the file now lives,
/// whether it is locked, and its expiry.
pub(crate) fn seal(
    socket: &Path,
    done: &Path,
    meta: &PointMeta,
    root: Digest,
) -> Result<(PathBuf, bool, Option<i64>)> {
    seal_within(socket, done, meta, root, SEAL_TIMEOUT)
}

/// The immutability service's clock alert, for printing with every backup while it lasts:
/// `None` when there is none; a description when the service does not answer.
pub fn clock_alert(socket: &Path) -> Option<String> {
    let st = ImmutClient::connect(socket).and_then(|mut c| {
        c.set_timeout(Duration::from_secs(5))?;
        c.status()
    });
    match st {
        Ok(st) if st.unlocks_frozen => Some(format!(
            "the immutability service has FROZEN all unlocks: {}",
            st.alert
        )),
        Ok(st) if !st.alert.is_empty() => Some(format!(
            "the immutability service reports a clock problem: {}",
            st.alert
        )),
        Ok(_) => None,
        Err(e) => Some(format!(
            "the immutability service at {} does not answer: {}",
            socket.display(),
            error_chain(&e)
        )),
    }
}

/// True when a request failed because the service did not answer in time.
fn timed_out(e: &bulwark_immut_msg::ClientError) -> bool {
    use bulwark_immut_msg::{ClientError, FrameError};
    matches!(e, ClientError::Frame(FrameError::Io(io))
        if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// [`seal`] with `timeout` per request. A seal that times out is not called failed: the
/// ledger is asked (on a fresh connection) whether the point got sealed, and the answer is
/// either the sealed file or [`RepoError::SealDelayed`] saying what is known.
pub(crate) fn seal_within(
    socket: &Path,
    done: &Path,
    meta: &PointMeta,
    root: Digest,
    timeout: Duration,
) -> Result<(PathBuf, bool, Option<i64>)> {
    let fail = |why: String| RepoError::Seal {
        path: done.to_path_buf(),
        why,
    };
    let mut client = ImmutClient::connect(socket).map_err(|e| fail(error_chain(&e)))?;
    client
        .set_timeout(timeout)
        .map_err(|e| fail(error_chain(&e)))?;
    // The writer has just closed the file; a lease may take a moment to be grantable.
    let mut attempt = 0;
    let info = loop {
        match client.seal_path(done) {
            Ok(i) => break i,
            Err(e) if e.code() == Some(ErrorCode::Busy) && attempt < 10 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100 * attempt));
            }
            Err(e) if timed_out(&e) => {
                drop(client);
                return after_timeout(socket, meta, root, timeout, &error_chain(&e));
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

/// After a seal request timed out: the sealed file if the ledger has it, else what is known.
fn after_timeout(
    socket: &Path,
    meta: &PointMeta,
    root: Digest,
    timeout: Duration,
    why: &str,
) -> Result<(PathBuf, bool, Option<i64>)> {
    let delayed = |sealed: Option<bool>| RepoError::SealDelayed {
        point: meta.point,
        sealed,
        why: why.to_string(),
    };
    let query = ImmutClient::connect(socket).and_then(|mut c| {
        c.set_timeout(timeout)?;
        c.query(Target::Point(meta.point))
    });
    match query {
        Ok(i) if i.point == meta.point && i.root_digest == root && i.state == FileState::Locked => {
            tracing::warn!(point = %meta.point, "the seal request timed out, but the ledger shows the point sealed");
            Ok((i.sealed_path, true, Some(i.expiry_unix)))
        }
        Ok(_) => Err(delayed(None)),
        Err(e) if e.code() == Some(ErrorCode::NotFound) => Err(delayed(Some(false))),
        Err(_) => Err(delayed(None)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_format::{PointId, PointKind, RetentionClass, Stats};
    use bulwark_immut_msg::{read_frame, write_frame, Request, Response};
    use std::os::unix::net::UnixListener;

    fn meta(point: PointId) -> PointMeta {
        PointMeta {
            kind: PointKind::ActiveFull,
            retention: RetentionClass::Regular,
            compression_level: 1,
            created_unix_secs: 1,
            created_nanos: 0,
            block_size: 1 << 20,
            disk_size: 1 << 20,
            point,
            parent: PointId::NONE,
            chain: point,
            job: "j".into(),
            client: String::new(),
            stats: Stats::default(),
            files: vec![],
            extensions: vec![],
        }
    }

    /// A stand-in service: never answers a seal; answers a query with `entry` (or NotFound).
    fn slow_service(dir: &Path, entry: Option<FileInfo>) -> PathBuf {
        let sock = dir.join("immutd.sock");
        let l = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let entry = entry.clone();
                std::thread::spawn(move || {
                    while let Ok(p) = read_frame(&mut s) {
                        match Request::decode(&p).unwrap() {
                            Request::Seal { .. } => std::thread::sleep(Duration::from_secs(5)),
                            Request::Query { .. } => {
                                let r = match &entry {
                                    Some(i) => Response::Entry(i.clone()),
                                    None => Response::Error {
                                        code: ErrorCode::NotFound,
                                        message: "no such point".into(),
                                    },
                                };
                                let _ = write_frame(&mut s, &r.encode());
                            }
                            _ => return,
                        }
                    }
                });
            }
        });
        sock
    }

    #[test]
    fn a_seal_that_times_out_says_the_point_is_not_sealed_when_the_ledger_lacks_it() {
        let d = tempfile::tempdir().unwrap();
        let sock = slow_service(d.path(), None);
        let p = PointId::new(1_000_000_000, [1; 8]);
        let e = seal_within(
            &sock,
            &d.path().join("x.bwrp"),
            &meta(p),
            Digest::of(b"r"),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                RepoError::SealDelayed {
                    sealed: Some(false),
                    ..
                }
            ),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("NOT sealed yet") && text.contains("sealing delayed"),
            "{text}"
        );
    }

    #[test]
    fn a_seal_that_times_out_but_is_in_the_ledger_counts_as_sealed() {
        let d = tempfile::tempdir().unwrap();
        let p = PointId::new(1_000_000_000, [2; 8]);
        let root = Digest::of(b"r");
        let info = FileInfo {
            sealed_path: d.path().join("store/j/x.bwrp"),
            job: "j".into(),
            chain: p,
            point: p,
            root_digest: root,
            size: 1,
            inode: 1,
            sealed_unix: 1,
            expiry_unix: 99,
            requested_expiry_unix: 0,
            state: FileState::Locked,
        };
        let sock = slow_service(d.path(), Some(info.clone()));
        let (path, immutable, expiry) = seal_within(
            &sock,
            &d.path().join("x.bwrp"),
            &meta(p),
            root,
            Duration::from_millis(300),
        )
        .unwrap();
        assert_eq!(
            (path, immutable, expiry),
            (info.sealed_path, true, Some(99))
        );
    }
}
