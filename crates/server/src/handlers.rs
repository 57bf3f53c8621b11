//! The requests of a session. Each returns why the connection ended normally, or a [`Fail`]
//! that is sent to the client as an `Error` message and logged with more detail.

use std::net::IpAddr;
use std::time::Instant;

use bulwark_format::{
    check_block_size, check_disk_size, plain_len_of, validate_name, BlockNo, Digest, PointKind,
    PointMeta, StoredBlock,
};
use bulwark_protocol::{
    BackupReady, BackupRequest, DamagedPoint, ErrorCode, Msg, MsgType, PointSummary, ProtocolError,
    SealedInfo, VerifyReport, MAX_DAMAGED_BLOCKS, MAX_KNOWN_PER_FRAME, MAX_NET_BLOCK_SIZE,
    MAX_POINTS_PER_FRAME, PROTOCOL_VERSION,
};
use bulwark_repository::plan::compression_level_ok;
use bulwark_repository::{error_chain, ChainReader, NewPoint, NextPoint, PlanRequest, RepoError};

use crate::clients::Claim;
use crate::conn::Session;
use crate::limits;
use crate::receive::{self, log_limit, Receiving};
use crate::serve::State;
use crate::tokens::redeem;
use crate::{ClientRecord, ServerError};

/// Blocks read ahead of the network during a restore (each buffer holds a stored block, so
/// this bounds a restoring connection's memory: about (8 + 4) MiB with 1 MiB blocks).
const READ_AHEAD: usize = 8;
/// Threads reading one restore's blocks at once (direct reads wait for the device).
const RESTORE_READERS: usize = 4;
/// Most blocks one `Unchanged` frame may cover (bounds the work one frame causes).
const MAX_UNCHANGED_RUN: u64 = 1 << 24;

/// A block read for sending: its index in the map, the buffer and where its bytes are.
type ReadBlock = (usize, Vec<u8>, std::ops::Range<usize>);

/// A refusal: what the client is told, and what the log says.
pub(crate) struct Fail {
    pub code: ErrorCode,
    pub message: String,
    pub log: String,
}

impl Fail {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let message = message.into();
        Fail {
            code,
            log: message.clone(),
            message,
        }
    }
    fn logged(code: ErrorCode, message: impl Into<String>, log: impl Into<String>) -> Self {
        Fail {
            code,
            message: message.into(),
            log: log.into(),
        }
    }
}

impl From<ProtocolError> for Fail {
    fn from(e: ProtocolError) -> Self {
        let code = match &e {
            ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                ErrorCode::Timeout
            }
            e => e.code(),
        };
        Fail::new(code, e.to_string())
    }
}

impl From<RepoError> for Fail {
    fn from(e: RepoError) -> Self {
        let chain = error_chain(&e);
        match &e {
            RepoError::Busy(_) => Fail::new(ErrorCode::Busy, chain),
            RepoError::NoSuchJob(_) => Fail::new(ErrorCode::NoSuchJob, chain),
            RepoError::NoSuchPoint { .. } => Fail::new(ErrorCode::NoSuchPoint, chain),
            RepoError::Usage(m) => Fail::new(ErrorCode::Limit, m.clone()),
            RepoError::SealDelayed { .. } => Fail::new(ErrorCode::SealDelayed, e.to_string()),
            e if e.is_damage() => Fail::new(ErrorCode::Damaged, chain),
            e if e.is_no_space() => repository_full(chain),
            _ => Fail::logged(
                ErrorCode::Internal,
                "the repository failed; its log says why",
                chain,
            ),
        }
    }
}

/// The repository's filesystem is full: nothing of the request was kept.
fn repository_full(log: String) -> Fail {
    Fail::logged(
        ErrorCode::RepositoryFull,
        "the repository's filesystem is full (no space left on the server's disk); this restore \
         point was not kept. Ask the repository's administrator to free space or add capacity \
         (`bulwark-repo space` shows what uses it), then run the backup again",
        log,
    )
}

