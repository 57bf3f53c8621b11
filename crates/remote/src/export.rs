//! Random access to a restore point held by a repository service: the [`PointBlocks`] of
//! [`bulwark_engine::PointImage`] over the network (`OpenExport`, `ExportMap`, `ReadBlocks`
//! in `docs/protocol.md`).
//!
//! The map arrives once, when the export opens; every block fetched later is checked against
//! its plain hash there (by [`bulwark_engine::decode_stored`]). An encrypted point's record
//! arrives before the map; [`bulwark_engine::Decrypting::remote`] over a [`RemotePoint`]
//! decrypts with the client's key. Several connections serve
//! reads at once (a client of the export keeps several requests in flight); one that fails is
//! dropped and the request is tried once more on a new connection (the service closes
//! sessions idle for longer than its idle timeout).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bulwark_engine::{Fetched, ImageError, PointBlocks};
use bulwark_format::{plain_len_of, BlockNo, MapEntry, PointId};
use bulwark_protocol::{Msg, PointSummary, MAX_READ_BLOCKS};

use crate::{Conn, RemoteAddr, RemoteError, Result};

/// Connections kept open for reads.
const POOL: usize = 4;

/// A restore point of the repository service, opened for random access.
pub struct RemotePoint {
    config_dir: PathBuf,
    addr: RemoteAddr,
    job: String,
    /// The point every connection opens (resolved once: `latest` must not move).
    pub summary: PointSummary,
    /// An encrypted point's record (the sessions of every file it reads), as the service sent
    /// it; `None` for a point that is not encrypted.
    pub encryption: Option<Vec<u8>>,
    map: Vec<MapEntry>,
    pool: Mutex<Vec<Conn>>,
}

/// What an export session opens with.
struct Opening {
    summary: PointSummary,
    encryption: Option<Vec<u8>>,
    map: Vec<MapEntry>,
}

/// Opens an export session on `conn` and reads the point's encryption record (when it is
/// encrypted), summary and map.
fn open_export(conn: &mut Conn, job: &str, point: Option<PointId>) -> Result<Opening> {
    conn.send(&Msg::OpenExport {
        job: job.to_string(),
        point,
    })?;
    let mut encryption = None;
    let (summary, n) = loop {
        match conn.recv()? {
            Msg::EncryptionRecord { record } if encryption.is_none() => encryption = Some(record),
            Msg::ExportReady { point, entries } => break (point, entries),
            m => return Err(m.unexpected("ExportReady").into()),
        }
    };
    bulwark_format::check_block_size(summary.block_size)
        .map_err(|e| RemoteError::Usage(format!("server announced a bad block size: {e}")))?;
    bulwark_format::check_disk_size(summary.disk_size)
        .map_err(|e| RemoteError::Usage(format!("server announced a bad disk size: {e}")))?;
    let nblocks = bulwark_format::block_count(summary.disk_size, summary.block_size);
    if n > nblocks {
        return Err(RemoteError::Usage(format!(
            "server announced {n} map entries for a disk of {nblocks} blocks"
        )));
    }
    let mut map: Vec<MapEntry> = Vec::with_capacity(n as usize);
    while (map.len() as u64) < n {
        let entries = match conn.recv()? {
            Msg::ExportMap { entries } => entries,
            m => return Err(m.unexpected("ExportMap").into()),
        };
        for (block, hash) in entries {
            if map.last().is_some_and(|e| e.block.0 >= block) || block >= nblocks {
                return Err(RemoteError::Usage(format!(
                    "server sent map entry {block} out of order or beyond the disk"
                )));
            }
            if map.len() as u64 >= n {
                return Err(RemoteError::Usage(
                    "server sent more map entries than announced".into(),
                ));
            }
            let b = BlockNo(block);
            map.push(MapEntry {
                block: b,
                file_ref: 0,
                flags: 0,
                offset: 0,
                stored_len: 0,
                plain_len: plain_len_of(b, summary.disk_size, summary.block_size),
                plain_hash: hash,
                stored_hash: hash,
            });
        }
    }
    Ok(Opening {
        summary,
        encryption,
        map,
    })
}

