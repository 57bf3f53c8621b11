//! One guarded repository: its folders held open, and the filesystem side of sealing,
//! unlocking and deleting.
//!
//! Sealing leaves no writable window: the file is first moved out of the service user's
//! reach (into `store/.staging/`, root-only), so what is checked is what gets sealed; then it
//! is made root-owned and read-only, so nobody can open it for writing any more, by path or
//! through `/proc/<pid>/fd`; then a read lease proves no writer is still open; only then is it
//! read, moved to its place in the store and made immutable.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{fchown, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bulwark_format::{
    check_header_padding, Digest, Header, PointId, PointMeta, PointReader, Trailer, ENTRY_LEN,
    HEADER_LEN, MAX_META_LEN, TRAILER_LEN,
};
use bulwark_immut_msg::layout::{incoming_dir, point_file_name, store_dir};
use bulwark_immut_msg::ErrorCode;
use bulwark_sys::{FS_APPEND_FL, FS_IMMUTABLE_FL};

use crate::config::RepoConfig;
use crate::error::{ImmutdError, ReqError, Result};
use crate::ledger::Entry;

/// Name of the root-only folder inside `store/` where files are checked before sealing.
pub const STAGING: &str = ".staging";
/// The repository's settings file, made immutable once guarded.
pub const SETTINGS: &str = "repository.toml";
/// Largest block map read in full to verify the root digest; larger maps are trusted as the
/// trailer states them (the digest is still recorded and checked by `bulwark-repo verify`).
const MAX_VERIFIED_MAP: u64 = 64 << 20;

/// Extra lease probes, 50 ms apart, before a file is declared still open for writing.
const LEASE_RETRIES: u32 = 10;
const DIR_FLAGS: i32 =
    bulwark_sys::open::RDONLY | bulwark_sys::open::DIRECTORY | bulwark_sys::open::NOFOLLOW;
const FILE_FLAGS: i32 = bulwark_sys::open::RDONLY
    | bulwark_sys::open::NOFOLLOW
    | bulwark_sys::open::NONBLOCK
    | bulwark_sys::open::NOCTTY;

/// What sealing learned about a file.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub job: String,
    pub chain: PointId,
    pub point: PointId,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub root: Digest,
}

/// A repository the service guards, with its folders held open.
pub struct GuardedRepo {
    pub path: PathBuf,
    pub min_period_days: u32,
    /// The repository folder itself (for `repository.toml`).
    root: File,
    /// Whether the top level is made append-only and `repository.toml` immutable.
    lock_root: bool,
    incoming: File,
    store: File,
    staging: File,
    dev: u64,
    service_uid: u32,
    service_gid: u32,
}

fn refused(msg: String) -> ReqError {
    ReqError::refused(msg)
}

fn internal(what: &str, e: io::Error) -> ReqError {
    ReqError::internal(format!("{what}: {e}"))
}

