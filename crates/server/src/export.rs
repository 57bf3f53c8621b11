//! Random access to a restore point over the network (instant access, `docs/protocol.md`
//! "Export"): `OpenExport` opens one of the client's own points (authorised exactly as a
//! restore), the server sends its block map, then answers `ReadBlocks` requests with the
//! stored bytes of the mapped blocks until the client closes the session. The client checks
//! every block against the map's hashes; the server sends stored bytes as they are on disk.
//! An encrypted point's record (the sessions of every file it reads) goes first, so a client
//! holding the key can decrypt; the server needs no key.

use bulwark_format::{MapEntry, PointId, StoredBlock};
use bulwark_protocol::{Msg, ProtocolError, MAX_MAP_PER_FRAME};

use crate::conn::Session;
use crate::handlers::{open_for_sending, Fail};
use crate::serve::State;

/// Serves an export of `job`'s point `point` until the client closes the session.
pub(crate) fn export(
    s: &mut Session,
    client: &str,
    state: &State,
    job: &str,
    point: Option<PointId>,
) -> Result<(), Fail> {
    let (chain, point) = open_for_sending(s, client, state, job, point)?;
    let r = chain.point();
    let map = chain.entries();
    s.send(&Msg::ExportReady {
        point,
        entries: map.len() as u64,
    })?;
    for page in map.chunks(MAX_MAP_PER_FRAME) {
        s.send(&Msg::ExportMap {
            entries: page.iter().map(|e| (e.block.0, e.plain_hash)).collect(),
        })?;
    }
    tracing::info!(%job, point = %r.meta.point, blocks = map.len(), "export opened");
    let mut buf = Vec::new();
    loop {
        match s.recv() {
            Ok(_) => {}
            Err(ProtocolError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let (first, count) = match s.msg()? {
            Msg::ReadBlocks { first, count } => (first, count),
            m => return Err(m.unexpected("ReadBlocks").into()),
        };
        let end = first.saturating_add(u64::from(count));
        let from = map.partition_point(|e| e.block.0 < first);
        let to = map.partition_point(|e| e.block.0 < end);
        for e in &map[from..to] {
            let local = MapEntry { file_ref: 0, ..*e };
            match chain.file_of(e).read_stored(&local, &mut buf) {
                Ok(stored) => s.send(&Msg::Block(StoredBlock::of_entry(e, stored)))?,
                Err(err) => {
                    tracing::warn!(%job, block = e.block.0, "export: cannot read a block: {err}");
                    s.send(&Msg::BlockUnavailable {
                        block: e.block.0,
                        message: format!(
                            "the repository could not read block {}: {err}",
                            e.block.0
                        ),
                    })?
                }
            }
        }
    }
}