impl From<ServerError> for Fail {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Repo(r) => r.into(),
            ServerError::Protocol(p) => p.into(),
            ServerError::Io(ref io)
                if bulwark_sys::errno::is_no_space(io.source.raw_os_error()) =>
            {
                repository_full(error_chain(&e))
            }
            e => Fail::logged(
                ErrorCode::Internal,
                "the repository failed; its log says why",
                error_chain(&e),
            ),
        }
    }
}

type Outcome = std::result::Result<String, Fail>;

/// The result of a request's step: a refusal is a [`Fail`].
pub(crate) type Res<T = ()> = std::result::Result<T, Fail>;

/// The first exchange: `Hello` → `Welcome`.
fn hello(s: &mut Session, client: &str, state: &State) -> Res {
    s.recv()?;
    match s.msg()? {
        Msg::Hello { version, .. } if version == PROTOCOL_VERSION => {}
        Msg::Hello { version, .. } => {
            return Err(Fail::new(
                ErrorCode::Version,
                format!("protocol version {version} is not supported; this repository speaks {PROTOCOL_VERSION}"),
            ))
        }
        m => return Err(m.unexpected("Hello").into()),
    }
    s.send(&Msg::Welcome {
        version: PROTOCOL_VERSION,
        client: client.to_string(),
        server_unix: crate::now_unix(),
        repository: state.repo.config().id.clone(),
    })?;
    Ok(())
}

/// An enrollment session: one `Enroll` request.
pub(crate) fn enrollment(s: &mut Session, ip: IpAddr, state: &State) -> Outcome {
    hello(s, "", state)?;
    s.recv()?;
    let (token, csr) = match s.msg()? {
        Msg::Enroll { token, csr_der } => (token, csr_der),
        m => return Err(m.unexpected("Enroll").into()),
    };
    let allowed = state
        .limiter
        .lock()
        .map(|mut l| l.allow(ip, state.opts.enroll_per_minute, Instant::now()))
        .unwrap_or(false);
    if !allowed {
        return Err(Fail::new(
            ErrorCode::RateLimited,
            "too many enrollment attempts from this address; wait a minute",
        ));
    }
    let client = match redeem(&state.paths, &token, crate::now_unix())? {
        // The name was free when the token was issued (or --replace said a replacement is
        // meant); another token for it may have been used since: the name is checked again
        // now, so two unused tokens cannot make two machines the same client.
        Ok(t) if !t.replace && !state.registry.active(&t.client, crate::now_unix())?.is_empty() => {
            return Err(Fail::logged(
                ErrorCode::TokenRejected,
                format!(
                    "enrollment token rejected: client {:?} was enrolled by another machine after this token was issued; ask the repository administrator for a new token (`bulwark-repo enroll --replace` if this machine replaces that client)",
                    t.client
                ),
                format!(
                    "enrollment refused: client {} already has an active certificate and the token was not issued with --replace",
                    t.client
                ),
            ))
        }
        Ok(t) => t.client,
        Err(why) => {
            return Err(Fail::logged(
                ErrorCode::TokenRejected,
                "enrollment token rejected: it is wrong, already used or expired; ask the repository administrator for a new one (`bulwark-repo enroll`)",
                format!("enrollment refused: {why}"),
            ))
        }
    };
    let issued = crate::pki::issue_client_cert(&state.paths, &csr, &client).map_err(|e| {
        Fail::logged(
            ErrorCode::Malformed,
            "the certificate request is invalid",
            format!("bad CSR from enrolling client {client}: {e}"),
        )
    })?;
    let fp = bulwark_protocol::Fingerprint::of(&issued.der);
    state.registry.add(&ClientRecord {
        name: client.clone(),
        fingerprint: fp.to_hex(),
        serial: issued.serial,
        issued_unix: crate::now_unix(),
        not_after_unix: issued.not_after,
        revoked_unix: None,
    })?;
    let ca = crate::pki::load_cert(&state.paths.ca_cert())?;
    s.send(&Msg::Enrolled {
        client: client.clone(),
        cert_der: issued.der,
        ca_der: ca.to_vec(),
    })?;
    tracing::info!(%client, fingerprint = %fp, "enrolled a client");
    Ok(format!("enrolled client {client}"))
}