/// Opens `parent/name` as a directory, creating it (root-owned, `mode`) when `create`.
/// Returns the folder and whether it was created.
fn open_or_create_dir(
    parent: &File,
    name: &OsStr,
    mode: u32,
    create: bool,
) -> io::Result<(File, bool)> {
    match bulwark_sys::openat(parent, name, DIR_FLAGS, 0) {
        Ok(d) => Ok((d, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            bulwark_sys::mkdirat(parent, name, mode)?;
            let d = bulwark_sys::openat(parent, name, DIR_FLAGS, 0)?;
            fchown(&d, Some(0), Some(0))?;
            d.set_permissions(Permissions::from_mode(mode))?;
            Ok((d, true))
        }
        Err(e) => Err(e),
    }
}

/// Checks that a store folder is root's and only root can change it.
fn check_root_dir(d: &File, what: &str) -> io::Result<()> {
    let m = d.metadata()?;
    if m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{what} is uid {} mode {:o}, not root-owned and closed to others",
                m.uid(),
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// True when a folder tree has no files (only empty folders).
fn tree_is_empty(p: &Path) -> bool {
    match std::fs::read_dir(p) {
        Ok(rd) => rd.flatten().all(|e| {
            e.file_type().map(|t| t.is_dir()).unwrap_or(false) && tree_is_empty(&e.path())
        }),
        Err(_) => false,
    }
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    std::fs::set_permissions(p, Permissions::from_mode(0o755))?;
    for e in std::fs::read_dir(p)? {
        chown_tree(&e?.path(), uid, gid)?;
    }
    Ok(())
}

/// The restore point's identity and root digest, read from the file itself. Every padding
/// byte must be zero too: the root digest does not cover padding, so this is what keeps a
/// sealed file free of bytes nobody checks.
fn read_point(f: &File) -> std::result::Result<(PointMeta, Digest), String> {
    let t = Trailer::read_from(f).map_err(|e| e.to_string())?;
    if t.map_count.saturating_mul(ENTRY_LEN as u64) <= MAX_VERIFIED_MAP {
        let dup = f.try_clone().map_err(|e| e.to_string())?;
        let r = PointReader::open(dup).map_err(|e| e.to_string())?;
        r.check_padding().map_err(|e| e.to_string())?;
        return Ok((r.meta, t.root_digest));
    }
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut hb = [0u8; HEADER_LEN as usize];
    f.read_exact_at(&mut hb, 0).map_err(|e| e.to_string())?;
    let header = Header::decode(&hb).map_err(|e| e.to_string())?;
    check_header_padding(&hb).map_err(|e| e.to_string())?;
    if t.meta_len > MAX_META_LEN
        || t.meta_offset.checked_add(t.meta_len) != Some(len - TRAILER_LEN as u64)
    {
        return Err("metadata does not end at the trailer".into());
    }
    let mut mb = vec![0u8; t.meta_len as usize];
    f.read_exact_at(&mut mb, t.meta_offset)
        .map_err(|e| e.to_string())?;
    let meta = PointMeta::decode(&mb).map_err(|e| e.to_string())?;
    if meta.point != header.point_id {
        return Err("metadata disagrees with the header".into());
    }
    Ok((meta, t.root_digest))
}

impl GuardedRepo {
    /// Takes a repository under guard: checks its folders, creates the root-owned store and
    /// staging folders, makes the repository folder append-only when `lock_root`, and moves
    /// anything a crash left in staging back to `incoming/`.
    pub fn open(cfg: &RepoConfig, uid: u32, gid: u32, lock_root: bool) -> Result<GuardedRepo> {
        let p = &cfg.path;
        let rerr = |msg: String| ImmutdError::Repository {
            path: p.clone(),
            msg,
        };
        let root = OpenOptions::new()
            .read(true)
            .custom_flags(bulwark_sys::open::DIRECTORY | bulwark_sys::open::NOFOLLOW)
            .open(p)
            .map_err(|e| rerr(format!("cannot open the repository folder: {e}")))?;
        let rm = root.metadata().map_err(ImmutdError::io("checking", p))?;
        if rm.mode() & 0o002 != 0 {
            return Err(rerr(
                "the repository folder is writable by everyone; chmod o-w it".into(),
            ));
        }
        let (incoming, created) =
            match bulwark_sys::openat(&root, OsStr::new("incoming"), DIR_FLAGS, 0) {
                Ok(d) => (d, false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    bulwark_sys::mkdirat(&root, OsStr::new("incoming"), 0o700)
                        .map_err(ImmutdError::io("creating incoming/", p))?;
                    let d = bulwark_sys::openat(&root, OsStr::new("incoming"), DIR_FLAGS, 0)
                        .map_err(ImmutdError::io("opening incoming/", p))?;
                    fchown(&d, Some(uid), Some(gid))
                        .map_err(ImmutdError::io("chown incoming/", p))?;
                    (d, true)
                }
                Err(e) => return Err(rerr(format!("incoming/ is not a folder: {e}"))),
            };
        let im = incoming
            .metadata()
            .map_err(ImmutdError::io("checking incoming/", p))?;
        if im.uid() != uid && !created {
            return Err(rerr(format!(
                "incoming/ is owned by uid {}, not the service user {uid}",
                im.uid()
            )));
        }
        let store_path = store_dir(p);
        if let Ok(d) = bulwark_sys::openat(&root, OsStr::new("store"), DIR_FLAGS, 0) {
            let m = d
                .metadata()
                .map_err(ImmutdError::io("checking store/", p))?;
            if m.uid() != 0 {
                if m.uid() == uid && tree_is_empty(&store_path) {
                    chown_tree(&store_path, 0, 0)
                        .map_err(ImmutdError::io("taking over the empty store/", p))?;
                } else {
                    return Err(rerr(format!(
                        "store/ is owned by uid {} and holds files written before the repository was guarded; \
                         move them to incoming/ and seal them, or guard a new repository",
                        m.uid()
                    )));
                }
            }
        }
        let (store, _) = open_or_create_dir(&root, OsStr::new("store"), 0o755, true)
            .map_err(|e| rerr(format!("cannot open or create store/: {e}")))?;
        check_root_dir(&store, "store/").map_err(|e| rerr(e.to_string()))?;
        let (staging, _) = open_or_create_dir(&store, OsStr::new(STAGING), 0o700, true)
            .map_err(|e| rerr(format!("cannot open or create store/{STAGING}: {e}")))?;
        check_root_dir(&staging, "store/.staging").map_err(|e| rerr(e.to_string()))?;
        let dev = store
            .metadata()
            .map_err(ImmutdError::io("checking store/", p))?
            .dev();
        if im.dev() != dev {
            return Err(rerr(
                "incoming/ and store/ are on different filesystems".into(),
            ));
        }
        bulwark_sys::get_flags(&store).map_err(|e| {
            rerr(format!(
                "the filesystem does not support the immutable attribute ({e}); use ext4 or XFS"
            ))
        })?;
        if lock_root {
            bulwark_sys::set_flag(&root, FS_APPEND_FL, true).map_err(|e| {
                rerr(format!(
                    "cannot set the append-only attribute on the repository folder: {e}"
                ))
            })?;
        }
        let repo = GuardedRepo {
            path: p.clone(),
            min_period_days: cfg.min_period_days,
            root,
            lock_root,
            incoming,
            store,
            staging,
            dev,
            service_uid: uid,
            service_gid: gid,
        };
        repo.recover_staging();
        if let Err(e) = repo.protect_settings() {
            eprintln!(
                "bulwark-immutd: cannot make {}/repository.toml immutable: {e}",
                p.display()
            );
        }
        Ok(repo)
    }

    /// Makes `repository.toml` immutable (when the top level is locked), so the service user
    /// can no longer change the settings of a guarded repository (drop the socket, raise a
    /// limit). Returns true when this call set the attribute; a missing file is no error
    /// (the repository is not initialised yet).
    pub fn protect_settings(&self) -> io::Result<bool> {
        if !self.lock_root {
            return Ok(false);
        }
        let f = match bulwark_sys::openat(&self.root, OsStr::new(SETTINGS), FILE_FLAGS, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        if !m.is_file() || m.nlink() != 1 {
            return Err(io::Error::other(
                "repository.toml is not a regular file with one link",
            ));
        }
        if bulwark_sys::get_flags(&f)? & FS_IMMUTABLE_FL != 0 {
            return Ok(false);
        }
        bulwark_sys::set_flag(&f, FS_IMMUTABLE_FL, true)?;
        Ok(true)
    }

    /// Whether the top level is locked and `repository.toml` kept immutable.
    pub fn locks_root(&self) -> bool {
        self.lock_root
    }

    /// Moves whatever a crash left in staging back to `incoming/`, owned by the service user.
    fn recover_staging(&self) {
        let dir = store_dir(&self.path).join(STAGING);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if let Ok(f) = bulwark_sys::openat(&self.staging, &name, FILE_FLAGS, 0) {
                if f.metadata().map(|m| m.is_file()).unwrap_or(false)
                    && !bulwark_sys::has_flag(&f, FS_IMMUTABLE_FL).unwrap_or(true)
                {
                    let _ = fchown(&f, Some(self.service_uid), Some(self.service_gid));
                    let _ = f.set_permissions(Permissions::from_mode(0o600));
                }
            }
            self.give_back(&name);
            eprintln!(
                "bulwark-immutd: moved {:?} from {} back to incoming/",
                name,
                dir.display()
            );
        }
    }

    /// Moves `staging/name` back to `incoming/` (under a new name if that one is taken).
    fn give_back(&self, name: &OsStr) {
        if bulwark_sys::renameat_noreplace(&self.staging, name, &self.incoming, name).is_ok() {
            return;
        }
        let mut alt = OsString::from(".rejected-");
        alt.push(format!("{}-", std::process::id()));
        alt.push(name);
        if let Err(e) = bulwark_sys::renameat_noreplace(&self.staging, name, &self.incoming, &alt) {
            eprintln!("bulwark-immutd: cannot move {name:?} back out of staging: {e}");
        }
    }

    fn check_candidate(
        &self,
        m: &std::fs::Metadata,
        shown: &Path,
    ) -> std::result::Result<(), ReqError> {
        if m.file_type().is_symlink() {
            return Err(refused(format!(
                "{} is a symbolic link; only regular files are sealed",
                shown.display()
            )));
        }
        if !m.is_file() {
            return Err(refused(format!(
                "{} is not a regular file",
                shown.display()
            )));
        }
        if m.uid() != self.service_uid {
            return Err(refused(format!(
                "{} is owned by uid {}, not by the service user",
                shown.display(),
                m.uid()
            )));
        }
        if m.nlink() != 1 {
            return Err(refused(format!(
                "{} has {} hard links; a sealed file must have exactly one name",
                shown.display(),
                m.nlink()
            )));
        }
        if m.dev() != self.dev {
            return Err(refused(format!(
                "{} is on another filesystem",
                shown.display()
            )));
        }
        Ok(())
    }

    /// Seals `incoming/<name>`, which must be restore point `point`. `budget` is how many
    /// more bytes may be locked.
    pub fn seal(
        &self,
        name: &OsStr,
        point: PointId,
        budget: u64,
    ) -> std::result::Result<Sealed, ReqError> {
        let shown = incoming_dir(&self.path).join(name);
        let staged = self.stage(name, &shown)?;
        let (f, m) = staged.open(&shown)?;
        if m.len() > budget {
            return Err(ReqError::new(
                ErrorCode::Limit,
                format!(
                    "sealing {} ({} bytes) would exceed max_locked_bytes (room for {budget} more)",
                    shown.display(),
                    m.len()
                ),
            ));
        }
        if bulwark_sys::get_flags(&f)
            .map(|fl| fl & (FS_IMMUTABLE_FL | FS_APPEND_FL) != 0)
            .unwrap_or(true)
        {
            return Err(refused(format!(
                "{} already carries the immutable or append-only attribute",
                shown.display()
            )));
        }
        let taken = staged.take_over(f, &m, &shown)?;
        taken.wait_for_writers(&shown)?;
        let (meta, root) = read_point(&taken.f).map_err(|e| {
            refused(format!(
                "{} is not a valid restore point: {e}",
                shown.display()
            ))
        })?;
        if meta.point != point {
            return Err(refused(format!(
                "{} is named for restore point {point} but contains restore point {}",
                shown.display(),
                meta.point
            )));
        }
        let chain_dir = self
            .chain_dir(&meta.job, meta.chain, true)
            .map_err(|e| internal("preparing the store folder", e))?;
        let mut stored = taken.into_store(chain_dir, point)?;
        bulwark_sys::set_flag(&stored.taken.f, FS_IMMUTABLE_FL, true)
            .map_err(|e| internal("setting the immutable attribute", e))?;
        // Protected from here on: nothing is undone any more, whatever fails below.
        stored.keep();
        for (what, r) in [
            ("fsync file", stored.taken.f.sync_all()),
            ("fsync chain folder", stored.chain_dir.sync_all()),
            ("fsync staging", self.staging.sync_all()),
            ("fsync incoming", self.incoming.sync_all()),
        ] {
            r.map_err(|e| internal(what, e))?;
        }
        Ok(Sealed {
            job: meta.job,
            chain: meta.chain,
            point,
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            root,
        })
    }

    /// Seal step 1: cheap refusals, then the file moves out of the service user's reach into
    /// `store/.staging/`, where it cannot be swapped any more.
    fn stage<'a>(
        &'a self,
        name: &'a OsStr,
        shown: &Path,
    ) -> std::result::Result<Staged<'a>, ReqError> {
        let pre = bulwark_sys::openat(
            &self.incoming,
            name,
            bulwark_sys::open::PATH | bulwark_sys::open::NOFOLLOW,
            0,
        )
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ReqError::new(
                    ErrorCode::NotFound,
                    format!("{} does not exist", shown.display()),
                )
            } else {
                internal("opening the file", e)
            }
        })?;
        let m = pre
            .metadata()
            .map_err(|e| internal("checking the file", e))?;
        self.check_candidate(&m, shown)?;
        drop(pre);
        bulwark_sys::renameat_noreplace(&self.incoming, name, &self.staging, name).map_err(
            |e| match e.kind() {
                io::ErrorKind::NotFound => {
                    ReqError::new(ErrorCode::NotFound, format!("{} vanished", shown.display()))
                }
                _ => internal("moving the file to staging", e),
            },
        )?;
        Ok(Staged {
            repo: self,
            name,
            armed: true,
        })
    }

    /// Opens `store/<job>/<chain>`, creating both levels root-owned when `create`.
    fn chain_dir(&self, job: &str, chain: PointId, create: bool) -> io::Result<File> {
        bulwark_format::validate_name("job", job)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let (job_dir, made_job) = open_or_create_dir(&self.store, OsStr::new(job), 0o755, create)?;
        check_root_dir(&job_dir, "job folder")?;
        let (chain_dir, made_chain) =
            open_or_create_dir(&job_dir, OsStr::new(&chain.to_hex()), 0o755, create)?;
        check_root_dir(&chain_dir, "chain folder")?;
        if made_job {
            self.store.sync_all()?;
        }
        if made_chain {
            job_dir.sync_all()?;
        }
        Ok(chain_dir)
    }

    /// Opens a sealed file and checks it is still the inode the ledger recorded.
    fn open_sealed(&self, e: &Entry) -> std::result::Result<(File, File), ReqError> {
        let dir = self.chain_dir(&e.job, e.chain, false).map_err(|err| {
            internal(
                &format!("opening the folder of {}", e.path().display()),
                err,
            )
        })?;
        let f = bulwark_sys::openat(&dir, OsStr::new(&point_file_name(e.point)), FILE_FLAGS, 0)
            .map_err(|err| internal(&format!("opening {}", e.path().display()), err))?;
        let m = f
            .metadata()
            .map_err(|err| internal("checking the file", err))?;
        if !m.is_file() || m.dev() != e.dev || m.ino() != e.ino {
            return Err(ReqError::internal(format!(
                "{} is not the file that was sealed (inode {} expected, found {}); it was replaced behind the service's back",
                e.path().display(),
                e.ino,
                m.ino()
            )));
        }
        Ok((dir, f))
    }

    /// Sets or clears the immutable attribute of a sealed file.
    pub fn set_lock(&self, e: &Entry, on: bool) -> std::result::Result<(), ReqError> {
        let (_, f) = self.open_sealed(e)?;
        bulwark_sys::set_flag(&f, FS_IMMUTABLE_FL, on)
            .map_err(|err| internal("changing the immutable attribute", err))?;
        f.sync_all().map_err(|err| internal("fsync", err))
    }

    /// True when the sealed file carries the immutable attribute.
    pub fn is_locked(&self, e: &Entry) -> std::result::Result<bool, ReqError> {
        let (_, f) = self.open_sealed(e)?;
        bulwark_sys::has_flag(&f, FS_IMMUTABLE_FL)
            .map_err(|err| internal("reading attributes", err))
    }

    /// Removes an unlocked sealed file.
    pub fn delete(&self, e: &Entry) -> std::result::Result<(), ReqError> {
        let (dir, f) = self.open_sealed(e)?;
        if bulwark_sys::has_flag(&f, FS_IMMUTABLE_FL)
            .map_err(|err| internal("reading attributes", err))?
        {
            return Err(refused(format!(
                "{} is still immutable",
                e.path().display()
            )));
        }
        bulwark_sys::unlinkat(&dir, OsStr::new(&point_file_name(e.point)), false)
            .map_err(|err| internal("removing the file", err))?;
        dir.sync_all().map_err(|err| internal("fsync", err))
    }

    /// Sealed-looking files in the store that `known` does not list: what a crash between
    /// setting the attribute and writing the ledger leaves. Returns (job, chain, point).
    pub fn unrecorded(
        &self,
        known: impl Fn(&str, PointId, PointId) -> bool,
    ) -> Vec<(String, PointId, PointId)> {
        let mut out = Vec::new();
        let store = store_dir(&self.path);
        let Ok(jobs) = std::fs::read_dir(&store) else {
            return out;
        };
        for j in jobs.flatten() {
            let job = j.file_name().to_string_lossy().into_owned();
            if job.starts_with('.') || !j.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let Ok(chains) = std::fs::read_dir(j.path()) else {
                continue;
            };
            for c in chains.flatten() {
                let Ok(chain) = c.file_name().to_string_lossy().parse::<PointId>() else {
                    continue;
                };
                let Ok(files) = std::fs::read_dir(c.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if let Some(point) = bulwark_immut_msg::layout::parse_point_file_name(&name) {
                        if !known(&job, chain, point) {
                            out.push((job.clone(), chain, point));
                        }
                    }
                }
            }
        }
        out
    }

    /// Reads a file found in the store so it can be recorded; makes sure it is immutable.
    pub fn adopt(
        &self,
        job: &str,
        chain: PointId,
        point: PointId,
    ) -> std::result::Result<Sealed, ReqError> {
        let dir = self
            .chain_dir(job, chain, false)
            .map_err(|e| internal("opening the chain folder", e))?;
        let f = bulwark_sys::openat(&dir, OsStr::new(&point_file_name(point)), FILE_FLAGS, 0)
            .map_err(|e| internal("opening the file", e))?;
        let m = f.metadata().map_err(|e| internal("checking the file", e))?;
        if !m.is_file() || m.uid() != 0 || m.nlink() != 1 {
            return Err(refused(format!(
                "{job}/{chain}/{point} is not a root-owned regular file with one link"
            )));
        }
        let (meta, root) =
            read_point(&f).map_err(|e| refused(format!("not a valid restore point: {e}")))?;
        if meta.point != point || meta.chain != chain || meta.job != job {
            return Err(refused(format!(
                "{job}/{chain}/{point} is not where its metadata says it belongs"
            )));
        }
        bulwark_sys::set_flag(&f, FS_IMMUTABLE_FL, true)
            .map_err(|e| internal("setting the immutable attribute", e))?;
        Ok(Sealed {
            job: meta.job,
            chain,
            point,
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            root,
        })
    }

    /// What a sealed file looks like now, compared with its ledger entry: for the watch on
    /// root's hand ([`crate::service`]). Opens nothing for writing and changes nothing.
    pub fn inspect(&self, e: &Entry) -> io::Result<Inspect> {
        let dir = match self.chain_dir(&e.job, e.chain, false) {
            Ok(d) => d,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Inspect::Missing),
            Err(err) => return Err(err),
        };
        let name = OsString::from(point_file_name(e.point));
        let f = match bulwark_sys::openat(&dir, &name, FILE_FLAGS, 0) {
            Ok(f) => f,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Inspect::Missing),
            Err(err) if err.raw_os_error() == Some(bulwark_sys::errno::ELOOP) => {
                return Ok(Inspect::Replaced("a symbolic link".into()))
            }
            Err(err) => return Err(err),
        };
        let m = f.metadata()?;
        if !m.is_file() {
            return Ok(Inspect::Replaced("not a regular file".into()));
        }
        if m.dev() != e.dev || m.ino() != e.ino {
            return Ok(Inspect::Replaced(format!(
                "inode {} instead of the sealed inode {}",
                m.ino(),
                e.ino
            )));
        }
        let immutable = bulwark_sys::has_flag(&f, FS_IMMUTABLE_FL)?;
        Ok(Inspect::Present(Looks {
            immutable,
            owner_ok: m.uid() == 0 && m.gid() == 0,
            mode_ok: m.mode() & 0o7777 == 0o444,
            nlink: m.nlink(),
            size: m.len(),
            ctime: (m.ctime(), m.ctime_nsec()),
        }))
    }

    /// Undoes root's hand on a sealed file whose inode is still the sealed one: the
    /// attribute is set again first (so nothing more can be written), then owner and mode
    /// are put back (clearing the attribute for that moment only when they were changed),
    /// then the whole content is checked against the recorded root digest. Returns whether
    /// the bytes are intact; the file stays immutable either way (kept as evidence).
    pub fn reseal(&self, e: &Entry) -> std::result::Result<bool, ReqError> {
        let (_, f) = self.open_sealed(e)?;
        bulwark_sys::set_flag(&f, FS_IMMUTABLE_FL, true)
            .map_err(|err| internal("setting the immutable attribute", err))?;
        let m = f
            .metadata()
            .map_err(|err| internal("checking the file", err))?;
        if m.uid() != 0 || m.gid() != 0 || m.mode() & 0o7777 != 0o444 {
            bulwark_sys::set_flag(&f, FS_IMMUTABLE_FL, false)
                .map_err(|err| internal("clearing the attribute to fix the owner", err))?;
            let fixed = fchown(&f, Some(0), Some(0))
                .and_then(|_| f.set_permissions(Permissions::from_mode(0o444)));
            bulwark_sys::set_flag(&f, FS_IMMUTABLE_FL, true)
                .map_err(|err| internal("setting the immutable attribute", err))?;
            fixed.map_err(|err| internal("restoring owner and mode", err))?;
        }
        f.sync_all().map_err(|err| internal("fsync", err))?;
        Ok(verify_content(&f, e.root).is_ok())
    }

    /// Checks the whole content of a sealed file against its recorded root digest.
    pub fn verify_sealed(&self, e: &Entry) -> std::result::Result<(), String> {
        let (_, f) = self.open_sealed(e).map_err(|err| err.message)?;
        verify_content(&f, e.root)
    }

    /// Checks a sealed file's root digest: header, metadata and block map hash to the
    /// recorded one (the blocks themselves are not read, so this is cheap for any size).
    pub fn verify_sealed_root(&self, e: &Entry) -> std::result::Result<(), String> {
        let (_, f) = self.open_sealed(e).map_err(|err| err.message)?;
        verify_root(&f, e.root)
    }

    /// The settings file's BLAKE3 (hex) and whether it is immutable; `None` when absent.
    pub fn settings_state(&self) -> io::Result<Option<(String, bool)>> {
        use std::io::Read;
        let f = match bulwark_sys::openat(&self.root, OsStr::new(SETTINGS), FILE_FLAGS, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(io::Error::other("repository.toml is not a regular file"));
        }
        let mut buf = Vec::new();
        (&f).take(MAX_SETTINGS + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > MAX_SETTINGS {
            return Err(io::Error::other("repository.toml is larger than 1 MiB"));
        }
        let immutable = bulwark_sys::has_flag(&f, FS_IMMUTABLE_FL)?;
        Ok(Some((blake3::hash(&buf).to_hex().to_string(), immutable)))
    }

    /// The repository's id from `id = "…"` in its settings, `unknown` when there is none.
    pub fn repository_id(&self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Ok(f) = bulwark_sys::openat(&self.root, OsStr::new(SETTINGS), FILE_FLAGS, 0) {
            let _ = f.take(MAX_SETTINGS).read_to_string(&mut text);
        }
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "id").then(|| v.trim().trim_matches('"').to_string())
            })
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 128
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .unwrap_or_else(|| "unknown".into())
    }

    /// True when `incoming/<name>` exists (as anything).
    pub fn incoming_exists(&self, name: &OsStr) -> bool {
        bulwark_sys::openat(
            &self.incoming,
            name,
            bulwark_sys::open::PATH | bulwark_sys::open::NOFOLLOW,
            0,
        )
        .is_ok()
    }
}

