//! Copy requests (`bulwark copy`, messages 0x60–0x6F, `docs/protocol.md` "Copies").
//!
//! Pushing into this repository follows the rules of a backup: the job belongs to the client
//! that first wrote it, the client's limits apply to the bytes received, and the point is
//! written and sealed by the repository (`Repository::begin_copy`): verbatim with its root
//! digest, or re-chained, always with this repository's own period counted from now. No
//! message names an expiry, a retention class or anything to delete. Pulling from this
//! repository reads the client's own jobs only.

use bulwark_format::{BlockNo, Digest, MapEntry, PointId, StoredBlock, Trailer};
use bulwark_protocol::{
    CopyBegin, CopyMsg, CopyPlanMsg, ErrorCode, HeldEntry, Msg, SealedInfo, MAX_HELD_PER_FRAME,
    MAX_MAP_ENTRIES_PER_FRAME, MAX_NEED_PER_FRAME,
};
use bulwark_repository::{error_chain, CopyHead, CopyMode, RepoError};

use crate::conn::Session;
use crate::handlers::{authorize_read, check_job, send_pages, summary, Fail, Res};
use crate::receive::{self, Receiving};
use crate::serve::State;

/// Most map entries a copy over the network carries (a 4 TiB disk in 1 MiB blocks); larger
/// points are copied between local folders.
const MAX_NET_MAP_ENTRIES: u64 = 1 << 22;

/// One copy request, already received (`Msg::Copy`).
pub(crate) fn request(s: &mut Session, client: &str, state: &State, m: CopyMsg) -> Res {
    match m {
        CopyMsg::Held { job } => held(s, client, state, &job),
        CopyMsg::Begin(b) => receive(s, client, state, b),
        CopyMsg::ReadHead { job, point } => read_head(s, client, state, &job, point),
        CopyMsg::Read { job, point, count } => read_blocks(s, client, state, &job, point, count),
        m => Err(Fail::new(
            ErrorCode::OutOfOrder,
            format!("{:?} is not a request", m.ty()),
        )),
    }
}

fn repo_fail(e: RepoError) -> Fail {
    Fail::from(e)
}

/// The job's owner, refusing a job another client owns as if it did not exist.
fn owned_or_free(client: &str, state: &State, job: &str) -> Res<bool> {
    check_job(job)?;
    match state.registry.owner(&state.repo, job)? {
        Some(o) if o == client => Ok(true),
        None if state
            .repo
            .scan_job(job)
            .map_err(repo_fail)?
            .points
            .is_empty() =>
        {
            Ok(false)
        }
        _ => Err(Fail::new(
            ErrorCode::NoSuchJob,
            format!("job {job:?} has no restore points of yours"),
        )),
    }
}

fn held(s: &mut Session, client: &str, state: &State, job: &str) -> Res {
    let points = if owned_or_free(client, state, job)? {
        state.repo.held_points(job).map_err(repo_fail)?
    } else {
        vec![]
    };
    let all: Vec<HeldEntry> = points
        .into_iter()
        .map(|h| HeldEntry {
            point: h.point,
            chain: h.chain,
            root: h.root,
            created: h.created,
            origin: h.origin,
        })
        .collect();
    send_pages(s, &all, MAX_HELD_PER_FRAME, |last, points| {
        Msg::Copy(CopyMsg::HeldList { last, points })
    })
}

/// Receives the map of a point whose header, trailer and metadata arrived in `b`.
fn receive_map(s: &mut Session, b: &CopyBegin) -> Res<Vec<MapEntry>> {
    let t = Trailer::decode(&b.trailer)
        .map_err(|e| Fail::new(ErrorCode::Malformed, format!("copied trailer: {e}")))?;
    if t.map_count > MAX_NET_MAP_ENTRIES {
        return Err(Fail::new(
            ErrorCode::Usage,
            format!(
                "the point has {} map entries, more than the {MAX_NET_MAP_ENTRIES} a copy over the network carries; copy it between local folders",
                t.map_count
            ),
        ));
    }
    // Grown as entries arrive: a trailer's count alone reserves nothing.
    let mut map = Vec::new();
    while (map.len() as u64) < t.map_count {
        s.recv()?;
        match s.msg()? {
            Msg::Copy(CopyMsg::Map { entries }) => {
                if map.len() as u64 + entries.len() as u64 > t.map_count {
                    return Err(Fail::new(
                        ErrorCode::Malformed,
                        "more map entries than the trailer says",
                    ));
                }
                map.extend(entries);
            }
            m => return Err(m.unexpected("CopyMap").into()),
        }
    }
    Ok(map)
}

