//! Encrypted backups and restores (docs/encryption.md).
//!
//! A backup hashes every block with the keyed change-detection hash instead of plain BLAKE3,
//! compresses it as usual and seals the result in [`EncryptingSink`], so the repository and
//! the network only ever see ciphertext. Reading decrypts per file of the chain with
//! [`Decryptor`], which unwraps each file's data keys once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bulwark_crypto::{
    associated_data, unwrap_symmetric, unwrap_x25519, wrap_symmetric, wrap_x25519, BlockKey,
    KeyFile, KeyKind, PublicKeyFile, Secret, SessionSealer,
};
use bulwark_format::{
    BlockDecoder, BlockNo, ChangeKey, Codec, Digest, EncryptionRecord, KeyMode, MapEntry, PointId,
    PointKind, PointMeta, Session, StoredBlock, EXT_ENCRYPTION,
};
use bulwark_repository::{
    ChainReader, NextPoint, ParentMap, PlanRequest, PointBuilder, Repository,
};

use crate::backup::{
    begin_local, plan_plain, run_input_pipeline, BackupOptions, BackupSummary, BlockSink, Counters,
    KnownHashes,
};
use crate::input::Input;
use crate::restore::{RestoreOptions, RestoreSummary};
use crate::{EngineError, Result, Source};

/// The key a backup writes with.
pub enum WriteKey {
    /// A symmetric key file (backs up and restores).
    Symmetric(KeyFile),
    /// A write-only client's public key: it can add points but never read one.
    Public(PublicKeyFile),
}

impl WriteKey {
    fn mode(&self) -> KeyMode {
        match self {
            WriteKey::Symmetric(_) => KeyMode::Symmetric,
            WriteKey::Public(_) => KeyMode::WriteOnly,
        }
    }
}

fn usage(e: impl std::fmt::Display) -> EngineError {
    EngineError::Usage(e.to_string())
}

/// The encryption record of restore point `meta`, if it is encrypted.
pub fn record_of(meta: &PointMeta) -> Result<Option<EncryptionRecord>> {
    meta.extension(EXT_ENCRYPTION)
        .map(EncryptionRecord::decode)
        .transpose()
        .map_err(usage)
}

/// The parent's encryption record (`None` when the parent is not encrypted).
fn parent_record(
    repo: &Repository,
    job: &str,
    parent: &ParentMap,
) -> Result<Option<EncryptionRecord>> {
    let chain = repo.open_point(job, Some(parent.point))?;
    record_of(&chain.point().meta)
}

/// Refuses an unencrypted backup of a job whose newest readable point is encrypted, whether
/// the backup would continue its chain or start a new one: a backup is never silently made
/// unencrypted. (To stop encrypting a disk, back it up under a new job name.)
pub fn refuse_plain_after_encrypted(repo: &Repository, job: &str) -> Result<()> {
    match repo.job_encryption(job)?.plain_refusal(job) {
        Some(why) => Err(EngineError::Usage(why)),
        None => Ok(()),
    }
}

/// What a new point's encryption is: the session that seals its blocks, the change-detection
/// key, and the record for its metadata.
pub struct Sealing {
    sealer: SessionSealer,
    /// The keyed-hash key for change detection ([`crate::run_backup_pipeline`]).
    pub change_key: ChangeKey,
    /// The new point's encryption record.
    pub record: EncryptionRecord,
}

impl Sealing {
    /// The sink that seals this session's blocks before `inner` gets them.
    pub fn into_sink(self, inner: &mut dyn BlockSink) -> EncryptingSink<'_> {
        EncryptingSink::new(inner, self.sealer)
    }
}

/// How the next point of a chain is encrypted with `key`, given its parent's record (`None`:
/// a new chain; `Some(None)`: the parent is not encrypted). `Ok(Err(reason))` asks for a new
/// chain (an active full) instead; a wrong key is an error.
pub fn plan_sealing(
    key: &WriteKey,
    parent: Option<Option<&EncryptionRecord>>,
) -> Result<std::result::Result<Sealing, String>> {
    sealing_for(key, parent)
}