/// Largest `repository.toml` read.
const MAX_SETTINGS: u64 = 1 << 20;

/// What a sealed file looks like now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inspect {
    /// Neither the file nor (perhaps) its folder exists.
    Missing,
    /// Something else is at its path: another inode, a symbolic link, a folder.
    Replaced(String),
    /// The sealed inode, as it is now.
    Present(Looks),
}

/// The protecting properties of a sealed inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Looks {
    pub immutable: bool,
    pub owner_ok: bool,
    pub mode_ok: bool,
    pub nlink: u64,
    pub size: u64,
    /// Status-change time: any chattr, chmod, chown or write moves it.
    pub ctime: (i64, i64),
}

/// Checks that the trailer names `root` and that header, metadata and map hash to it.
pub fn verify_root(f: &File, root: Digest) -> std::result::Result<(), String> {
    open_under_root(f, root).map(|_| ())
}

/// Checks that the trailer names `root`, then opens the point, which checks that header,
/// metadata and map hash to it; `None` when the map is too large to hold (then the
/// trailer's digest is what is compared).
fn open_under_root(f: &File, root: Digest) -> std::result::Result<Option<PointReader>, String> {
    let t = Trailer::read_from(f).map_err(|e| e.to_string())?;
    if t.root_digest != root {
        return Err(format!(
            "its root digest is {} instead of the sealed {root}",
            t.root_digest
        ));
    }
    if t.map_count.saturating_mul(ENTRY_LEN as u64) > MAX_VERIFIED_MAP {
        return Ok(None);
    }
    let dup = f.try_clone().map_err(|e| e.to_string())?;
    PointReader::open(dup).map(Some).map_err(|e| e.to_string())
}