/// A point pushed into this repository.
fn receive(s: &mut Session, client: &str, state: &State, b: CopyBegin) -> Res {
    let job = b.job.clone();
    check_job(&job)?;
    let not_yours = || {
        Fail {
            code: ErrorCode::Unauthorized,
            message: format!("job {job:?} belongs to another client (or was written locally); copy into another job name"),
            log: format!("client {client} tried to copy into job {job:?}, which it does not own"),
        }
    };
    let start = receive::start(state, client, &job, &not_yours)?;
    let map = receive_map(s, &b)?;
    let (_, _claim) = receive::claim(state, &job, client, &not_yours)?;
    let head = CopyHead {
        header: b.header,
        trailer: b.trailer,
        meta: b.meta,
        map,
    };
    let span = tracing::info_span!("copy", %job);
    let _e = span.enter();
    let mut rx = state.repo.begin_copy(&job, &head).map_err(repo_fail)?;
    let plan = rx.plan().clone();
    s.send(&Msg::Copy(CopyMsg::Plan(CopyPlanMsg {
        mode: plan.mode.code(),
        needed: plan.needed.len() as u64,
        resumed_bytes: plan.resumed_bytes,
        local_bytes: plan.local_bytes,
    })))?;
    for chunk in plan.needed.chunks(MAX_NEED_PER_FRAME) {
        s.send(&Msg::Copy(CopyMsg::Need {
            blocks: chunk.iter().map(|b| b.0).collect(),
        }))?;
    }
    let mut receiving = Receiving::new(state, client, start);
    let mut received = 0u64;
    loop {
        s.recv()?;
        match s.msg()? {
            Msg::Block(blk) => {
                receiving.add(blk.data.len() as u64)?;
                rx.put(blk.block, blk.data).map_err(|e| {
                    // A full filesystem is not the client's fault (the receiver removed the
                    // partial copy): say so, as for backups.
                    if e.is_no_space() {
                        repo_fail(e)
                    } else {
                        Fail::new(ErrorCode::Malformed, error_chain(&e))
                    }
                })?;
                received += 1;
            }
            Msg::Finish { blocks } => {
                receive::check_finish(blocks, received)?;
                break;
            }
            m => return Err(m.unexpected("Block or Finish").into()),
        }
    }
    let done = rx.finish(&state.repo);
    receiving.finished = matches!(&done, Ok(_) | Err(RepoError::SealDelayed { .. }));
    let done = done.map_err(repo_fail)?;
    let (meta, root, immutable, expiry, path) = match &done.sealed {
        Some(sp) => (
            sp.meta.clone(),
            sp.root,
            sp.immutable,
            sp.expiry,
            sp.path.clone(),
        ),
        None => {
            let head = state.repo.copy_head(&job, done.point).map_err(repo_fail)?;
            let (_, t, meta) = head.decode().map_err(repo_fail)?;
            let path = state.repo.point_path(&job, meta.chain, meta.point);
            (meta, t.root_digest, false, None, path)
        }
    };
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(point = %meta.point, mode = done.mode.as_str(), bytes = done.bytes_received, "copied restore point sealed");
    let mode_held = done.mode == CopyMode::Held;
    // The class this repository's policy gave the point, not the one the source recorded in
    // a verbatim copy's file (docs/copy-jobs.md, "Retention classes on the target").
    let mut summary = summary(&meta, root, file_bytes);
    summary.retention = done.retention.unwrap_or(summary.retention);
    s.send(&Msg::Sealed(SealedInfo {
        summary,
        immutable: immutable || mode_held,
        expiry,
        notice: state.repo.clock_alert().unwrap_or_default(),
    }))?;
    Ok(())
}

fn read_head(s: &mut Session, client: &str, state: &State, job: &str, point: PointId) -> Res {
    authorize_read(client, state, job)?;
    let head = state.repo.copy_head(job, point).map_err(repo_fail)?;
    s.send(&Msg::Copy(CopyMsg::Begin(CopyBegin {
        job: job.to_string(),
        header: head.header,
        trailer: head.trailer,
        meta: head.meta,
    })))?;
    for chunk in head.map.chunks(MAX_MAP_ENTRIES_PER_FRAME) {
        s.send(&Msg::Copy(CopyMsg::Map {
            entries: chunk.to_vec(),
        }))?;
    }
    Ok(())
}

fn read_blocks(
    s: &mut Session,
    client: &str,
    state: &State,
    job: &str,
    point: PointId,
    count: u64,
) -> Res {
    authorize_read(client, state, job)?;
    let chain = state.repo.open_point(job, Some(point)).map_err(repo_fail)?;
    if count > chain.entries().len() as u64 {
        return Err(Fail::new(
            ErrorCode::Usage,
            format!(
                "{count} blocks asked of a point with {}",
                chain.entries().len()
            ),
        ));
    }
    let mut blocks: Vec<BlockNo> = Vec::with_capacity(count as usize);
    while (blocks.len() as u64) < count {
        s.recv()?;
        match s.msg()? {
            Msg::Copy(CopyMsg::Need { blocks: b }) => {
                if blocks.len() as u64 + b.len() as u64 > count {
                    return Err(Fail::new(
                        ErrorCode::Malformed,
                        "more block numbers than announced",
                    ));
                }
                blocks.extend(b.into_iter().map(BlockNo));
            }
            m => return Err(m.unexpected("CopyNeed").into()),
        }
    }
    let mut buf = Vec::new();
    for b in &blocks {
        let i = chain
            .entries()
            .binary_search_by_key(b, |e| e.block)
            .map_err(|_| {
                Fail::new(
                    ErrorCode::NoSuchPoint,
                    format!("block {b} is not in restore point {point}"),
                )
            })?;
        let e = chain.entries()[i];
        let file = chain.file_of(&e);
        let own = MapEntry { file_ref: 0, ..e };
        let data = file
            .read_stored(&own, &mut buf)
            .map_err(|e| Fail::new(ErrorCode::Damaged, e.to_string()))?;
        if Digest::of(data) != e.stored_hash {
            return Err(Fail::new(
                ErrorCode::Damaged,
                format!("block {b} of restore point {point} is damaged on the source; run `bulwark-repo verify` there"),
            ));
        }
        s.send(&Msg::Block(StoredBlock::of_entry(&e, data)))?;
    }
    s.send(&Msg::RestoreEnd { blocks: count })?;
    Ok(())
}
