//! Both sides of a copy reached over the network (`HOST:6162`), each with the identity this
//! host enrolled with that repository.

use std::path::Path;

use bulwark_format::{BlockNo, Codec, Digest, MapEntry, PointId, StoredBlock, Trailer};
use bulwark_protocol::{CopyBegin, CopyMsg, Msg, MAX_MAP_ENTRIES_PER_FRAME, MAX_NEED_PER_FRAME};
use bulwark_remote::{Conn, RemoteAddr, RemoteError};
use bulwark_repository::{CopyHead, CopyMode, CopyPlan, HeldPoint};

use crate::{CopyError, Finished, Result, Source, SourcePoint, Target};

/// Most held points or needed blocks accepted in one answer (a bound on a misbehaving peer).
const MAX_LIST: usize = 1 << 24;

fn unexpected(m: Msg<'_>, what: &'static str) -> CopyError {
    CopyError::Remote(RemoteError::Protocol(m.unexpected(what)))
}

/// A list of points the `side` sends in pages: `page` takes each message apart into
/// (last page?, its points) until the last; at most [`MAX_LIST`] points in all.
fn recv_list<T>(
    conn: &mut Conn,
    side: &str,
    mut page: impl FnMut(Msg<'_>) -> Result<(bool, Vec<T>)>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    loop {
        let (last, points) = page(conn.recv()?)?;
        out.extend(points);
        if out.len() > MAX_LIST {
            return Err(CopyError::Usage(format!("the {side} sent too many points")));
        }
        if last {
            return Ok(out);
        }
    }
}

/// A repository service copied from (pull): reads the jobs this identity owns there.
pub struct NetSource {
    addr: RemoteAddr,
    conn: Conn,
}

/// A repository service copied to (push).
pub struct NetTarget {
    addr: RemoteAddr,
    conn: Conn,
    /// Blocks sent of the current point.
    sent: u64,
    mode: Option<CopyMode>,
}

fn connect(config_dir: &Path, addr: &RemoteAddr) -> Result<Conn> {
    Ok(Conn::session(config_dir, addr)?)
}

impl NetSource {
    /// Opens a session with `addr` using the credentials in `config_dir`.
    pub fn connect(config_dir: &Path, addr: RemoteAddr) -> Result<Self> {
        let conn = connect(config_dir, &addr)?;
        Ok(NetSource { addr, conn })
    }
}

impl NetTarget {
    /// Opens a session with `addr` using the credentials in `config_dir`.
    pub fn connect(config_dir: &Path, addr: RemoteAddr) -> Result<Self> {
        let conn = connect(config_dir, &addr)?;
        Ok(NetTarget {
            addr,
            conn,
            sent: 0,
            mode: None,
        })
    }
}

fn verify_on(conn: &mut Conn, job: &str) -> Result<Vec<String>> {
    conn.send(&Msg::Verify {
        job: Some(job.to_string()),
    })?;
    match conn.recv()? {
        Msg::VerifyReport(r) => Ok(r
            .damaged
            .iter()
            .map(|d| {
                format!(
                    "{}: {}",
                    d.point.map_or("unknown point".into(), |p| p.to_hex()),
                    d.problems.join("; ")
                )
            })
            .collect()),
        m => Err(unexpected(m, "VerifyReport")),
    }
}

impl Source for NetSource {
    fn describe(&self) -> String {
        self.addr.to_string()
    }

    fn jobs(&mut self) -> Result<Vec<String>> {
        self.conn.send(&Msg::ListJobs)?;
        match self.conn.recv()? {
            Msg::Jobs { jobs } => Ok(jobs),
            m => Err(unexpected(m, "Jobs")),
        }
    }

    fn points(&mut self, job: &str) -> Result<Vec<SourcePoint>> {
        self.conn.send(&Msg::ListPoints {
            job: job.to_string(),
        })?;
        recv_list(&mut self.conn, "source", |m| match m {
            Msg::Points { last, points } => {
                let points = points.into_iter().map(|s| SourcePoint {
                    point: s.point,
                    chain: s.chain,
                    parent: s.parent,
                    kind: s.kind,
                    root: s.root,
                    created: s.created_unix,
                });
                Ok((last, points.collect()))
            }
            m => Err(unexpected(m, "Points")),
        })
    }

    fn head(&mut self, job: &str, point: PointId) -> Result<CopyHead> {
        self.conn.send(&Msg::Copy(CopyMsg::ReadHead {
            job: job.to_string(),
            point,
        }))?;
        let begin = match self.conn.recv()? {
            Msg::Copy(CopyMsg::Begin(b)) => b,
            m => return Err(unexpected(m, "CopyBegin")),
        };
        let t = Trailer::decode(&begin.trailer).map_err(|e| {
            CopyError::Usage(format!("the source sent a bad trailer for {point}: {e}"))
        })?;
        if t.map_count > MAX_LIST as u64 {
            return Err(CopyError::Usage(format!(
                "restore point {point} has {} map entries, too many to copy over the network",
                t.map_count
            )));
        }
        // Grown as entries arrive: a trailer's count alone reserves nothing.
        let mut map = Vec::new();
        while (map.len() as u64) < t.map_count {
            match self.conn.recv()? {
                Msg::Copy(CopyMsg::Map { entries }) => map.extend(entries),
                m => return Err(unexpected(m, "CopyMap")),
            }
            if map.len() as u64 > t.map_count {
                return Err(CopyError::Usage(
                    "the source sent more map entries than its trailer says".into(),
                ));
            }
        }
        Ok(CopyHead {
            header: begin.header,
            trailer: begin.trailer,
            meta: begin.meta,
            map,
        })
    }