/// An authenticated session: requests until the client closes.
pub(crate) fn session(s: &mut Session, client: &str, state: &State) -> Outcome {
    hello(s, client, state)?;
    loop {
        match s.recv() {
            Ok(_) => {}
            Err(ProtocolError::Closed) => return Ok("client closed the session".into()),
            Err(e) => return Err(e.into()),
        }
        let ty = s.msg()?.ty();
        match ty {
            MsgType::ListJobs => list_jobs(s, client, state)?,
            MsgType::ListPoints => {
                let Msg::ListPoints { job } = s.msg()? else {
                    unreachable!()
                };
                list_points(s, client, state, &job)?
            }
            MsgType::BeginBackup => {
                let Msg::BeginBackup(req) = s.msg()? else {
                    unreachable!()
                };
                backup(s, client, state, req)?
            }
            MsgType::BeginRestore => {
                let Msg::BeginRestore { job, point } = s.msg()? else {
                    unreachable!()
                };
                restore(s, client, state, &job, point)?
            }
            MsgType::Verify => {
                let Msg::Verify { job } = s.msg()? else {
                    unreachable!()
                };
                verify(s, client, state, job)?
            }
            MsgType::CopyHeld | MsgType::CopyBegin | MsgType::CopyReadHead | MsgType::CopyRead => {
                let Msg::Copy(m) = s.msg()? else {
                    unreachable!()
                };
                crate::copy::request(s, client, state, m)?
            }
            MsgType::OpenExport => {
                let Msg::OpenExport { job, point } = s.msg()? else {
                    unreachable!()
                };
                crate::export::export(s, client, state, &job, point)?
            }
            MsgType::ListLocks => {
                let Msg::Locks(bulwark_protocol::LockMsg::List { job }) = s.msg()? else {
                    unreachable!()
                };
                crate::locks::list_locks(s, client, state, &job)?
            }
            _ => return Err(s.msg()?.unexpected("a request").into()),
        }
    }
}

pub(crate) fn check_job(job: &str) -> Res {
    validate_name("job", job).map_err(|e| Fail::new(ErrorCode::InvalidName, e.to_string()))
}

/// Refuses, as "no such job", any job the client does not own.
pub(crate) fn authorize_read(client: &str, state: &State, job: &str) -> Res {
    check_job(job)?;
    if state.registry.owner(&state.repo, job)?.as_deref() != Some(client) {
        return Err(Fail::logged(
            ErrorCode::NoSuchJob,
            format!("job {job:?} has no restore points of yours"),
            format!("client {client} asked for job {job:?}, which it does not own"),
        ));
    }
    Ok(())
}

fn owned_jobs(client: &str, state: &State) -> Res<Vec<String>> {
    let mut out = Vec::new();
    for job in state.repo.jobs()? {
        if state.registry.owner(&state.repo, &job)?.as_deref() == Some(client) {
            out.push(job);
        }
    }
    Ok(out)
}

pub(crate) fn summary(meta: &PointMeta, root: Digest, file_bytes: u64) -> PointSummary {
    PointSummary {
        point: meta.point,
        chain: meta.chain,
        parent: meta.parent,
        kind: meta.kind,
        retention: meta.retention,
        created_unix: meta.created_unix_secs,
        created_nanos: meta.created_nanos,
        disk_size: meta.disk_size,
        block_size: meta.block_size,
        file_bytes,
        stored_bytes: meta.stats.bytes_stored,
        new_bytes: meta.stats.bytes_new_plain,
        new_blocks: meta.stats.blocks_new,
        root,
        client: meta.client.clone(),
    }
}