impl RemotePoint {
    /// Opens restore point `point` of `job` (the newest with `None`) on the service at `addr`.
    pub fn open(
        config_dir: &Path,
        addr: &RemoteAddr,
        job: &str,
        point: Option<PointId>,
    ) -> Result<RemotePoint> {
        let mut conn = Conn::session(config_dir, addr)?;
        let o = open_export(&mut conn, job, point)?;
        Ok(RemotePoint {
            config_dir: config_dir.to_path_buf(),
            addr: addr.clone(),
            job: job.to_string(),
            summary: o.summary,
            encryption: o.encryption,
            map: o.map,
            pool: Mutex::new(vec![conn]),
        })
    }

    fn connect(&self) -> Result<Conn> {
        let mut conn = Conn::session(&self.config_dir, &self.addr)?;
        let o = open_export(&mut conn, &self.job, Some(self.summary.point))?;
        if o.summary.root != self.summary.root
            || o.map.len() != self.map.len()
            || o.encryption != self.encryption
        {
            return Err(RemoteError::Usage(
                "the restore point changed between two connections".into(),
            ));
        }
        Ok(conn)
    }

    /// Map entries `first..first + count` (their block numbers ascending) on one connection.
    fn fetch_on(&self, conn: &mut Conn, first: usize, count: usize) -> Result<Vec<Fetched>> {
        let want = &self.map[first..first + count];
        let lo = want[0].block.0;
        let hi = want[count - 1].block.0 + 1;
        conn.send(&Msg::ReadBlocks {
            first: lo,
            count: (hi - lo) as u32,
        })?;
        let mut out = Vec::with_capacity(count);
        for e in want {
            let f = match conn.recv()? {
                Msg::Block(b) if b.block == e.block => Ok((b.own_entry(0), b.data.to_vec())),
                Msg::BlockUnavailable { block, message } if block == e.block.0 => {
                    Err(ImageError::Unavailable {
                        block,
                        reason: message,
                    })
                }
                Msg::Block(b) => {
                    return Err(RemoteError::Usage(format!(
                        "server sent block {} where block {} was due",
                        b.block.0, e.block.0
                    )))
                }
                m => return Err(m.unexpected("Block or BlockUnavailable").into()),
            };
            out.push(f);
        }
        Ok(out)
    }
}

impl PointBlocks for RemotePoint {
    fn disk_size(&self) -> u64 {
        self.summary.disk_size
    }
    fn block_size(&self) -> u32 {
        self.summary.block_size
    }
    fn map(&self) -> &[MapEntry] {
        &self.map
    }
    fn fetch(&self, first: usize, count: usize) -> Vec<Fetched> {
        let mut out = Vec::with_capacity(count);
        let end = (first + count).min(self.map.len());
        let mut at = first;
        while at < end {
            // One request covers at most MAX_READ_BLOCKS block numbers.
            let lo = self.map[at].block.0;
            let mut n = 1;
            while at + n < end && self.map[at + n].block.0 < lo + u64::from(MAX_READ_BLOCKS) {
                n += 1;
            }
            let mut last_err = String::new();
            let mut got = None;
            for _attempt in 0..2 {
                let conn = self.pool.lock().expect("pool lock").pop();
                let conn = match conn {
                    Some(c) => Ok(c),
                    None => self.connect(),
                };
                let mut conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        last_err = e.to_string();
                        continue;
                    }
                };
                match self.fetch_on(&mut conn, at, n) {
                    Ok(v) => {
                        let mut pool = self.pool.lock().expect("pool lock");
                        if pool.len() < POOL {
                            pool.push(conn);
                        }
                        got = Some(v);
                        break;
                    }
                    // This connection is spent (closed idle, or broken): try a new one.
                    Err(e) => last_err = e.to_string(),
                }
            }
            match got {
                Some(v) => out.extend(v),
                None => out.extend(self.map[at..at + n].iter().map(|e| {
                    Err(ImageError::Unavailable {
                        block: e.block.0,
                        reason: format!("the repository service did not answer: {last_err}"),
                    })
                })),
            }
            at += n;
        }
        out
    }
}