/// Decides how the next point is encrypted given its parent's record; `Err(Ok(reason))` asks
/// for a new chain (an active full) instead.
fn sealing_for(
    key: &WriteKey,
    parent: Option<Option<&EncryptionRecord>>,
) -> Result<std::result::Result<Sealing, String>> {
    // A new chain binds the block number into its change-detection hashes; a running chain
    // keeps the hash it began with (docs/encryption.md, "Change detection").
    let fresh = |key_id: [u8; 16],
                 change_key: [u8; 32],
                 positional: bool,
                 wrap: &dyn Fn(&BlockKey) -> bulwark_crypto::Result<Vec<u8>>|
     -> Result<Sealing> {
        let data_key = BlockKey::generate().map_err(usage)?;
        let sealer = SessionSealer::new(&data_key).map_err(usage)?;
        let wrapped = wrap(&data_key).map_err(usage)?;
        Ok(Sealing {
            record: EncryptionRecord {
                mode: key.mode(),
                key_id,
                sessions: vec![Session {
                    salt: sealer.salt(),
                    wrapped,
                }],
                positional,
            },
            sealer,
            change_key: ChangeKey::new(change_key, positional),
        })
    };
    let parent = match parent {
        None => None,
        Some(None) => {
            return Ok(Err(
                "the job's chain is not encrypted: an encrypted backup starts a new chain".into(),
            ))
        }
        Some(Some(r)) => Some(r),
    };
    if let Some(r) = parent {
        if r.mode != key.mode() {
            return Err(EngineError::Usage(format!(
                "the job's chain is encrypted in {} mode (key {}); give {}",
                r.mode.as_str(),
                r.fingerprint(),
                match r.mode {
                    KeyMode::Symmetric => "its symmetric key file with --key",
                    KeyMode::WriteOnly => "its public key with --public-key",
                }
            )));
        }
    }
    match key {
        WriteKey::Symmetric(kf) => match parent {
            None => {
                let g = kf.current();
                let Secret::Symmetric { master } = &g.secret else {
                    return Err(usage("not a symmetric key file"));
                };
                let (id, master) = (g.key_id(), *master);
                fresh(id, g.change_key(), true, &|dk| {
                    wrap_symmetric(&master, &id, dk)
                })
                .map(Ok)
            }
            Some(r) => {
                let g = kf.find(&r.key_id).ok_or_else(|| {
                    EngineError::Usage(format!(
                        "wrong key: the job's chain was encrypted with key {}, and this key file holds {}; give the key file the chain was written with (nothing was written)",
                        r.fingerprint(),
                        fingerprints(kf)
                    ))
                })?;
                let Secret::Symmetric { master } = &g.secret else {
                    return Err(usage("not a symmetric key file"));
                };
                let first = &r.sessions[0];
                let data_key =
                    unwrap_symmetric(master, &r.key_id, &first.wrapped).map_err(usage)?;
                let sealer = SessionSealer::new(&data_key).map_err(usage)?;
                Ok(Ok(Sealing {
                    record: EncryptionRecord {
                        mode: KeyMode::Symmetric,
                        key_id: r.key_id,
                        sessions: vec![Session {
                            salt: sealer.salt(),
                            wrapped: first.wrapped.clone(),
                        }],
                        positional: r.positional,
                    },
                    sealer,
                    change_key: ChangeKey::new(g.change_key(), r.positional),
                }))
            }
        },
        WriteKey::Public(p) => {
            if let Some(r) = parent {
                if r.key_id != p.key_id() {
                    return Ok(Err(format!(
                        "the job's chain was written for public key {}, and this is {}: a new chain starts",
                        r.fingerprint(),
                        hex::encode(p.key_id())
                    )));
                }
            }
            let public = p.public;
            // Every write-only point is a session of its own; the chain's hash stays.
            let positional = parent.is_none_or(|r| r.positional);
            fresh(p.key_id(), p.change_key, positional, &|dk| {
                wrap_x25519(&public, dk)
            })
            .map(Ok)
        }
    }
}