fn list_jobs(s: &mut Session, client: &str, state: &State) -> Res {
    let mut jobs = owned_jobs(client, state)?;
    jobs.truncate(bulwark_protocol::MAX_JOBS);
    s.send(&Msg::Jobs { jobs })?;
    Ok(())
}

fn list_points(s: &mut Session, client: &str, state: &State, job: &str) -> Res {
    authorize_read(client, state, job)?;
    let scan = state.repo.scan_job(job)?;
    let all: Vec<PointSummary> = scan
        .points
        .iter()
        .map(|p| summary(&p.meta, p.root, p.file_size))
        .collect();
    send_pages(s, &all, MAX_POINTS_PER_FRAME, |last, points| Msg::Points {
        last,
        points,
    })
}

/// Sends `all` in pages of at most `per_page` items, the last page marked (an empty list is
/// one empty last page).
pub(crate) fn send_pages<T: Clone>(
    s: &mut Session,
    all: &[T],
    per_page: usize,
    page: impl Fn(bool, Vec<T>) -> Msg<'static>,
) -> Res {
    let mut pages = all.chunks(per_page).peekable();
    if pages.peek().is_none() {
        s.send(&page(true, vec![]))?;
    }
    while let Some(p) = pages.next() {
        s.send(&page(pages.peek().is_none(), p.to_vec()))?;
    }
    Ok(())
}

/// Opens one of the client's own points to send it (restore, export) and sends an encrypted
/// point's record (the sessions of every file it reads) before anything else, so a client
/// holding the key can decrypt; the server needs no key. Returns the point's reader and its
/// summary, for the caller's `…Ready` message.
pub(crate) fn open_for_sending(
    s: &mut Session,
    client: &str,
    state: &State,
    job: &str,
    point: Option<bulwark_format::PointId>,
) -> Res<(ChainReader, PointSummary)> {
    authorize_read(client, state, job)?;
    let chain = state.repo.open_point(job, point)?;
    let r = chain.point();
    check_net_block_size(r.meta.block_size)?;
    let file_bytes = r.file().metadata().map(|m| m.len()).unwrap_or(0);
    if let Some(record) = chain.merged_encryption_record()? {
        s.send(&Msg::EncryptionRecord { record })?;
    }
    let summary = summary(&r.meta, r.trailer.root_digest, file_bytes);
    Ok((chain, summary))
}

/// A block size the network carries: the format's bounds and at most one `Block` frame.
pub(crate) fn check_net_block_size(block_size: u32) -> Res {
    check_block_size(block_size).map_err(|e| Fail::new(ErrorCode::Usage, e.to_string()))?;
    if block_size > MAX_NET_BLOCK_SIZE {
        return Err(Fail::new(
            ErrorCode::Usage,
            format!(
                "block size {} KiB is larger than the {} KiB the network carries; use a block size of at most 4M, or back up or restore this chain locally on the repository host",
                block_size / 1024,
                MAX_NET_BLOCK_SIZE / 1024
            ),
        ));
    }
    Ok(())
}

/// What `BeginBackup` must satisfy before anything is claimed or written.
fn check_begin(req: &BackupRequest) -> Res {
    check_job(&req.job)?;
    check_disk_size(req.disk_size).map_err(|e| Fail::new(ErrorCode::Usage, e.to_string()))?;
    if req.block_size != 0 {
        check_net_block_size(req.block_size)?;
    }
    if !compression_level_ok(req.compression_level) {
        return Err(Fail::new(
            ErrorCode::Usage,
            "compression level out of range (-7 to 19)",
        ));
    }
    Ok(())
}

