//! The service's state and its answer to each request: the policy in one place.

use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bulwark_immut_msg::layout::{incoming_dir, incoming_path, parse_point_file_name};
use bulwark_immut_msg::{ErrorCode, FileState, Request, Response, StatusInfo, Target};
use bulwark_sys::PeerCred;

use crate::audit::AuditLog;
use crate::clock::{ClockState, Reading};
use crate::config::{check_root_owned, Config};
use crate::error::{ImmutdError, ReqError, Result};
use crate::expiry::{cap_request, expiries, is_due};
use crate::ledger::{Entry, Ledger};
use crate::repo::GuardedRepo;

/// Where the clocks are read from; tests inject their own.
pub trait ClockSource: Send {
    /// Reads wall clock, boot-time clock and boot id.
    fn read(&self) -> Reading;
}

/// The machine's clocks.
pub struct SystemClock;

impl ClockSource for SystemClock {
    fn read(&self) -> Reading {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        // Without a boot clock nothing is proven: 0 with no boot id credits only tolerance.
        let (boot, boot_id) = match (bulwark_sys::boottime(), bulwark_sys::read_boot_id()) {
            (Ok(b), Ok(id)) => (b.as_secs() as i64, Some(id)),
            _ => (0, None),
        };
        Reading {
            wall,
            boot,
            boot_id,
        }
    }
}

/// Files in the state folder.
pub struct StatePaths {
    pub dir: PathBuf,
    pub ledger: PathBuf,
    pub clock: PathBuf,
    pub lock: PathBuf,
}

impl StatePaths {
    /// The state files under `dir`.
    pub fn new(dir: &Path) -> StatePaths {
        StatePaths {
            dir: dir.to_path_buf(),
            ledger: dir.join("ledger"),
            clock: dir.join("clock"),
            lock: dir.join("lock"),
        }
    }
}

/// Creates the state folder (root, 0700) or checks an existing one.
pub fn prepare_state_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(ImmutdError::io("creating state folder", dir))?;
        std::fs::set_permissions(dir, Permissions::from_mode(0o700))
            .map_err(ImmutdError::io("chmod", dir))?;
    }
    check_root_owned(dir, "state folder")?;
    let m = std::fs::symlink_metadata(dir).map_err(ImmutdError::io("checking", dir))?;
    if !m.is_dir() {
        return Err(ImmutdError::Other(format!(
            "state folder {} is not a folder",
            dir.display()
        )));
    }
    Ok(())
}