fn fingerprints(kf: &KeyFile) -> String {
    kf.generations
        .iter()
        .map(|g| hex::encode(g.key_id()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wraps a sink: every stored block is sealed before it reaches it (the repository or the
/// network sees ciphertext only).
pub struct EncryptingSink<'a> {
    inner: &'a mut dyn BlockSink,
    sealer: Arc<SessionSealer>,
    buf: Vec<u8>,
}

impl<'a> EncryptingSink<'a> {
    fn new(inner: &'a mut dyn BlockSink, sealer: SessionSealer) -> Self {
        EncryptingSink {
            inner,
            sealer: Arc::new(sealer),
            buf: Vec::new(),
        }
    }
}

impl BlockSink for EncryptingSink<'_> {
    fn put_stored(&mut self, b: StoredBlock<'_>) -> Result<()> {
        if b.codec.is_encrypted() {
            // Sealed by a pipeline worker: kept only in strictly increasing block order.
            self.sealer.admit(b.block.0).map_err(usage)?;
            return self.inner.put_stored(b);
        }
        self.sealer.admit(b.block.0).map_err(usage)?;
        let (codec, stored_hash) = seal_block(
            &self.sealer,
            b.block.0,
            b.plain_len,
            b.codec,
            &b.plain_hash,
            b.data,
            &mut self.buf,
        )?;
        self.inner.put_stored(StoredBlock {
            data: &self.buf,
            codec,
            stored_hash,
            ..b
        })
    }
    fn put_unchanged(&mut self, block: BlockNo) -> Result<()> {
        self.inner.put_unchanged(block)
    }
    fn parallel_sealer(&self) -> Option<Arc<SessionSealer>> {
        Some(self.sealer.clone())
    }
}

/// Encrypts the payload of block `block` (the zstd frame, or the plain block for `Codec::Raw`)
/// into `out` (docs/encryption.md): returns the sealed codec and the stored hash, which covers
/// the ciphertext. The caller admits the block in order before it is kept.
pub(crate) fn seal_block(
    sealer: &SessionSealer,
    block: u64,
    plain_len: u32,
    codec: Codec,
    plain_hash: &Digest,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(Codec, Digest)> {
    let codec = codec.sealed();
    let ad = associated_data(block, plain_len, codec.flags(), &plain_hash.0);
    sealer
        .seal_detached(block, &ad, payload, out)
        .map_err(usage)?;
    Ok((codec, Digest::of(out)))
}

/// An encrypted backup of `src` to a local repository (see [`crate::backup_local_source`]).
/// An incremental continues the chain under its key; a chain that is not encrypted, or was
/// written for another public key, gets a new active full (the reason is returned).
pub fn backup_local_encrypted(
    repo: &Repository,
    job: &str,
    src: Source,
    opts: &BackupOptions,
    key: &WriteKey,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BackupSummary> {
    crate::backup::backup_local_with(repo, job, src, opts, Some(key), progress)
}

/// The next point of a local backup and how its blocks are sealed.
pub(crate) struct LocalPlan {
    pub next: NextPoint,
    /// `None`: an unencrypted point.
    pub sealing: Option<Sealing>,
    /// Why the point is a full although the job had restore points.
    pub full_reason: Option<String>,
}

/// Plans the next point of `job` (`disk_size` bytes) in a local repository. With `key`, an
/// incremental continues the chain under it, and a chain that cannot continue under it (not
/// encrypted, another public key) gets a new active full, the reason kept; a wrong key is an
/// error. Without a key, a job whose chain is encrypted is refused
/// ([`refuse_plain_after_encrypted`]).
pub(crate) fn plan_local(
    repo: &Repository,
    job: &str,
    opts: &BackupOptions,
    disk_size: u64,
    key: Option<&WriteKey>,
) -> Result<LocalPlan> {
    let Some(key) = key else {
        let next = plan_plain(repo, job, opts, disk_size)?;
        let full_reason = next.plan.reason.full_reason();
        return Ok(LocalPlan {
            next,
            sealing: None,
            full_reason,
        });
    };
    let mut force_full = opts.force_full;
    let mut reason = None;
    loop {
        let next = repo.next_point(
            job,
            &PlanRequest {
                disk_size,
                block_size: opts.block_size,
                force_full,
            },
        )?;
        let rec = match &next.parent {
            Some(p) => Some(parent_record(repo, job, p)?),
            None => None,
        };
        match sealing_for(key, rec.as_ref().map(|r| r.as_ref()))? {
            Ok(s) => {
                let full_reason = reason.or(next.plan.reason.full_reason());
                return Ok(LocalPlan {
                    next,
                    sealing: Some(s),
                    full_reason,
                });
            }
            Err(why) if !force_full => {
                force_full = true;
                reason = Some(why);
            }
            Err(why) => return Err(usage(why)),
        }
    }
}

/// A local point begun as its [`LocalPlan`] says.
pub(crate) struct LocalPoint {
    /// The point being written, its encryption record set when it is encrypted.
    pub builder: PointBuilder,
    pub block_size: u32,
    /// The parent's hashes (keyed with the change-detection key on an encrypted chain).
    pub known: KnownHashes,
    pub sealing: Option<Sealing>,
    pub full_reason: Option<String>,
}

impl LocalPlan {
    /// The change-detection key the point's (and its parent's) block hashes are keyed with.
    pub fn change_key(&self) -> Option<ChangeKey> {
        self.sealing.as_ref().map(|s| s.change_key)
    }

    /// Begins the point: an incremental on the plan's parent, or an active full; an encrypted
    /// point carries its encryption record.
    pub fn begin(
        self,
        repo: &Repository,
        job: &str,
        disk_size: u64,
        compression_level: i32,
    ) -> Result<LocalPoint> {
        let block_size = self.next.plan.block_size;
        let known = self
            .next
            .parent
            .as_ref()
            .map(KnownHashes::from)
            .unwrap_or_default();
        let mut builder = begin_local(
            repo,
            job,
            self.next.parent,
            disk_size,
            block_size,
            compression_level,
        )?;
        if let Some(s) = &self.sealing {
            builder.set_extension(EXT_ENCRYPTION, s.record.encode())?;
        }
        Ok(LocalPoint {
            builder,
            block_size,
            known,
            sealing: self.sealing,
            full_reason: self.full_reason,
        })
    }
}

impl LocalPoint {
    /// Seals the point: what the backup made, `started` being its start.
    pub fn finish(self, counters: Counters, started: Instant) -> Result<BackupSummary> {
        let sealed = self.builder.finish()?;
        Ok(BackupSummary {
            sealed,
            counters,
            elapsed: started.elapsed(),
            full_reason: self.full_reason,
        })
    }
}

/// Runs the backup pipeline over `input` into `sink` ([`crate::run_input_pipeline`], with the
/// block size of the point and the level and threads of `opts`). Unencrypted (`sealing`
/// `None`): plain BLAKE3. Encrypted: every stored block is sealed by `sealing` before `sink`
/// gets it (the pipeline's workers seal in parallel), and blocks are hashed with the chain's
/// change-detection key, as its parent's were.
pub fn run_backup_pipeline(
    input: &Input<'_>,
    block_size: u32,
    opts: &BackupOptions,
    known: &KnownHashes,
    sealing: Option<Sealing>,
    sink: &mut dyn BlockSink,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Counters> {
    let change_key = sealing.as_ref().map(|s| s.change_key);
    let mut sealed;
    let out: &mut dyn BlockSink = match sealing {
        None => sink,
        Some(s) => {
            sealed = s.into_sink(sink);
            &mut sealed
        }
    };
    run_input_pipeline(
        input,
        block_size,
        opts.compression_level,
        opts.threads,
        known,
        change_key.as_ref(),
        out,
        progress,
    )
}

/// The keys of one file of a chain.
struct FileKeys {
    /// Data keys by the salt their blocks carry.
    keys: Vec<([u8; 16], BlockKey)>,
    change_key: ChangeKey,
    /// A point written by a backup holds only its own session's blocks; a synthetic full
    /// holds cloned blocks of many sessions.
    own_session_only: bool,
}

impl FileKeys {
    fn new(meta: &PointMeta, rec: &EncryptionRecord, key: &KeyFile) -> Result<FileKeys> {
        FileKeys::of(meta.point, meta.kind != PointKind::SyntheticFull, rec, key)
    }

    fn of(
        point: PointId,
        own_session_only: bool,
        rec: &EncryptionRecord,
        key: &KeyFile,
    ) -> Result<FileKeys> {
        let wanted = match rec.mode {
            KeyMode::Symmetric => KeyKind::Symmetric,
            KeyMode::WriteOnly => KeyKind::Restore,
        };
        if key.kind != wanted {
            return Err(EngineError::Usage(format!(
                "restore point {} is encrypted in {} mode (key {}): it needs {}",
                point,
                rec.mode.as_str(),
                rec.fingerprint(),
                wanted.describe()
            )));
        }
        let g = key.find(&rec.key_id).ok_or_else(|| {
            EngineError::Usage(format!(
                "wrong key: restore point {} was encrypted with key {}, and the key file holds {}; give the key it was written with (nothing was written)",
                point,
                rec.fingerprint(),
                fingerprints(key)
            ))
        })?;
        let mut keys = Vec::with_capacity(rec.sessions.len());
        match &g.secret {
            Secret::Symmetric { master } => {
                let dk = unwrap_symmetric(master, &rec.key_id, &rec.sessions[0].wrapped)
                    .map_err(usage)?;
                for s in &rec.sessions {
                    keys.push((s.salt, dk.clone()));
                }
            }
            Secret::X25519 { secret, .. } => {
                for s in &rec.sessions {
                    keys.push((s.salt, unwrap_x25519(secret, &s.wrapped).map_err(usage)?));
                }
            }
        }
        Ok(FileKeys {
            keys,
            change_key: ChangeKey::new(g.change_key(), rec.positional),
            own_session_only,
        })
    }
}

/// Decrypts the blocks of an opened chain: the keys of every file it reads from, unwrapped
/// once.
pub struct Decryptor {
    files: HashMap<PointId, FileKeys>,
}

impl Decryptor {
    /// The decryptor of `chain` with `key`; `None` when the chain is not encrypted. A wrong key
    /// fails here, before anything is written.
    pub fn for_chain(chain: &ChainReader, key: &KeyFile) -> Result<Option<Decryptor>> {
        let mut metas: Vec<&PointMeta> = vec![&chain.point().meta];
        for e in chain.entries() {
            let m = &chain.file_of(e).meta;
            if !metas.iter().any(|x| x.point == m.point) {
                metas.push(m);
            }
        }
        Decryptor::for_files(&metas, key)
    }

    /// The decryptor of a restore over the network: `record` lists the sessions of every file
    /// the restore reads (the server merges them, `ChainReader::merged_encryption_record`),
    /// and blocks are decoded as of `point`. A block's salt must be one of them; which file a
    /// block came from is not known here.
    pub fn for_record(point: PointId, record: &[u8], key: &KeyFile) -> Result<Decryptor> {
        let rec = EncryptionRecord::decode(record).map_err(usage)?;
        let mut files = HashMap::new();
        files.insert(point, FileKeys::of(point, false, &rec, key)?);
        Ok(Decryptor { files })
    }

    /// The decryptor of the files `metas` (the point first); `None` when it is not encrypted.
    pub fn for_files(metas: &[&PointMeta], key: &KeyFile) -> Result<Option<Decryptor>> {
        let mut files = HashMap::new();
        for m in metas {
            match record_of(m)? {
                Some(rec) => {
                    files.insert(m.point, FileKeys::new(m, &rec, key)?);
                }
                None if files.is_empty() => return Ok(None),
                None => {
                    return Err(usage(format!(
                        "restore point {} of an encrypted chain is not encrypted",
                        m.point
                    )))
                }
            }
        }
        Ok(Some(Decryptor { files }))
    }

    /// Checks, decrypts and decodes block `e` whose stored bytes `stored` were read from the
    /// file of point `file` (stored hash, then authentication, then the keyed hash). Returns
    /// the plain block: part of `payload` or of `out`.
    pub fn decode<'a>(
        &self,
        dec: &mut BlockDecoder,
        file: PointId,
        e: &MapEntry,
        stored: &[u8],
        payload: &'a mut Vec<u8>,
        out: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        let block = e.block.0;
        let auth = |why: &str| {
            usage(bulwark_crypto::CryptoError::Authentication {
                block,
                why: why.to_string(),
            })
        };
        if !e.is_encrypted() {
            return Err(auth(" (an unencrypted block in an encrypted chain)"));
        }
        if stored.len() != e.stored_len as usize || Digest::of(stored) != e.stored_hash {
            return Err(usage(bulwark_format::FormatError::StoredHash {
                block: e.block,
                offset: e.offset,
            }));
        }
        let fk = self
            .files
            .get(&file)
            .ok_or_else(|| usage(format!("block {block}: no keys for restore point {file}")))?;
        let salt: [u8; 16] = stored
            .get(..16)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| auth(" (too short)"))?;
        let pos = fk.keys.iter().position(|(s, _)| *s == salt);
        let key = match pos {
            Some(0) => &fk.keys[0].1,
            Some(i) if !fk.own_session_only => &fk.keys[i].1,
            _ => return Err(auth(" (it carries another restore point's session)")),
        };
        let ad = associated_data(block, e.plain_len, e.flags, &e.plain_hash.0);
        key.open(block, &ad, stored, payload).map_err(usage)?;
        dec.decode_decrypted(e, payload, out, &fk.change_key)
            .map_err(usage)
    }
}

/// Restores an encrypted restore point (see [`crate::restore_local`]) with `key`: the
/// symmetric key file, or the private restore key of write-only backups. Keys are checked
/// before the target is created.
pub fn restore_local_encrypted(
    repo: &Repository,
    job: &str,
    point: Option<PointId>,
    target: &Path,
    opts: &RestoreOptions,
    key: &KeyFile,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<RestoreSummary> {
    crate::restore::restore_local_with(repo, job, point, target, opts, Some(key), progress)
}

/// A restore point's blocks, decrypted: wraps any [`crate::PointBlocks`] (the repository's
/// files, or a repository service) so that [`crate::PointImage`] serves an encrypted point
/// (instant access, mount). The key is checked when it is built.
pub struct Decrypting<S> {
    inner: S,
    dec: Decryptor,
    /// The restore point holding each `file_ref`'s blocks.
    files: HashMap<u32, PointId>,
    point: PointId,
}

impl Decrypting<ChainReader> {
    /// An encrypted chain opened from the repository's files, with `key`.
    pub fn chain(chain: ChainReader, key: &KeyFile) -> Result<Decrypting<ChainReader>> {
        let dec = Decryptor::for_chain(&chain, key)?.ok_or_else(|| {
            usage(format!(
                "restore point {} is not encrypted: open it without --key/--restore-key",
                chain.point().meta.point
            ))
        })?;
        let mut files = HashMap::new();
        for e in chain.entries() {
            files
                .entry(e.file_ref)
                .or_insert_with(|| chain.file_of(e).meta.point);
        }
        let point = chain.point().meta.point;
        Ok(Decrypting {
            inner: chain,
            dec,
            files,
            point,
        })
    }
}

impl<S> Decrypting<S> {
    /// Blocks from a repository service: `record` is what the service sent for `point` (the
    /// sessions of every file it reads).
    pub fn remote(inner: S, point: PointId, record: &[u8], key: &KeyFile) -> Result<Decrypting<S>> {
        Ok(Decrypting {
            inner,
            dec: Decryptor::for_record(point, record, key)?,
            files: HashMap::new(),
            point,
        })
    }
}

impl<S: crate::PointBlocks> crate::PointBlocks for Decrypting<S> {
    fn disk_size(&self) -> u64 {
        self.inner.disk_size()
    }
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn map(&self) -> &[MapEntry] {
        self.inner.map()
    }
    fn fetch(&self, first: usize, count: usize) -> Vec<crate::Fetched> {
        self.inner.fetch(first, count)
    }
    fn decryptor_for(&self, e: &MapEntry) -> Option<(&Decryptor, PointId)> {
        Some((
            &self.dec,
            *self.files.get(&e.file_ref).unwrap_or(&self.point),
        ))
    }
}

/// [`crate::decode_stored`] for an encrypted block: the store's entry must be the one the map
/// names, then stored hash, session, authentication and keyed hash (a failure is damage to
/// that block only, never wrong bytes).
pub(crate) fn decode_encrypted(
    d: &Decryptor,
    file: PointId,
    dec: &mut BlockDecoder,
    expected: &MapEntry,
    got: &MapEntry,
    stored: &[u8],
) -> std::result::Result<Vec<u8>, crate::ImageError> {
    let damaged = |reason: String| crate::ImageError::Damaged {
        block: expected.block.0,
        reason,
    };
    crate::image::check_same_block(expected, got)?;
    let (mut payload, mut out) = (Vec::new(), Vec::new());
    d.decode(dec, file, got, stored, &mut payload, &mut out)
        .map(<[u8]>::to_vec)
        .map_err(|e| damaged(e.to_string()))
}
