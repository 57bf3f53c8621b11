//! The service's state and its answer to each request: the policy in one place.

use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use bulwark_immut_msg::layout::{incoming_dir, incoming_path, parse_point_file_name};
use bulwark_immut_msg::{ErrorCode, FileState, Request, Response, StatusInfo, Target, TimePreview};
use bulwark_sys::PeerCred;

use crate::audit::AuditLog;
use crate::clock::{ClockState, Reading};
use crate::config::{check_root_owned, Config};
use crate::error::{ImmutdError, ReqError, Result};
use crate::expiry::{cap_request, expiries, is_due};
use crate::ledger::{Entry, Ledger};
use crate::repo::GuardedRepo;

mod approve;
mod watch;

pub use watch::{read_alerts, ALERTS_FILE};

/// Where the clocks are read from; tests inject their own.
pub trait ClockSource: Send {
    /// Reads wall clock, boot-time clock and boot id.
    fn read(&self) -> Reading;
}

/// The machine's clocks.
pub struct SystemClock;

impl ClockSource for SystemClock {
    fn read(&self) -> Reading {
        let wall = bulwark_time::UnixTime::now().secs();
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
                    kind: crate::clock::AlertKind::Jump,
                    detected_wall: r.wall,
                    excess_secs: 0,
                    message: "the clock checkpoint is missing while files are sealed; unlocks are frozen; check that the clock is right (NTP / chrony, `timedatectl`), then run `bulwark-immutd time accept`".into(),
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
    /// The time seals are stamped with (see [`crate::clock::Observation::stamp`]).
    stamp: i64,
    /// False until this process has read the clocks once.
    observed: bool,
    wall: i64,
    source: Box<dyn ClockSource>,
    refusals: RefusalLimit,
    /// The ledger in memory holds changes the last write could not save (state folder
    /// full?): retried before every request and on every tick.
    ledger_dirty: bool,
    /// Trusted time of the last scan for sealed files missing from the ledger.
    last_adopt_scan: i64,
    /// Where the configuration is read from, for noticing edits (none when built in memory).
    config_path: Option<PathBuf>,
    /// BLAKE3 of the configuration file as last read.
    seen_config: String,
    /// A configuration on disk that weakens the one in force, with its weakenings: not
    /// applied until approved.
    proposed: Option<(Config, Vec<String>)>,
    /// Statements issued and not yet used or expired.
    pending: Vec<approve::Pending>,
    /// Protection alerts: root's hand seen, configurations refused.
    alerts: watch::Alerts,
    /// The watch on root's hand: when it last ran, what it saw.
    watch: watch::WatchState,
    _lock: File,
}

/// Seconds between scans for sealed files missing from the ledger while running.
const ADOPT_SCAN_SECS: i64 = 600;
/// Least seconds between scans prompted by a query for an unknown point.
const ADOPT_QUERY_SECS: i64 = 5;

fn validate_seal_path(p: &Path) -> std::result::Result<(), ReqError> {
    if !p.is_absolute() {
        return Err(ReqError::new(
            ErrorCode::BadRequest,
            format!("{} is not an absolute path", p.display()),
        ));
    }
    let raw = p.as_os_str().as_encoded_bytes();
    if raw.windows(2).any(|w| w == b"//") || raw.ends_with(b"/") {
        return Err(ReqError::refused(format!(
            "{} is not in canonical form (`//` or a trailing `/`); give the exact path REPO/incoming/<point>.bwrp",
            p.display()
        )));
    }
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
        Service::open_at(config, source, None)
    }