fn backup(s: &mut Session, client: &str, state: &State, req: BackupRequest) -> Res {
    check_begin(&req)?;
    let not_yours = || {
        Fail::logged(
            ErrorCode::Unauthorized,
            format!("job {:?} belongs to another client (or was written locally); choose another job name", req.job),
            format!("client {client} tried to back up job {:?}, which it does not own", req.job),
        )
    };
    let start = receive::start(state, client, &req.job, &not_yours)?;
    // Declared before the builder, so dropped after it (and after its job lock): a backup
    // that ends without a restore point gives the job name back.
    let (claim, _claim) = receive::claim(state, &req.job, client, &not_yours)?;
    if claim == Claim::New {
        // Claims racing on other connections count too: recount with ours made.
        let now = limits::held(&state.repo, &state.registry, client, crate::now_unix())?;
        if now.day_jobs > start.lim.new_jobs_per_day {
            let f = limits::check_start(client, &start.held, &start.lim, true)
                .err()
                .unwrap_or_else(|| Fail::new(ErrorCode::Limit, "too many new jobs at once"));
            log_limit(client, &f);
            return Err(f);
        }
    }
    let mut receiving = Receiving::new(state, client, start);
    // The same rule as a local backup: `bulwark_repository::plan`.
    let NextPoint { plan, parent } = state.repo.next_point(
        &req.job,
        &PlanRequest {
            disk_size: req.disk_size,
            block_size: (req.block_size != 0).then_some(req.block_size),
            force_full: req.force_full,
        },
    )?;
    let block_size = plan.block_size;
    check_net_block_size(block_size)?;
    let known: Vec<(u64, Digest)> = parent
        .as_ref()
        .map(|p| {
            p.entries
                .iter()
                .map(|e| (e.block.0, e.plain_hash))
                .collect()
        })
        .unwrap_or_default();
    let parent_ids = parent.as_ref().map(|p| (p.point, p.chain));
    let span = tracing::info_span!("backup", job = %req.job);
    let _e = span.enter();
    let mut builder = state.repo.begin_point(NewPoint {
        job: req.job.clone(),
        parent,
        disk_size: req.disk_size,
        block_size,
        compression_level: req.compression_level,
        client: client.to_string(),
        full_kind: PointKind::ActiveFull,
    })?;
    let meta_kind = builder.kind();
    let ready = BackupReady {
        point: builder.point(),
        chain: parent_ids.map_or(builder.point(), |(_, c)| c),
        parent: parent_ids.map_or(bulwark_format::PointId::NONE, |(p, _)| p),
        kind: meta_kind,
        block_size,
        known: known.len() as u64,
        full_reason: plan.reason.full_reason().unwrap_or_default(),
    };
    s.send(&Msg::BackupReady(ready))?;
    for chunk in known.chunks(MAX_KNOWN_PER_FRAME) {
        s.send(&Msg::Known {
            entries: chunk.to_vec(),
        })?;
    }
    let nblocks = bulwark_format::block_count(req.disk_size, block_size);
    let mut next = 0u64; // lowest block number still allowed
    let mut received = 0u64;
    let started = Instant::now();
    // Encryption (docs/encryption.md): the server checks the record's form and that every
    // block agrees with it; it never holds a key.
    let parent_extension = |tag| -> Res<Option<Vec<u8>>> {
        Ok(match parent_ids {
            Some((p, _)) => state
                .repo
                .open_point(&req.job, Some(p))?
                .point()
                .meta
                .extension(tag)
                .map(<[u8]>::to_vec),
            None => None,
        })
    };
    let parent_record = parent_extension(bulwark_format::EXT_ENCRYPTION)?;
    // A job is encrypted from its newest readable point on: a plain backup is refused also
    // when it starts a new chain (`--full`, another disk or block size, a damaged newest point).
    let job_record = state.repo.job_encryption(&req.job)?;
    // The parent's changed-block tracking record, for a client reading a live disk
    // (docs/sources.md); the new point's arrives in a `Cbt` message.
    let parent_cbt = parent_extension(bulwark_format::EXT_CBT_SOURCE)?;
    let mut cbt_set = false;
    let mut encrypted: Option<bool> = None;
    loop {
        s.recv()?;
        let first_data = encrypted.is_none()
            && matches!(
                s.msg()?,
                Msg::Block(_) | Msg::Unchanged { .. } | Msg::Finish { .. }
            );
        if first_data {
            if let Some(why) = job_record.plain_refusal(&req.job) {
                return Err(Fail::new(ErrorCode::Usage, why));
            }
            encrypted = Some(false);
        }
        match s.msg()? {
            Msg::GetParentCbt => {
                s.send(&Msg::ParentCbt {
                    record: parent_cbt.clone().unwrap_or_default(),
                })?;
            }
            Msg::Cbt { record } if !cbt_set && !record.is_empty() => {
                builder
                    .set_extension(bulwark_format::EXT_CBT_SOURCE, record)
                    .map_err(|e| Fail::new(ErrorCode::Malformed, error_chain(&e)))?;
                cbt_set = true;
            }
            Msg::GetParentEncryption => {
                s.send(&Msg::EncryptionRecord {
                    record: parent_record.clone().unwrap_or_default(),
                })?;
            }
            Msg::Encryption { record } if encrypted.is_none() => {
                let rec = bulwark_format::EncryptionRecord::decode(&record)
                    .map_err(|e| Fail::new(ErrorCode::Malformed, e.to_string()))?;
                if parent_ids.is_some() {
                    let same = parent_record
                        .as_deref()
                        .and_then(|r| bulwark_format::EncryptionRecord::decode(r).ok())
                        .is_some_and(|p| p.mode == rec.mode && p.key_id == rec.key_id);
                    if !same {
                        return Err(Fail::new(
                            ErrorCode::Usage,
                            "the chain is not encrypted with this key: start a new chain (--full)",
                        ));
                    }
                }
                builder
                    .set_extension(bulwark_format::EXT_ENCRYPTION, record)
                    .map_err(|e| Fail::new(ErrorCode::Malformed, error_chain(&e)))?;
                encrypted = Some(true);
            }
            Msg::Block(b) if Some(b.codec.is_encrypted()) != encrypted => {
                return Err(Fail::new(
                    ErrorCode::Malformed,
                    format!(
                        "block {}: an encrypted point holds only encrypted blocks, and only it holds them",
                        b.block.0
                    ),
                ));
            }
            Msg::Block(b) => {
                if b.block.0 < next || b.block.0 >= nblocks {
                    return Err(Fail::new(
                        ErrorCode::OutOfOrder,
                        format!("block {} out of order or beyond the disk", b.block.0),
                    ));
                }
                if b.plain_len != plain_len_of(b.block, req.disk_size, block_size) {
                    return Err(Fail::new(
                        ErrorCode::Malformed,
                        format!("block {}: wrong plain length", b.block.0),
                    ));
                }
                // TLS protects the bytes in transit; this catches a client that lies or errs.
                if Digest::of(b.data) != b.stored_hash {
                    return Err(Fail::new(
                        ErrorCode::Malformed,
                        format!("block {}: stored bytes do not match their hash", b.block.0),
                    ));
                }
                receiving.add(b.data.len() as u64)?;
                builder.put_stored(b)?;
                next = b.block.0 + 1;
                received += 1;
            }
            Msg::Unchanged { first, count } => {
                let end = first.checked_add(count).filter(|e| *e <= nblocks);
                let Some(end) = end.filter(|_| first >= next && count <= MAX_UNCHANGED_RUN) else {
                    return Err(Fail::new(
                        ErrorCode::OutOfOrder,
                        "unchanged run out of order or beyond the disk",
                    ));
                };
                for b in first..end {
                    builder
                        .put_unchanged(BlockNo(b))
                        .map_err(|e| Fail::new(ErrorCode::Malformed, error_chain(&e)))?;
                }
                next = end;
                received += count;
            }
            Msg::Finish { blocks } => {
                receive::check_finish(blocks, received)?;
                break;
            }
            m => {
                return Err(m
                    .unexpected("Block, Unchanged, Finish, GetParentEncryption, Encryption, GetParentCbt or Cbt (once)")
                    .into())
            }
        }
    }
    let sealed = builder.finish();
    // A point that was written (sealed, or waiting to be) is in the files now.
    receiving.finished = matches!(&sealed, Ok(_) | Err(RepoError::SealDelayed { .. }));
    let sealed = sealed?;
    let file_bytes = std::fs::metadata(&sealed.path)
        .map(|m| m.len())
        .unwrap_or(0);
    tracing::info!(
        point = %sealed.meta.point,
        kind = sealed.meta.kind.as_str(),
        blocks = received,
        stored = sealed.meta.stats.bytes_stored,
        secs = started.elapsed().as_secs_f64(),
        "restore point sealed"
    );
    s.send(&Msg::Sealed(SealedInfo {
        summary: summary(&sealed.meta, sealed.root, file_bytes),
        immutable: sealed.immutable,
        expiry: sealed.expiry,
        notice: state.repo.clock_alert().unwrap_or_default(),
    }))?;
    Ok(())
}