/// Loads the clock checkpoint; a missing one with a non-empty ledger freezes unlocks.
pub fn load_clock(paths: &StatePaths, ledger_empty: bool, r: &Reading) -> Result<ClockState> {
    match std::fs::read_to_string(&paths.clock) {
        Ok(t) => ClockState::decode(&t).map_err(|msg| ImmutdError::State {
            path: paths.clock.clone(),
            msg,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut s = ClockState::accept(r);
            if !ledger_empty {
                s.alert = Some(crate::clock::Alert {
                    detected_wall: r.wall,
                    excess_secs: 0,
                    message: "the clock checkpoint is missing while files are sealed; unlocks are frozen until root runs `bulwark-immutd time accept`".into(),
                });
            }
            Ok(s)
        }
        Err(e) => Err(ImmutdError::io("reading clock checkpoint", &paths.clock)(e)),
    }
}

/// Counts refusals per minute so that a flood of them cannot fill the disk with audit lines.
struct RefusalLimit {
    minute: i64,
    count: u32,
    suppressed: u32,
}

const REFUSALS_PER_MINUTE: u32 = 120;

/// The running service.
pub struct Service {
    pub config: Config,
    repos: Vec<GuardedRepo>,
    ledger: Ledger,
    paths: StatePaths,
    clock: ClockState,
    audit: AuditLog,
    trusted: i64,
    wall: i64,
    source: Box<dyn ClockSource>,
    refusals: RefusalLimit,
    _lock: File,
}

fn validate_seal_path(p: &Path) -> std::result::Result<(), ReqError> {
    if !p.is_absolute() {
        return Err(ReqError::new(
            ErrorCode::BadRequest,
            format!("{} is not an absolute path", p.display()),
        ));
    }
    let raw = p.as_os_str().as_encoded_bytes();
    if raw
        .split(|&b| b == b'/')
        .any(|seg| seg == b".." || seg == b".")
        || p.components().any(|c| c == Component::ParentDir)
    {
        return Err(ReqError::refused(format!(
            "{} contains `..` or `.`; give the exact path REPO/incoming/<point>.bwrp",
            p.display()
        )));
    }
    Ok(())
}

impl Service {
    /// Opens the state, guards every repository and takes the state lock.
    pub fn open(config: Config, source: Box<dyn ClockSource>) -> Result<Service> {
        prepare_state_dir(&config.state_dir)?;
        let paths = StatePaths::new(&config.state_dir);
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&paths.lock)
            .map_err(ImmutdError::io("opening lock file", &paths.lock))?;
        if !bulwark_sys::try_lock_exclusive(&lock)
            .map_err(ImmutdError::io("locking", &paths.lock))?
        {
            return Err(ImmutdError::Other(format!(
                "another bulwark-immutd is running with state folder {}",
                paths.dir.display()
            )));
        }
        bulwark_sys::ignore_lease_break_signal().map_err(ImmutdError::io("ignoring SIGIO", "-"))?;
        let ledger = Ledger::load(&paths.ledger)?;
        let r = source.read();
        let clock = load_clock(&paths, ledger.entries.is_empty(), &r)?;
        let mut audit = AuditLog::open(&paths.dir)?;
        if let Some(p) = audit.problem.clone() {
            eprintln!("bulwark-immutd: ALERT: the audit log failed its check: {p}");
            audit.append(r.wall, clock.last_trusted, "audit-damaged", &p)?;
        }
        let mut repos = Vec::new();
        for rc in &config.repositories {
            repos.push(GuardedRepo::open(
                rc,
                config.service_uid,
                config.service_gid,
                config.lock_repository_root,
            )?);
        }
        let trusted = clock.last_trusted;
        let mut s = Service {
            config,
            repos,
            ledger,
            paths,
            clock,
            audit,
            trusted,
            wall: r.wall,
            source,
            refusals: RefusalLimit {
                minute: 0,
                count: 0,
                suppressed: 0,
            },
            _lock: lock,
        };
        s.log(
            "start",
            &format!(
                "guarding {} repositories for uid {}",
                s.repos.len(),
                s.config.service_uid
            ),
        )?;
        s.refresh_clock()?;
        s.save_clock()?;
        s.adopt_unrecorded()?;
        s.relock_all()?;
        Ok(s)
    }

    /// Records files a crash left sealed but missing from the ledger. Their seal time is
    /// taken as now, which can only lengthen their protection.
    fn adopt_unrecorded(&mut self) -> Result<()> {
        let mut added = false;
        for ri in 0..self.repos.len() {
            let repo = &self.repos[ri];
            let repo_path = repo.path.clone();
            let found = repo.unrecorded(|job, chain, point| {
                self.ledger.entries.iter().any(|e| {
                    e.repo == repo.path
                        && e.job == job
                        && e.chain == chain
                        && e.point == point
                        && e.state != FileState::Deleted
                })
            });
            for (job, chain, point) in found {
                let detail = format!("{}/store/{job}/{chain}/{point}.bwrp", repo_path.display());
                match self.repos[ri].adopt(&job, chain, point) {
                    Ok(s) => {
                        let entry = Entry {
                            repo: self.repos[ri].path.clone(),
                            job: s.job,
                            chain: s.chain,
                            point: s.point,
                            dev: s.dev,
                            ino: s.ino,
                            size: s.size,
                            root: s.root,
                            sealed: self.trusted,
                            period_days: self.repos[ri].min_period_days,
                            requested: 0,
                            floor: 0,
                            state: FileState::Locked,
                            state_time: 0,
                        };
                        self.ledger.entries.push(entry);
                        added = true;
                        self.log("adopt", &format!("{detail} was sealed but not in the ledger (crash?); recorded as sealed now"))?;
                    }
                    Err(e) => self.log("unrecorded", &format!("{detail}: {}", e.message))?,
                }
            }
        }
        if added {
            self.commit().map_err(|e| ImmutdError::Other(e.message))?;
        }
        Ok(())
    }

    fn log(&mut self, event: &str, detail: &str) -> Result<()> {
        eprintln!("bulwark-immutd: {event}: {detail}");
        self.audit.append(self.wall, self.trusted, event, detail)
    }

    /// Audits a refused request, at most [`REFUSALS_PER_MINUTE`] a minute.
    fn log_refusal(&mut self, detail: &str) {
        let minute = self.wall.div_euclid(60);
        if minute != self.refusals.minute {
            if self.refusals.suppressed > 0 {
                let n = self.refusals.suppressed;
                let _ = self.log(
                    "refused-suppressed",
                    &format!("{n} further refusals not logged one by one"),
                );
            }
            self.refusals = RefusalLimit {
                minute,
                count: 0,
                suppressed: 0,
            };
        }
        self.refusals.count += 1;
        if self.refusals.count > REFUSALS_PER_MINUTE {
            self.refusals.suppressed += 1;
            return;
        }
        if let Err(e) = self.log("refused", detail) {
            eprintln!("bulwark-immutd: cannot write the audit log: {e}");
        }
    }

    /// Reads the clocks and credits what the boot clock confirms.
    fn refresh_clock(&mut self) -> Result<()> {
        let r = self.source.read();
        let (next, obs) = self.clock.observe(&r, self.config.clock_tolerance_secs);
        self.clock = next;
        self.trusted = obs.trusted;
        self.wall = r.wall;
        if let Some(a) = obs.new_alert {
            eprintln!("bulwark-immutd: ALERT: {}", a.message);
            self.log("clock-alert", &a.message)?;
            self.save_clock()?;
        }
        Ok(())
    }

    fn save_clock(&self) -> Result<()> {
        crate::atomic::write_atomic(&self.paths.clock, self.clock.encode().as_bytes(), 0o600)
    }

    fn expiries(&self) -> Vec<i64> {
        let cfg = &self.config;
        expiries(&self.ledger.entries, |r| {
            cfg.repo(r).map(|c| c.min_period_days)
        })
    }

    fn repo_of(&self, e: &Entry) -> Option<&GuardedRepo> {
        self.repos.iter().find(|r| r.path == e.repo)
    }

    /// Raises floors to the computed expiries and writes the ledger.
    fn commit(&mut self) -> std::result::Result<Vec<i64>, ReqError> {
        let x = self.expiries();
        for (e, &x) in self.ledger.entries.iter_mut().zip(&x) {
            e.floor = e.floor.max(x);
        }
        self.ledger
            .save(&self.paths.ledger)
            .map_err(|e| ReqError::internal(format!("writing the ledger: {e}")))?;
        Ok(x)
    }

    /// Locks again every unlocked file whose expiry moved into the future (a chain extended
    /// by a new seal, or an extension).
    fn relock_all(&mut self) -> Result<()> {
        let x = self.expiries();
        let mut changed = false;
        for (i, &xi) in x.iter().enumerate() {
            let e = &self.ledger.entries[i];
            if e.state == FileState::Unlocked && xi > self.trusted {
                let detail = format!("{} until {xi}", e.path().display());
                let res = self.repo_of(e).map(|r| r.set_lock(e, true));
                match res {
                    Some(Ok(())) => {
                        self.ledger.entries[i].state = FileState::Locked;
                        self.ledger.entries[i].state_time = 0;
                        changed = true;
                        self.log("relock", &detail)?;
                    }
                    Some(Err(err)) => self.log("relock-failed", &format!("{detail}: {err}"))?,
                    None => {}
                }
            }
        }
        if changed {
            self.commit().map_err(|e| ImmutdError::Other(e.message))?;
        }
        Ok(())
    }

    /// One timer step: check the clock, then unlock what expired unless unlocks are frozen.
    pub fn tick(&mut self) -> Result<()> {
        self.refresh_clock()?;
        self.save_clock()?;
        self.unlock_due()
    }

    fn unlock_due(&mut self) -> Result<()> {
        if self.clock.frozen() {
            return Ok(());
        }
        let x = self.expiries();
        let mut changed = false;
        for (i, &xi) in x.iter().enumerate() {
            let e = &self.ledger.entries[i];
            if e.state != FileState::Locked || !is_due(xi, self.trusted, self.clock.frozen()) {
                continue;
            }
            let detail = format!("{} expired {xi}", e.path().display());
            match self.repo_of(e).map(|r| r.set_lock(e, false)) {
                Some(Ok(())) => {
                    self.ledger.entries[i].state = FileState::Unlocked;
                    self.ledger.entries[i].state_time = self.trusted;
                    changed = true;
                    self.log("unlock", &detail)?;
                }
                Some(Err(err)) => self.log("unlock-failed", &format!("{detail}: {err}"))?,
                None => {}
            }
        }
        if changed {
            self.commit().map_err(|e| ImmutdError::Other(e.message))?;
        }
        Ok(())
    }

    /// Answers one request from `peer`.
    pub fn handle(&mut self, peer: PeerCred, req: Request) -> Response {
        let svc = self.config.service_uid;
        let allowed = match req {
            Request::TimeAccept => peer.uid == 0,
            Request::Status | Request::Query { .. } => peer.uid == 0 || peer.uid == svc,
            _ => peer.uid == svc,
        };
        let who = format!("uid={} pid={}", peer.uid, peer.pid);
        if !allowed {
            let _ = self.refresh_clock();
            self.log_refusal(&format!(
                "{who} request={} not permitted for this uid",
                req.name()
            ));
            return Response::Error {
                code: ErrorCode::NotPermitted,
                message: format!(
                    "uid {} may not make {} requests to this service",
                    peer.uid,
                    req.name()
                ),
            };
        }
        if let Err(e) = self.refresh_clock() {
            return Response::Error {
                code: ErrorCode::Internal,
                message: e.to_string(),
            };
        }
        let desc = describe(&req);
        let name = req.name();
        match self.dispatch(req) {
            Ok(r) => r,
            Err(e) => {
                if e.code != ErrorCode::Internal && e.code != ErrorCode::NotFound {
                    self.log_refusal(&format!("{who} request={name} {desc}: {}", e.message));
                } else if e.code == ErrorCode::Internal {
                    let _ = self.log(
                        "error",
                        &format!("{who} request={name} {desc}: {}", e.message),
                    );
                }
                Response::Error {
                    code: e.code,
                    message: e.message,
                }
            }
        }
    }

    fn dispatch(&mut self, req: Request) -> std::result::Result<Response, ReqError> {
        match req {
            Request::Seal { path } => self.seal(&path),
            Request::Extend { target, until_unix } => self.extend(&target, until_unix),
            Request::Query { target } => {
                let i = self.find(&target)?;
                let x = self.expiries();
                Ok(Response::Entry(self.ledger.entries[i].info(x[i])))
            }
            Request::Delete { target } => self.delete(&target),
            Request::Status => Ok(Response::Status(self.status())),
            Request::TimeAccept => self.time_accept(),
        }
    }

    fn find(&self, t: &Target) -> std::result::Result<usize, ReqError> {
        let i = match t {
            Target::Path(p) => self.ledger.find_path(p),
            Target::Point(id) => self.ledger.find_point(None, *id),
        };
        i.ok_or_else(|| {
            ReqError::new(
                ErrorCode::NotFound,
                format!("no sealed file {t:?} in the ledger"),
            )
        })
    }

    fn locked_bytes(&self) -> u64 {
        self.ledger
            .entries
            .iter()
            .filter(|e| e.state == FileState::Locked)
            .map(|e| e.size)
            .sum()
    }

    fn seal(&mut self, path: &Path) -> std::result::Result<Response, ReqError> {
        validate_seal_path(path)?;
        let ri = self
            .repos
            .iter()
            .position(|r| path.parent() == Some(incoming_dir(&r.path).as_path()))
            .ok_or_else(|| {
                ReqError::refused(format!(
                    "{} is not in the incoming/ folder of a guarded repository",
                    path.display()
                ))
            })?;
        let name = path.file_name().unwrap_or_default().to_os_string();
        let point = name
            .to_str()
            .and_then(parse_point_file_name)
            .ok_or_else(|| {
                ReqError::refused(format!("{} is not named <point id>.bwrp", path.display()))
            })?;
        let repo_path = self.repos[ri].path.clone();
        if path != incoming_path(&repo_path, point) {
            return Err(ReqError::refused(format!(
                "{} is not in canonical form",
                path.display()
            )));
        }
        if let Some(i) = self.ledger.find_point(Some(&repo_path), point) {
            if self.ledger.entries[i].state != FileState::Deleted {
                if self.repos[ri].incoming_exists(&name) {
                    return Err(ReqError::refused(format!(
                        "restore point {point} is already sealed at {}; {} is a second copy",
                        self.ledger.entries[i].path().display(),
                        path.display()
                    )));
                }
                let x = self.expiries();
                return Ok(Response::Sealed(self.ledger.entries[i].info(x[i])));
            }
        }
        let budget = self
            .config
            .max_locked_bytes
            .saturating_sub(self.locked_bytes());
        let s = self.repos[ri].seal(&name, point, budget)?;
        let entry = Entry {
            repo: repo_path,
            job: s.job,
            chain: s.chain,
            point: s.point,
            dev: s.dev,
            ino: s.ino,
            size: s.size,
            root: s.root,
            sealed: self.trusted,
            period_days: self.repos[ri].min_period_days,
            requested: 0,
            floor: 0,
            state: FileState::Locked,
            state_time: 0,
        };
        self.ledger.entries.push(entry);
        let x = match self.commit() {
            Ok(x) => x,
            Err(e) => {
                // The file stays immutable; the next start reports it as unrecorded.
                self.ledger.entries.pop();
                return Err(e);
            }
        };
        let i = self.ledger.entries.len() - 1;
        let info = self.ledger.entries[i].info(x[i]);
        let detail = format!(
            "{} job={} chain={} size={} root={} expiry={}",
            info.sealed_path.display(),
            info.job,
            info.chain,
            info.size,
            info.root_digest,
            info.expiry_unix
        );
        self.log("seal", &detail)
            .map_err(|e| ReqError::internal(e.to_string()))?;
        self.relock_all()
            .map_err(|e| ReqError::internal(e.to_string()))?;
        let x = self.expiries();
        Ok(Response::Sealed(self.ledger.entries[i].info(x[i])))
    }

    fn extend(&mut self, t: &Target, until: i64) -> std::result::Result<Response, ReqError> {
        let i = self.find(t)?;
        let x = self.expiries();
        let e = &self.ledger.entries[i];
        if e.state == FileState::Deleted {
            return Err(ReqError::new(
                ErrorCode::NotFound,
                format!("{} was deleted", e.path().display()),
            ));
        }
        if until < x[i] {
            return Err(ReqError::refused(format!(
                "{} is protected until {}; a request for {until} would shorten that, and nothing can shorten a lock",
                e.path().display(),
                x[i]
            )));
        }
        let (capped_until, capped) = cap_request(e.sealed, until, self.config.max_period_days);
        if capped_until <= x[i] {
            return Ok(Response::Extended {
                info: e.info(x[i]),
                capped,
            });
        }
        if e.state == FileState::Unlocked
            && self.locked_bytes().saturating_add(e.size) > self.config.max_locked_bytes
        {
            return Err(ReqError::new(
                ErrorCode::Limit,
                "locking this file again would exceed max_locked_bytes",
            ));
        }
        let detail = format!(
            "{} from {} to {capped_until}{}",
            e.path().display(),
            x[i],
            if capped { " (capped)" } else { "" }
        );
        self.ledger.entries[i].requested = self.ledger.entries[i].requested.max(capped_until);
        self.commit()?;
        self.log("extend", &detail)
            .map_err(|e| ReqError::internal(e.to_string()))?;
        self.relock_all()
            .map_err(|e| ReqError::internal(e.to_string()))?;
        let x = self.expiries();
        Ok(Response::Extended {
            info: self.ledger.entries[i].info(x[i]),
            capped,
        })
    }

    fn delete(&mut self, t: &Target) -> std::result::Result<Response, ReqError> {
        let i = self.find(t)?;
        let x = self.expiries();
        let e = self.ledger.entries[i].clone();
        if e.state == FileState::Deleted {
            return Err(ReqError::new(
                ErrorCode::NotFound,
                format!("{} was already deleted", e.path().display()),
            ));
        }
        if self.clock.frozen() {
            return Err(ReqError::refused(format!(
                "unlocks are frozen by a clock alert; {} stays protected until root runs `bulwark-immutd time accept`",
                e.path().display()
            )));
        }
        if !is_due(x[i], self.trusted, false) {
            return Err(ReqError::refused(format!(
                "{} is protected until {} (trusted clock now {})",
                e.path().display(),
                x[i],
                self.trusted
            )));
        }
        let repo = self.repo_of(&e).ok_or_else(|| {
            ReqError::refused(format!(
                "{} is no longer guarded by this service",
                e.repo.display()
            ))
        })?;
        if e.state == FileState::Locked {
            repo.set_lock(&e, false)?;
            self.ledger.entries[i].state = FileState::Unlocked;
            self.ledger.entries[i].state_time = self.trusted;
            self.log(
                "unlock",
                &format!("{} expired {}", e.path().display(), x[i]),
            )
            .map_err(|err| ReqError::internal(err.to_string()))?;
        }
        let repo = self.repo_of(&e).expect("checked above");
        repo.delete(&e)?;
        self.ledger.entries[i].state = FileState::Deleted;
        self.ledger.entries[i].state_time = self.trusted;
        self.commit()?;
        self.log("delete", &format!("{}", e.path().display()))
            .map_err(|err| ReqError::internal(err.to_string()))?;
        Ok(Response::Deleted { path: e.path() })
    }

    fn time_accept(&mut self) -> std::result::Result<Response, ReqError> {
        let r = self.source.read();
        let before = self.trusted;
        self.clock = ClockState::accept(&r);
        self.trusted = r.wall;
        self.wall = r.wall;
        self.save_clock()
            .map_err(|e| ReqError::internal(e.to_string()))?;
        self.log(
            "time-accept",
            &format!("trusted clock moved from {before} to {} by root", r.wall),
        )
        .map_err(|e| ReqError::internal(e.to_string()))?;
        self.unlock_due()
            .map_err(|e| ReqError::internal(e.to_string()))?;
        Ok(Response::TimeAccepted {
            trusted_unix: self.trusted,
        })
    }

    /// The status summary.
    pub fn status(&self) -> StatusInfo {
        let x = self.expiries();
        let locked = || {
            self.ledger
                .entries
                .iter()
                .zip(&x)
                .filter(|(e, _)| e.state == FileState::Locked)
        };
        StatusInfo {
            trusted_unix: self.trusted,
            wall_unix: self.wall,
            unlocks_frozen: self.clock.frozen(),
            alert: self
                .clock
                .alert
                .as_ref()
                .map(|a| a.message.clone())
                .unwrap_or_default(),
            files_locked: locked().count() as u64,
            bytes_locked: self.locked_bytes(),
            files_unlocked: self
                .ledger
                .entries
                .iter()
                .filter(|e| e.state == FileState::Unlocked)
                .count() as u64,
            next_expiry_unix: locked().map(|(_, &x)| x).min().unwrap_or(0),
            repositories: self.repos.len() as u32,
            audit_problem: self.audit.problem.clone().unwrap_or_default(),
            // The socket's counters are filled in by the server.
            ..StatusInfo::default()
        }
    }

    /// The ledger with computed expiries, for `status`.
    pub fn ledger_view(&self) -> Vec<(Entry, i64)> {
        self.ledger
            .entries
            .iter()
            .cloned()
            .zip(self.expiries())
            .collect()
    }

    /// Path of the ledger file.
    pub fn ledger_path(&self) -> &Path {
        &self.paths.ledger
    }
}

fn describe(r: &Request) -> String {
    match r {
        Request::Seal { path } => format!("path={}", path.display()),
        Request::Extend { target, until_unix } => format!("target={target:?} until={until_unix}"),
        Request::Query { target } | Request::Delete { target } => format!("target={target:?}"),
        Request::Status | Request::TimeAccept => String::new(),
    }
}

/// For the socket server ([`crate::server`]), which rate-limits these events itself.
impl Service {
    /// Audits (and logs) an event of the socket, such as a refused connection.
    pub fn audit_connection_event(&mut self, event: &str, detail: &str) {
        let _ = self.refresh_clock();
        if let Err(e) = self.log(event, detail) {
            eprintln!("bulwark-immutd: cannot write the audit log: {e}");
        }
    }
}