    fn read(
        &mut self,
        job: &str,
        point: PointId,
        blocks: &[BlockNo],
        each: &mut dyn FnMut(&MapEntry, &[u8]) -> Result<()>,
    ) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        self.conn.send(&Msg::Copy(CopyMsg::Read {
            job: job.to_string(),
            point,
            count: blocks.len() as u64,
        }))?;
        for chunk in blocks.chunks(MAX_NEED_PER_FRAME) {
            self.conn.send(&Msg::Copy(CopyMsg::Need {
                blocks: chunk.iter().map(|b| b.0).collect(),
            }))?;
        }
        for want in blocks {
            match self.conn.recv()? {
                Msg::Block(b) => {
                    if b.block != *want || Digest::of(b.data) != b.stored_hash {
                        return Err(CopyError::Usage(format!(
                            "the source sent block {} (asked for {want}) or bytes that do not match their hash",
                            b.block
                        )));
                    }
                    let e = MapEntry {
                        block: b.block,
                        file_ref: 0,
                        flags: b.codec.flags(),
                        offset: 0,
                        stored_len: b.data.len() as u32,
                        plain_len: b.plain_len,
                        plain_hash: b.plain_hash,
                        stored_hash: b.stored_hash,
                    };
                    each(&e, b.data)?;
                }
                m => return Err(unexpected(m, "Block")),
            }
        }
        match self.conn.recv()? {
            Msg::RestoreEnd { .. } => Ok(()),
            m => Err(unexpected(m, "RestoreEnd")),
        }
    }

    fn verify(&mut self, job: &str) -> Result<Vec<String>> {
        verify_on(&mut self.conn, job)
    }
}

impl Target for NetTarget {
    fn describe(&self) -> String {
        self.addr.to_string()
    }

    fn held(&mut self, job: &str) -> Result<Vec<HeldPoint>> {
        self.conn.send(&Msg::Copy(CopyMsg::Held {
            job: job.to_string(),
        }))?;
        recv_list(&mut self.conn, "target", |m| match m {
            Msg::Copy(CopyMsg::HeldList { last, points }) => {
                let points = points.into_iter().map(|h| HeldPoint {
                    point: h.point,
                    chain: h.chain,
                    root: h.root,
                    created: h.created,
                    origin: h.origin,
                });
                Ok((last, points.collect()))
            }
            m => Err(unexpected(m, "CopyHeldList")),
        })
    }

    fn begin(&mut self, job: &str, head: &CopyHead) -> Result<CopyPlan> {
        self.sent = 0;
        self.mode = None;
        self.conn.send(&Msg::Copy(CopyMsg::Begin(CopyBegin {
            job: job.to_string(),
            header: head.header.clone(),
            trailer: head.trailer.clone(),
            meta: head.meta.clone(),
        })))?;
        for chunk in head.map.chunks(MAX_MAP_ENTRIES_PER_FRAME) {
            self.conn.send(&Msg::Copy(CopyMsg::Map {
                entries: chunk.to_vec(),
            }))?;
        }
        let p = match self.conn.recv()? {
            Msg::Copy(CopyMsg::Plan(p)) => p,
            m => return Err(unexpected(m, "CopyPlan")),
        };
        let mode = CopyMode::from_code(p.mode)
            .ok_or_else(|| CopyError::Usage(format!("unknown copy mode {}", p.mode)))?;
        if p.needed > head.map.len() as u64 {
            return Err(CopyError::Usage(
                "the target asked for more blocks than the point has".into(),
            ));
        }
        let mut needed = Vec::with_capacity(p.needed as usize);
        while (needed.len() as u64) < p.needed {
            match self.conn.recv()? {
                Msg::Copy(CopyMsg::Need { blocks }) => {
                    needed.extend(blocks.into_iter().map(BlockNo))
                }
                m => return Err(unexpected(m, "CopyNeed")),
            }
            if needed.len() as u64 > p.needed {
                return Err(CopyError::Usage(
                    "the target listed more blocks than it announced".into(),
                ));
            }
        }
        self.mode = Some(mode);
        Ok(CopyPlan {
            mode,
            needed,
            resumed_bytes: p.resumed_bytes,
            local_bytes: p.local_bytes,
        })
    }

    fn put(&mut self, e: &MapEntry, stored: &[u8]) -> Result<()> {
        let b = StoredBlock {
            codec: Codec::of_flags(e.flags),
            ..StoredBlock::of_entry(e, stored)
        };
        self.conn.send(&Msg::Block(b))?;
        self.sent += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<Finished> {
        self.conn.send(&Msg::Finish { blocks: self.sent })?;
        let mode = self
            .mode
            .take()
            .ok_or_else(|| CopyError::Usage("no copy in progress".into()))?;
        match self.conn.recv()? {
            Msg::Sealed(s) => {
                if !s.notice.is_empty() {
                    tracing::warn!(target = %self.addr, "{}", s.notice);
                }
                Ok(Finished {
                    mode,
                    point: s.summary.point,
                    chain: s.summary.chain,
                    root: s.summary.root,
                    immutable: s.immutable && mode != CopyMode::Held,
                    expiry: s.expiry,
                    // The target's service reports the class its own policy gave the point.
                    retention: (mode != CopyMode::Held).then_some(s.summary.retention),
                })
            }
            m => Err(unexpected(m, "Sealed")),
        }
    }

    fn verify(&mut self, job: &str) -> Result<Vec<String>> {
        verify_on(&mut self.conn, job)
    }
}