fn restore(
    s: &mut Session,
    client: &str,
    state: &State,
    job: &str,
    point: Option<bulwark_format::PointId>,
) -> Res {
    let (chain, point) = open_for_sending(s, client, state, job, point)?;
    let r = chain.point();
    let entries = chain.entries();
    s.send(&Msg::RestoreReady {
        point,
        blocks: entries.len() as u64,
    })?;
    tracing::info!(%job, point = %r.meta.point, blocks = entries.len(), "restore started");
    // Reader threads keep disk reads ahead of encryption and sending. They read with direct
    // I/O (no copy through the page cache, which a restore would otherwise sweep), so several
    // read at once to keep the device busy: reader k reads the blocks k, k + READERS, ...
    // and the sender takes them back in order.
    let direct = chain.direct();
    let per_reader = (READ_AHEAD / RESTORE_READERS).max(1);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..RESTORE_READERS)
        .map(|_| crossbeam_channel::bounded::<std::result::Result<ReadBlock, Fail>>(per_reader))
        .unzip();
    // The sender waits for one reader while the others may each hold a full channel and a
    // buffer in hand: the pool must leave that reader a buffer, or the restore would stall.
    let pool = READ_AHEAD + RESTORE_READERS;
    const _: () = assert!(
        (RESTORE_READERS - 1) * (READ_AHEAD / RESTORE_READERS + 1) < READ_AHEAD + RESTORE_READERS
    );
    let (free_tx, free_rx) = crossbeam_channel::bounded::<Vec<u8>>(pool);
    for _ in 0..pool {
        free_tx.send(Vec::new()).expect("pool fits");
    }
    std::thread::scope(|sc| -> Res {
        for (k, tx) in txs.into_iter().enumerate() {
            let (direct, free_rx) = (&direct, free_rx.clone());
            sc.spawn(move || {
                for (i, e) in entries.iter().enumerate().skip(k).step_by(RESTORE_READERS) {
                    let Ok(mut buf) = free_rx.recv() else { return };
                    let r = direct
                        .read(e, &mut buf)
                        .map(|at| (i, buf, at))
                        .map_err(Fail::from);
                    let stop = r.is_err();
                    if tx.send(r).is_err() || stop {
                        return;
                    }
                }
            });
        }
        drop(free_rx);
        // Moved in, so that an early return drops the channels and the readers stop.
        let (rxs, free_tx) = (rxs, free_tx);
        for (i, e) in entries.iter().enumerate() {
            let Ok(item) = rxs[i % RESTORE_READERS].recv() else {
                return Err(Fail::new(ErrorCode::Internal, "a block reader stopped"));
            };
            let (j, buf, at) = item?;
            debug_assert_eq!(i, j);
            s.send(&Msg::Block(StoredBlock::of_entry(e, &buf[at])))?;
            let _ = free_tx.send(buf);
        }
        Ok(())
    })?;
    s.send(&Msg::RestoreEnd {
        blocks: entries.len() as u64,
    })?;
    Ok(())
}