/// Checks a restore point's whole content: the trailer names `root`, the header, metadata
/// and map hash to it, and every block stored in the file hashes to its map entry.
pub fn verify_content(f: &File, root: Digest) -> std::result::Result<(), String> {
    let Some(r) = open_under_root(f, root)? else {
        return Ok(());
    };
    let mut buf = Vec::new();
    for e in r.map.iter().filter(|e| e.file_ref == 0) {
        let b = r
            .read_stored_padded(e, &mut buf)
            .map_err(|err| err.to_string())?;
        if Digest(*blake3::hash(b).as_bytes()) != e.stored_hash {
            return Err(format!("block {} does not match its hash", e.block));
        }
    }
    r.check_gaps().map_err(|e| e.to_string())
}

/// Seal step 1's result: a file moved into `store/.staging/`. Given back to `incoming/` when
/// dropped armed, so every refusal after the move undoes it by `?` alone.
struct Staged<'a> {
    repo: &'a GuardedRepo,
    name: &'a OsStr,
    armed: bool,
}

impl<'a> Staged<'a> {
    /// Seal step 2: opens the staged object as a regular file and checks it again.
    fn open(&self, shown: &Path) -> std::result::Result<(File, std::fs::Metadata), ReqError> {
        let f = bulwark_sys::openat(&self.repo.staging, self.name, FILE_FLAGS, 0).map_err(|e| {
            if e.raw_os_error() == Some(bulwark_sys::errno::ELOOP) {
                refused(format!(
                    "{} is a symbolic link; only regular files are sealed",
                    shown.display()
                ))
            } else {
                refused(format!(
                    "{} cannot be opened as a regular file: {e}",
                    shown.display()
                ))
            }
        })?;
        let m = f.metadata().map_err(|e| internal("checking the file", e))?;
        self.repo.check_candidate(&m, shown)?;
        Ok((f, m))
    }