    /// [`Service::open`] for a configuration read from `config_path`: the configuration in
    /// force is the last approved one unless the file only strengthens it, and the file is
    /// watched for edits.
    pub fn open_at(
        config: Config,
        source: Box<dyn ClockSource>,
        config_path: Option<PathBuf>,
    ) -> Result<Service> {
        prepare_state_dir(&config.state_dir)?;
        let seen_config = config.digest();
        let (config, proposed, approved_problem) =
            approve::reconcile_at_start(config, config_path.as_deref())?;
        let paths = StatePaths::new(&config.state_dir);
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(bulwark_sys::open::NOFOLLOW)
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
            stamp: trusted,
            observed: false,
            wall: r.wall,
            source,
            refusals: RefusalLimit {
                minute: 0,
                count: 0,
                suppressed: 0,
            },
            ledger_dirty: false,
            last_adopt_scan: i64::MIN,
            config_path,
            seen_config,
            proposed: None,
            pending: Vec::new(),
            alerts: watch::Alerts::default(),
            watch: watch::WatchState::default(),
            _lock: lock,
        };
        s.alerts = watch::Alerts::load(&s.paths.dir);
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
        s.after_start(proposed, approved_problem)?;
        s.watch_now();
        Ok(s)
    }

    /// Records files a crash or a failed ledger write left sealed but missing from the
    /// ledger. Their seal time is taken as now, which can only lengthen their protection.
    /// Runs at start, every [`ADOPT_SCAN_SECS`] and when a query names an unknown point.
    fn adopt_unrecorded(&mut self) -> Result<()> {
        self.last_adopt_scan = self.trusted;
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
                        let entry = Entry::new_sealed(
                            self.repos[ri].path.clone(),
                            s,
                            self.stamp,
                            self.repos[ri].min_period_days,
                        );
                        self.ledger.entries.push(entry);
                        added = true;
                        self.log("adopt", &format!("{detail} was sealed but not in the ledger (crash or failed ledger write?); recorded as sealed now"))?;
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
        let before = self.clock.alert.clone();
        let (next, obs) = self
            .clock
            .observe(&r, self.config.tolerance(), !self.observed);
        self.observed = true;
        self.clock = next;
        self.trusted = obs.trusted;
        self.stamp = obs.stamp;
        self.wall = r.wall;
        if let Some(a) = &obs.cleared {
            self.log(
                "clock-ok",
                &format!(
                    "the wall clock is right again (was: {}); trusted time {}",
                    a.message, self.trusted
                ),
            )?;
        }
        if let Some(a) = obs.new_alert {
            eprintln!("bulwark-immutd: ALERT: {}", a.message);
            let event = match a.kind {
                crate::clock::AlertKind::Jump => "clock-alert",
                crate::clock::AlertKind::Backward => "clock-backward",
            };
            self.log(event, &a.message)?;
        }
        if obs.cleared.is_some() || self.clock.alert != before {
            self.save_clock()?;
        }
        Ok(())
    }

    fn save_clock(&self) -> Result<()> {
        crate::atomic::write_atomic(&self.paths.clock, self.clock.encode().as_bytes(), 0o600)
    }

    fn expiries(&self) -> Vec<i64> {
        let cfg = &self.config;
        let mut x = expiries(&self.ledger.entries, |r| {
            cfg.repo(r).map(|c| c.min_period_days)
        });
        released_expiries(&self.ledger.entries, &mut x);
        x
    }

    fn repo_of(&self, e: &Entry) -> Option<&GuardedRepo> {
        self.repos.iter().find(|r| r.path == e.repo)
    }

    /// Raises floors to the computed expiries and writes the ledger. A failed write keeps
    /// the change in memory, marked for [`Service::retry_ledger`].
    fn commit(&mut self) -> std::result::Result<Vec<i64>, ReqError> {
        let x = self.expiries();
        for (e, &x) in self.ledger.entries.iter_mut().zip(&x) {
            e.floor = e.floor.max(x);
        }
        match self.ledger.save(&self.paths.ledger) {
            Ok(()) => {
                self.ledger_dirty = false;
                Ok(x)
            }
            Err(e) => {
                self.ledger_dirty = true;
                Err(ReqError::internal(format!(
                    "writing the ledger in {}: {e}; the change is kept in memory and written as soon as the state folder has room again (free space there)",
                    self.paths.dir.display()
                )))
            }
        }
    }

    /// Writes a ledger that an earlier write could not save.
    fn retry_ledger(&mut self) {
        if !self.ledger_dirty {
            return;
        }
        if self.commit().is_ok() {
            let _ = self.log(
                "ledger-written",
                "the ledger changes kept in memory after a failed write are saved",
            );
        }
    }

    /// Scans for unrecorded sealed files when the last scan is older than `every` seconds.
    fn adopt_if_due(&mut self, every: i64) {
        if self.trusted.saturating_sub(self.last_adopt_scan) < every {
            return;
        }
        if let Err(e) = self.adopt_unrecorded() {
            let _ = self.log("adopt-failed", &e.to_string());
        }
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
                changed |= self.set_entry_lock(i, true, "relock", &detail)?;
            }
        }
        if changed {
            self.commit().map_err(|e| ImmutdError::Other(e.message))?;
        }
        Ok(())
    }

    /// Sets (`lock`) or clears the immutable attribute of entry `i`'s file and, when that
    /// worked, its state in the ledger, logging `event` (`event-failed` when it did not).
    /// Returns whether the ledger changed.
    fn set_entry_lock(&mut self, i: usize, lock: bool, event: &str, detail: &str) -> Result<bool> {
        let e = &self.ledger.entries[i];
        match self.repo_of(e).map(|r| r.set_lock(e, lock)) {
            Some(Ok(())) => {
                let (state, since) = match lock {
                    true => (FileState::Locked, 0),
                    false => (FileState::Unlocked, self.trusted),
                };
                self.ledger.entries[i].state = state;
                self.ledger.entries[i].state_time = since;
                self.log(event, detail)?;
                Ok(true)
            }
            Some(Err(err)) => {
                self.log(&format!("{event}-failed"), &format!("{detail}: {err}"))?;
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// One timer step: check the clock, then unlock what expired unless unlocks are frozen.
    pub fn tick(&mut self) -> Result<()> {
        // A full state folder fails the checkpoint; the ledger retry and the unlocks still
        // run, so that everything resumes the moment there is room again.
        let clock = self.refresh_clock().and_then(|()| self.save_clock());
        self.retry_ledger();
        self.adopt_if_due(ADOPT_SCAN_SECS);
        self.watch_if_due();
        let unlocks = self.unlock_due();
        clock.and(unlocks)
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
            changed |= self.set_entry_lock(i, false, "unlock", &detail)?;
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
            Request::TimeAccept
            | Request::TimePreview
            | Request::Prepare { .. }
            | Request::Apply { .. }
            | Request::AckAlerts => peer.uid == 0,
            Request::Status | Request::Query { .. } | Request::List { .. } => {
                peer.uid == 0 || peer.uid == svc
            }
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
            // The clock itself is read and credited before anything is written; only
            // recording an alert failed (state folder full?). Answer anyway.
            eprintln!("bulwark-immutd: recording the clock state failed: {e}");
        }
        self.retry_ledger();
        if let Request::Query {
            target: t @ Target::Point(_),
        } = &req
        {
            // A sealed point missing from the ledger (failed write, crash) is adopted now
            // rather than at the next start, so its chain can go on.
            if self.find(t).is_err() {
                self.adopt_if_due(ADOPT_QUERY_SECS);
            }
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
            Request::TimePreview => Ok(Response::TimePreview(self.time_preview())),
            Request::List { repo, cursor } => self.list(&repo, cursor),
            Request::Prepare {
                action,
                targets,
                valid_secs,
            } => self.prepare(&action, &targets, valid_secs),
            Request::Apply {
                statement,
                signatures,
            } => self.apply(&statement, &signatures),
            Request::AckAlerts => self.ack_alerts(),
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
        // Byte for byte: `Path` equality ignores `//` and a trailing `/`, the rule does not.
        if path.as_os_str() != incoming_path(&repo_path, point).as_os_str() {
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
        // A repository initialised after the service started gets its settings locked now.
        match self.repos[ri].protect_settings() {
            Ok(true) => {
                let d = format!("{}/repository.toml made immutable", repo_path.display());
                let _ = self.log("settings-sealed", &d);
            }
            Ok(false) => {}
            Err(e) => {
                let d = format!("{}/repository.toml: {e}", repo_path.display());
                let _ = self.log("settings-unprotected", &d);
            }
        }
        let budget = self
            .config
            .max_locked_bytes
            .saturating_sub(self.locked_bytes());
        let s = self.repos[ri].seal(&name, point, budget)?;
        let period = self.repos[ri].min_period_days;
        let entry = Entry::new_sealed(repo_path, s, self.stamp, period);
        self.ledger.entries.push(entry);
        let x = match self.commit() {
            Ok(x) => x,
            Err(e) => {
                // The file is sealed: keep its entry in memory (queries find it, the write
                // is retried), and say so.
                let _ = self.log(
                    "ledger-write-failed",
                    &format!(
                        "{} is sealed but not yet recorded: {}",
                        path.display(),
                        e.message
                    ),
                );
                return Err(ReqError::internal(format!(
                    "restore point {point} is sealed, but {}",
                    e.message
                )));
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
        if self.clock.frozen() && e.released == 0 {
            return Err(ReqError::refused(format!(
                "unlocks are frozen by a clock alert; {} stays protected until root runs `bulwark-immutd time accept`",
                e.path().display()
            )));
        }
        if !is_due(x[i], self.trusted, false) {
            return Err(ReqError::refused(format!(
                "{} is protected until {} (trusted clock now {}); only k approvers can release it earlier (`bulwark-immutd approve release`)",
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
        let preview = self.time_preview_at(&r);
        if let Some(a) = &self.config.approval {
            if preview.files_unlocking > 0 {
                return Err(ReqError::refused(format!(
                    "accepting the wall clock now would unlock {} files ({} bytes) before the trusted clock would; that needs {} approvers' signatures: run `bulwark-immutd approve time-accept --out STATEMENT`, have them sign it, then `bulwark-immutd approve apply STATEMENT --sig …`",
                    preview.files_unlocking, preview.bytes_unlocking, a.threshold
                )));
            }
        }
        self.accept_time(&r, &preview, "by root")
    }

    /// Credits the wall clock of reading `r` (checked by the caller), audits it and unlocks
    /// what is due.
    fn accept_time(
        &mut self,
        r: &Reading,
        preview: &TimePreview,
        how: &str,
    ) -> std::result::Result<Response, ReqError> {
        let r = r.clone();
        let before = self.trusted;
        self.clock = self.clock.accept_now(&r);
        self.trusted = self.clock.last_trusted;
        self.stamp = self.clock.last_stamp;
        self.wall = r.wall;
        self.save_clock()
            .map_err(|e| ReqError::internal(e.to_string()))?;
        let behind = if r.wall < self.trusted {
            format!(
                "; the wall clock is {} behind and is accepted as an offset (trusted time never goes backwards)",
                crate::clock::human(self.trusted - r.wall)
            )
        } else {
            String::new()
        };
        self.log(
            "time-accept",
            &format!(
                "trusted clock moved from {before} to {} {how} (wall {}); {} files ({} bytes) unlock now, earliest expiry {}{behind}",
                self.trusted,
                r.wall,
                preview.files_unlocking,
                preview.bytes_unlocking,
                preview.earliest_expiry_unix
            ),
        )
        .map_err(|e| ReqError::internal(e.to_string()))?;
        self.unlock_due()
            .map_err(|e| ReqError::internal(e.to_string()))?;
        Ok(Response::TimeAccepted {
            trusted_unix: self.trusted,
        })
    }

    /// What `time accept` would do now.
    fn time_preview(&mut self) -> TimePreview {
        let r = self.source.read();
        self.time_preview_at(&r)
    }

    fn time_preview_at(&self, r: &Reading) -> TimePreview {
        time_preview(&self.clock, r, &self.ledger.entries, &self.expiries())
    }

    /// One page of ledger entries of `repo` (all when empty), from index `cursor`.
    fn list(&self, repo: &Path, cursor: u32) -> std::result::Result<Response, ReqError> {
        if !repo.as_os_str().is_empty() && !self.repos.iter().any(|r| r.path == repo) {
            return Err(ReqError::new(
                ErrorCode::NotFound,
                format!(
                    "{} is not a repository guarded by this service",
                    repo.display()
                ),
            ));
        }
        let x = self.expiries();
        // Room for the frame's own header and the page's counts.
        let budget = bulwark_immut_msg::MAX_FRAME as usize - 64;
        let mut used = 0;
        let mut entries = Vec::new();
        let mut i = cursor as usize;
        while i < self.ledger.entries.len() {
            let e = &self.ledger.entries[i];
            if repo.as_os_str().is_empty() || e.repo == repo {
                let info = e.info(x[i]);
                let len = bulwark_immut_msg::msg::encoded_info_len(&info);
                if used + len > budget {
                    break;
                }
                used += len;
                entries.push(info);
            }
            i += 1;
        }
        let next_cursor = if i >= self.ledger.entries.len() {
            0
        } else {
            u32::try_from(i).map_err(|_| ReqError::internal("ledger too long to list"))?
        };
        Ok(Response::Entries {
            entries,
            next_cursor,
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
            alert: self.clock.alert_message(),
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
            protection_alerts: self.alerts.lines(),
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

/// A file k approvers released expires at its release (never later than it would have).
pub fn released_expiries(entries: &[Entry], x: &mut [i64]) {
    for (e, x) in entries.iter().zip(x.iter_mut()) {
        if e.released != 0 {
            *x = (*x).min(e.released);
        }
    }
}

/// What accepting the wall clock of reading `r` would do, given the clock state and the
/// ledger with its computed expiries `x`: the one rule the running service and the offline
/// `bulwark-immutd time accept` both apply. Counts the locked files that would unlock earlier
/// than the trusted clock would unlock them.
pub fn time_preview(clock: &ClockState, r: &Reading, entries: &[Entry], x: &[i64]) -> TimePreview {
    let trusted = clock.last_trusted;
    let accepted = clock.accepted_time(r);
    let early: Vec<(u64, i64)> = entries
        .iter()
        .zip(x)
        .filter(|(e, &xi)| e.state == FileState::Locked && xi > trusted && xi <= accepted)
        .map(|(e, &xi)| (e.size, xi))
        .collect();
    TimePreview {
        trusted_unix: trusted,
        wall_unix: r.wall,
        accepted_unix: accepted,
        files_unlocking: early.len() as u64,
        bytes_unlocking: early.iter().map(|e| e.0).sum(),
        earliest_expiry_unix: early.iter().map(|e| e.1).min().unwrap_or(0),
        alert: clock.alert_message(),
    }
}

fn describe(r: &Request) -> String {
    match r {
        Request::Seal { path } => format!("path={}", path.display()),
        Request::Extend { target, until_unix } => format!("target={target:?} until={until_unix}"),
        Request::Query { target } | Request::Delete { target } => format!("target={target:?}"),
        Request::List { repo, cursor } => format!("repo={} cursor={cursor}", repo.display()),
        Request::Prepare {
            action,
            targets,
            valid_secs,
        } => format!(
            "action={action} targets={} valid={valid_secs}s",
            targets.join(",")
        ),
        Request::Apply {
            statement,
            signatures,
        } => format!(
            "statement={} bytes blake3={} signatures={}",
            statement.len(),
            blake3::hash(statement).to_hex(),
            signatures.len()
        ),
        Request::Status | Request::TimeAccept | Request::TimePreview | Request::AckAlerts => {
            String::new()
        }
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