fn verify(s: &mut Session, client: &str, state: &State, job: Option<String>) -> Res {
    let jobs = match job {
        Some(j) => {
            authorize_read(client, state, &j)?;
            vec![j]
        }
        None => owned_jobs(client, state)?,
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut out = VerifyReport::default();
    for j in &jobs {
        let r = state.repo.verify(Some(j), threads, &|_| {})?;
        out.points_checked += r.points_checked;
        out.blocks_checked += r.blocks_checked;
        out.bytes_checked += r.bytes_checked;
        for d in r.damaged.into_iter().take(1024) {
            let more = d.blocks.len().saturating_sub(MAX_DAMAGED_BLOCKS) as u64;
            out.damaged.push(DamagedPoint {
                job: d.job,
                point: d.point,
                problems: d.problems.into_iter().take(16).collect(),
                blocks: d.blocks.into_iter().take(MAX_DAMAGED_BLOCKS).collect(),
                more_blocks: more,
            });
        }
    }
    s.send(&Msg::VerifyReport(out))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(disk_size: u64, block_size: u32) -> BackupRequest {
        BackupRequest {
            job: "vm-1".into(),
            disk_size,
            block_size,
            compression_level: 3,
            force_full: false,
        }
    }

    #[test]
    fn begin_backup_refuses_a_disk_over_1_pib_and_blocks_over_the_frame_limit() {
        for ok in [
            begin(0, 0),
            begin(1 << 30, 0),
            begin(bulwark_format::MAX_DISK_SIZE, 1 << 20),
            begin(1 << 40, MAX_NET_BLOCK_SIZE),
        ] {
            if let Err(f) = check_begin(&ok) {
                panic!("refused: {}", f.message);
            }
        }
        // The 1 EiB all-zero full of issue 13, and one byte past the bound.
        for size in [1u64 << 60, bulwark_format::MAX_DISK_SIZE + 1, u64::MAX] {
            let f = check_begin(&begin(size, 0)).unwrap_err();
            assert_eq!(f.code, ErrorCode::Usage);
            assert!(f.message.contains("1 PiB"), "{}", f.message);
        }
        // The format allows 16 MiB blocks; one Block frame carries 4 MiB.
        let f = check_begin(&begin(1 << 30, 8 << 20)).unwrap_err();
        assert_eq!(f.code, ErrorCode::Usage);
        assert!(f.message.contains("at most 4M"), "{}", f.message);
        assert!(check_begin(&begin(1 << 30, 3 << 20)).is_err());
    }

    #[test]
    fn full_disk_and_delayed_seal_become_their_own_error_codes() {
        let full = RepoError::Io(bulwark_format::FileIoError {
            path: "/r/incoming/x".into(),
            action: "writing",
            source: std::io::Error::from_raw_os_error(bulwark_sys::errno::ENOSPC),
        });
        let f = Fail::from(full);
        assert_eq!(f.code, ErrorCode::RepositoryFull);
        assert!(f.message.contains("free space"), "{}", f.message);
        let delayed = RepoError::SealDelayed {
            point: bulwark_format::PointId::new(1, [0; 8]),
            sealed: Some(false),
            why: "timed out".into(),
        };
        let f = Fail::from(delayed);
        assert_eq!(f.code, ErrorCode::SealDelayed);
        assert!(f.message.contains("NOT sealed yet"), "{}", f.message);
        let f = Fail::from(RepoError::Usage("flood".into()));
        assert_eq!(f.code, ErrorCode::Limit);
    }
}