    /// Seal step 3: the file becomes root-owned and read-only, so no new write opens exist
    /// by any path (`/proc/<pid>/fd` included). Undone (owner and mode back) on drop.
    fn take_over(
        self,
        f: File,
        m: &std::fs::Metadata,
        shown: &Path,
    ) -> std::result::Result<TakenOver<'a>, ReqError> {
        let t = TakenOver {
            staged: self,
            f,
            owner: (m.uid(), m.gid(), m.mode() & 0o7777),
            armed: true,
        };
        fchown(&t.f, Some(0), Some(0))
            .and_then(|_| t.f.set_permissions(Permissions::from_mode(0o444)))
            .map_err(|e| internal("taking ownership", e))?;
        match t.f.metadata() {
            Ok(m2) if m2.nlink() == 1 => Ok(t),
            _ => Err(refused(format!(
                "{} gained a hard link while being sealed",
                shown.display()
            ))),
        }
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.repo.give_back(self.name);
        }
    }
}

/// Seal step 3's result: a staged file owned by root, 0444. Dropped armed, its owner and
/// mode come back (and `staged` then gives it back).
struct TakenOver<'a> {
    staged: Staged<'a>,
    f: File,
    owner: (u32, u32, u32),
    armed: bool,
}

impl<'a> TakenOver<'a> {
    /// Seal step 4: nobody may still hold it open for writing (read lease probe). A writer
    /// descriptor can linger for a moment in a child some other thread of the writer forked
    /// before it could exec (close-on-exec acts only at exec): retry briefly. No new writer
    /// can appear: the file is root-owned and out of reach.
    fn wait_for_writers(&self, shown: &Path) -> std::result::Result<(), ReqError> {
        let mut probe = bulwark_sys::no_writer(&self.f);
        for _ in 0..LEASE_RETRIES {
            if !matches!(probe, Ok(false)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            probe = bulwark_sys::no_writer(&self.f);
        }
        match probe {
            Ok(true) => Ok(()),
            Ok(false) => Err(ReqError::new(
                ErrorCode::Busy,
                format!(
                    "{} is still open for writing; close it and ask again",
                    shown.display()
                ),
            )),
            Err(e) => Err(internal("probing for writers with a lease", e)),
        }
    }

    /// Seal step 5: into `store/<job>/<chain>/<point>.bwrp`.
    fn into_store(
        self,
        chain_dir: File,
        point: PointId,
    ) -> std::result::Result<Stored<'a>, ReqError> {
        let final_name = OsString::from(point_file_name(point));
        bulwark_sys::renameat_noreplace(
            &self.staged.repo.staging,
            self.staged.name,
            &chain_dir,
            &final_name,
        )
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                refused(format!(
                    "a sealed file already exists for restore point {point}"
                ))
            } else {
                internal("moving the file into the store", e)
            }
        })?;
        Ok(Stored {
            taken: self,
            chain_dir,
            final_name,
            armed: true,
        })
    }
}

impl Drop for TakenOver<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = fchown(&self.f, Some(self.owner.0), Some(self.owner.1));
            let _ = self.f.set_permissions(Permissions::from_mode(self.owner.2));
        }
    }
}

/// Seal step 5's result: the file in the store, not yet immutable. Dropped armed, it goes
/// back to staging, then its owner and mode, then to `incoming/`, so the service user can
/// see it is not sealed. [`Stored::keep`] ends every undo once the attribute is set.
struct Stored<'a> {
    taken: TakenOver<'a>,
    chain_dir: File,
    final_name: OsString,
    armed: bool,
}

impl Stored<'_> {
    /// The seal is complete: nothing is undone any more.
    fn keep(&mut self) {
        self.armed = false;
        self.taken.armed = false;
        self.taken.staged.armed = false;
    }
}

impl Drop for Stored<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let staged = &self.taken.staged;
        if bulwark_sys::renameat_noreplace(
            &self.chain_dir,
            &self.final_name,
            &staged.repo.staging,
            staged.name,
        )
        .is_err()
        {
            // Still in the store, not immutable: leave it where it is rather than lose it
            // (the next start reports it), and undo nothing else.
            self.taken.armed = false;
            self.taken.staged.armed = false;
        }
    }
}
