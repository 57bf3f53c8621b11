//! Four-eyes approvals: the service issues the statement of one weakening action (with a
//! nonce and an expiry of its choosing), keeps it as pending, and performs it only when the
//! exact bytes come back with valid signatures of `threshold` different approvers before
//! the expiry. A statement is used once; a restart of the service voids every pending one.

use std::path::{Path, PathBuf};

use bulwark_approval::{Action, FileRef, RepoFiles, Statement};
use bulwark_format::PointId;
use bulwark_immut_msg::{FileState, Response};

use super::Service;
use crate::config::Config;
use crate::error::{ImmutdError, ReqError, Result};

/// The approved configuration's text, in the state folder.
const APPROVED_FILE: &str = "approved-config";
/// Longest and shortest validity of a statement, seconds.
pub const MAX_VALID_SECS: u32 = 7 * 86_400;
/// Most statements pending at once (older ones are voided).
const MAX_PENDING: usize = 32;

/// A statement issued and not yet used.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    nonce: String,
    /// BLAKE3 of the exact statement text.
    digest: String,
    expires: i64,
}

type StartConfig = (Config, Option<(Config, Vec<String>)>, Option<String>);

/// At start: the configuration in force is the file's unless it weakens the approved one
/// (then the approved one, with the file kept as a proposal). Returns the configuration in
/// force, the proposal and a problem with the approved copy.
pub(crate) fn reconcile_at_start(disk: Config, path: Option<&Path>) -> Result<StartConfig> {
    let approved_path = disk.state_dir.join(APPROVED_FILE);
    let text = match std::fs::read(&approved_path) {
        Ok(b) if b.len() <= 1 << 20 => String::from_utf8(b).ok(),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // First start (or first with this feature): the file is the approved one.
            crate::atomic::write_atomic(&approved_path, disk.text.as_bytes(), 0o600)?;
            return Ok((disk, None, None));
        }
        Err(e) => return Err(ImmutdError::io("reading", &approved_path)(e)),
    };
    let Some(text) = text else {
        return Ok((
            disk,
            None,
            Some(format!(
                "{} is not a readable configuration; the configuration file is used as it is",
                approved_path.display()
            )),
        ));
    };
    if text == disk.text {
        return Ok((disk, None, None));
    }
    let shown = path.unwrap_or(&approved_path);
    let passwd = crate::config::read_passwd()?;
    let approved = match Config::parse(shown, &text, &passwd) {
        Ok(c) => c,
        Err(e) => {
            return Ok((disk, None, Some(format!(
                "the approved configuration {} no longer parses ({e}); the configuration file is used as it is",
                approved_path.display()
            ))))
        }
    };
    let w = approved.weakenings(&disk);
    if w.is_empty() || approved.approval.is_none() {
        // `after_start` records the file as approved (and alerts when it weakened).
        // Handing back the file itself as the "proposal" tells `after_start` it was
        // applied although it weakens (allowed only while no approvers are configured).
        let weakened = (!w.is_empty()).then(|| (disk.clone(), w));
        return Ok((disk, weakened, None));
    }
    Ok((approved, Some((disk, w)), None))
}

fn random_hex16() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// This host's name and machine id, as statements name them.
pub fn host_identity() -> (String, String) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| bulwark_approval::statement::valid_value(h))
        .unwrap_or_else(|| "unknown-host".into());
    let id = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .unwrap_or_else(|| blake3::hash(host.as_bytes()).to_hex()[..32].to_string());
    (host, id)
}

/// BLAKE3 over a configuration text and the settings digests it goes with.
fn proposal_digest<'a>(
    text: &str,
    settings: impl Iterator<Item = (&'a PathBuf, &'a String)>,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(text.as_bytes());
    for (r, d) in settings {
        h.update(b"\0settings\0");
        h.update(r.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(d.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The alert of a weakened configuration applied because no approvers are configured.
pub(super) fn weakened_unguarded(w: &[String]) -> String {
    format!(
        "the configuration was weakened without four-eyes protection (no [approval] configured): {}",
        w.join("; ")
    )
}

impl Service {
    /// The alert of a configuration file that weakens protection and waits for approvers.
    pub(super) fn weakening_refused(&self, w: &[String]) -> String {
        format!(
            "the configuration file weakens protection and is NOT applied: {}; the service runs on the approved configuration; to apply it, run `bulwark-immutd approve config --out STATEMENT` and have {} approvers sign it",
            w.join("; "),
            self.config.approval.as_ref().map_or(0, |a| a.threshold)
        )
    }

    /// After start: record the configuration in force as approved, alert a refused one.
    pub(super) fn after_start(
        &mut self,
        proposed: Option<(Config, Vec<String>)>,
        problem: Option<String>,
    ) -> Result<()> {
        if let Some(p) = problem {
            self.condition("approved-config", "config-approved-damaged", p);
        }
        match proposed {
            Some((other, w)) if other.text == self.config.text => {
                // Weakened while no approvers were configured: applied, and said so.
                self.alert_event_at_start("config-weakened", weakened_unguarded(&w));
                self.save_approved()?;
            }
            Some((disk, w)) => {
                let msg = self.weakening_refused(&w);
                self.proposed = Some((disk, w));
                self.condition("config", "config-weakening-refused", msg);
            }
            None => {
                self.alerts.clear("config");
                self.save_approved()?;
                let d = self.config.digest();
                let _ = self.log("config-in-force", &format!("configuration {d}"));
            }
        }
        Ok(())
    }

    fn alert_event_at_start(&mut self, event: &str, msg: String) {
        eprintln!("bulwark-immutd: ALERT: {msg}");
        let _ = self.log(event, &msg);
        self.alerts.event(self.wall, msg);
    }

    fn save_approved(&self) -> Result<()> {
        let p = self.paths.dir.join(APPROVED_FILE);
        if std::fs::read(&p).ok().as_deref() == Some(self.config.text.as_bytes()) {
            return Ok(());
        }
        crate::atomic::write_atomic(&p, self.config.text.as_bytes(), 0o600)
    }

    /// Puts `new` in force (approved, or not weakening) and records it as approved.
    pub(super) fn apply_config(&mut self, new: Config, why: &str) {
        let mut notes = Vec::new();
        // New repositories are guarded at once; dropped ones no longer.
        for rc in &new.repositories {
            if self.repos.iter().any(|r| r.path == rc.path) {
                continue;
            }
            match crate::repo::GuardedRepo::open(
                rc,
                self.config.service_uid,
                self.config.service_gid,
                new.lock_repository_root,
            ) {
                Ok(r) => {
                    notes.push(format!("now guarding {}", rc.path.display()));
                    self.repos.push(r);
                }
                Err(e) => notes.push(format!("cannot guard {}: {e}", rc.path.display())),
            }
        }
        self.repos
            .retain(|r| new.repositories.iter().any(|rc| rc.path == r.path));
        for r in &mut self.repos {
            if let Some(rc) = new.repo(&r.path) {
                r.min_period_days = rc.min_period_days;
            }
        }
        let mut new = new;
        if (new.service_user != self.config.service_user)
            || new.socket != self.config.socket
            || new.state_dir != self.config.state_dir
        {
            notes.push("service_user, socket and state_dir take effect at the next start".into());
            new.service_user = self.config.service_user.clone();
            new.service_uid = self.config.service_uid;
            new.service_gid = self.config.service_gid;
            new.socket = self.config.socket.clone();
            new.state_dir = self.config.state_dir.clone();
        }
        let digest = new.digest();
        self.config = new;
        let _ = self.save_approved();
        let _ = self.log(
            "config-applied",
            &format!(
                "configuration {digest} in force ({why}){}{}",
                if notes.is_empty() { "" } else { "; " },
                notes.join("; ")
            ),
        );
    }

    /// The statement for `action`.
    pub(super) fn prepare(
        &mut self,
        action: &str,
        targets: &[String],
        valid_secs: u32,
    ) -> std::result::Result<Response, ReqError> {
        let Some(a) = &self.config.approval else {
            return Err(ReqError::refused(
                "no approvers are configured: add an [approval] table (threshold and approvers) to the configuration first (see docs/four-eyes.md)",
            ));
        };
        let threshold = a.threshold;
        if valid_secs == 0 || valid_secs > MAX_VALID_SECS {
            return Err(ReqError::refused(format!(
                "a statement is valid for 1 to {MAX_VALID_SECS} seconds, not {valid_secs}"
            )));
        }
        let action = match action {
            "release" => self.release_action(targets)?,
            "time-accept" => {
                let r = self.source.read();
                let p = self.time_preview_at(&r);
                if p.files_unlocking == 0 {
                    return Err(ReqError::refused(
                        "accepting the wall clock now unlocks nothing early: no approval is needed, run `bulwark-immutd time accept`",
                    ));
                }
                Action::TimeAccept {
                    trusted: p.trusted_unix,
                    wall: p.wall_unix,
                    offset: p.wall_unix - p.trusted_unix,
                    files_unlocking: p.files_unlocking,
                    bytes_unlocking: p.bytes_unlocking,
                    earliest_expiry: p.earliest_expiry_unix,
                }
            }
            "config" => self.config_action()?,
            other => {
                return Err(ReqError::new(
                    bulwark_immut_msg::ErrorCode::BadRequest,
                    format!("unknown action {other:?}: release, time-accept or config"),
                ))
            }
        };
        let (host, machine_id) = host_identity();
        let nonce =
            random_hex16().map_err(|e| ReqError::internal(format!("reading /dev/urandom: {e}")))?;
        let st = Statement {
            host,
            machine_id,
            nonce: nonce.clone(),
            issued: self.trusted,
            expires: self.trusted.saturating_add(i64::from(valid_secs)),
            action,
        };
        st.validate().map_err(|e| ReqError::refused(e.msg))?;
        let text = st.encode();
        let digest = blake3::hash(text.as_bytes()).to_hex().to_string();
        self.pending.retain(|p| p.expires > self.trusted);
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.pending.push(Pending {
            nonce: nonce.clone(),
            digest: digest.clone(),
            expires: st.expires,
        });
        let _ = self.log(
            "approval-issued",
            &format!(
                "statement {digest} action={} nonce={nonce} expires={}; needs {threshold} signatures",
                st.action.name(),
                st.expires
            ),
        );
        Ok(Response::Statement {
            text: text.into_bytes(),
        })
    }

    fn release_action(&self, targets: &[String]) -> std::result::Result<Action, ReqError> {
        if targets.is_empty() {
            return Err(ReqError::refused(
                "name what to release: sealed paths, point ids or chain:<chain id>",
            ));
        }
        let x = self.expiries();
        let mut picked: Vec<usize> = Vec::new();
        for t in targets {
            let found: Vec<usize> = if t.starts_with('/') {
                self.ledger.find_path(Path::new(t)).into_iter().collect()
            } else if let Some(c) = t.strip_prefix("chain:") {
                let chain: PointId = c.parse().map_err(|_| {
                    ReqError::refused(format!("{t:?} is not chain:<32 hex digits>"))
                })?;
                (0..self.ledger.entries.len())
                    .filter(|&i| {
                        let e = &self.ledger.entries[i];
                        e.chain == chain && e.state != FileState::Deleted
                    })
                    .collect()
            } else {
                let p: PointId = t.parse().map_err(|_| {
                    ReqError::refused(format!(
                        "{t:?} is neither a sealed path, a point id nor chain:<chain id>"
                    ))
                })?;
                self.ledger.find_point(None, p).into_iter().collect()
            };
            if found.is_empty() {
                return Err(ReqError::new(
                    bulwark_immut_msg::ErrorCode::NotFound,
                    format!("{t} is not a sealed file in the ledger"),
                ));
            }
            for i in found {
                let e = &self.ledger.entries[i];
                if e.state == FileState::Deleted || e.released != 0 {
                    return Err(ReqError::refused(format!(
                        "{} is already {}",
                        e.path().display(),
                        if e.released != 0 {
                            "released"
                        } else {
                            "deleted"
                        }
                    )));
                }
                if x[i] <= self.trusted {
                    return Err(ReqError::refused(format!(
                        "{} expired already (at {}); it needs no approval: delete it as usual",
                        e.path().display(),
                        x[i]
                    )));
                }
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
        }
        let mut repos: Vec<RepoFiles> = Vec::new();
        for i in picked {
            let e = &self.ledger.entries[i];
            let (Some(rp), Some(fp)) = (e.repo.to_str(), e.path().to_str().map(str::to_string))
            else {
                return Err(ReqError::refused(format!(
                    "{} is not valid UTF-8 and cannot be named in a statement",
                    e.path().display()
                )));
            };
            let f = FileRef {
                path: fp,
                root: e.root.to_hex(),
                size: e.size,
                until: x[i],
            };
            match repos.iter_mut().find(|r| r.path == rp) {
                Some(r) => r.files.push(f),
                None => {
                    let id = self
                        .repos
                        .iter()
                        .find(|r| r.path == e.repo)
                        .map_or_else(|| "unknown".to_string(), |r| r.repository_id());
                    repos.push(RepoFiles {
                        path: rp.to_string(),
                        id,
                        files: vec![f],
                    });
                }
            }
        }
        Ok(Action::Release { repos })
    }

    /// The settings files changed by hand and not approved: (repo, current digest, line).
    fn settings_changes(&self) -> Vec<(PathBuf, String, String)> {
        let mut v = Vec::new();
        for r in &self.repos {
            if !r.locks_root() {
                continue;
            }
            let Ok(Some((d, _))) = r.settings_state() else {
                continue;
            };
            match self.watch.settings.get(&r.path) {
                Some(old) if *old != d => v.push((
                    r.path.clone(),
                    d.clone(),
                    format!(
                        "{}/{} changed by hand (digest {} → {})",
                        r.path.display(),
                        crate::repo::SETTINGS,
                        &old[..16],
                        &d[..16]
                    ),
                )),
                _ => {}
            }
        }
        v
    }

    /// The configuration on disk and the settings that would be approved with it.
    fn proposal(&self) -> std::result::Result<(Config, Vec<String>, String), ReqError> {
        let path = self.config_path.clone().ok_or_else(|| {
            ReqError::refused("this service was not started from a configuration file")
        })?;
        let disk = Config::load(&path).map_err(|e| {
            ReqError::refused(format!("the configuration file cannot be used: {e}"))
        })?;
        let mut changes = if disk.text == self.config.text {
            Vec::new()
        } else {
            self.config.weakenings(&disk)
        };
        let settings = self.settings_changes();
        changes.extend(settings.iter().map(|s| s.2.clone()));
        let mut after = self.watch.settings.clone();
        for (r, d, _) in &settings {
            after.insert(r.clone(), d.clone());
        }
        let digest = proposal_digest(&disk.text, after.iter());
        Ok((disk, changes, digest))
    }

    fn config_action(&self) -> std::result::Result<Action, ReqError> {
        let (_, changes, proposed) = self.proposal()?;
        if changes.is_empty() {
            return Err(ReqError::refused(
                "nothing to approve: the configuration file does not weaken the configuration in force (changes that strengthen it apply by themselves) and no repository settings were changed by hand",
            ));
        }
        Ok(Action::Config {
            approved: proposal_digest(&self.config.text, self.watch.settings.iter()),
            proposed,
            changes,
        })
    }

    /// Performs an issued statement signed by enough approvers.
    pub(super) fn apply(
        &mut self,
        statement: &[u8],
        signatures: &[Vec<u8>],
    ) -> std::result::Result<Response, ReqError> {
        let refuse = |s: &mut Service, msg: String| {
            let _ = s.log("approval-refused", &msg);
            Err(ReqError::refused(msg))
        };
        let Some(approval) = self.config.approval.clone() else {
            return refuse(
                self,
                "no approvers are configured ([approval] in the configuration)".into(),
            );
        };
        let st = match Statement::decode(statement) {
            Ok(s) => s,
            Err(e) => {
                return refuse(
                    self,
                    format!(
                        "{e}; give the statement file exactly as `bulwark-immutd approve` wrote it"
                    ),
                )
            }
        };
        let digest = blake3::hash(statement).to_hex().to_string();
        let Some(pi) = self
            .pending
            .iter()
            .position(|p| p.nonce == st.nonce && p.digest == digest)
        else {
            return refuse(self, format!(
                "statement {digest} (nonce {}) was not issued by this service, or was used already, or was voided by a restart of the service; prepare a new one with `bulwark-immutd approve`",
                st.nonce
            ));
        };
        let (host, machine_id) = host_identity();
        if st.machine_id != machine_id || st.host != host {
            return refuse(
                self,
                format!(
                    "statement {digest} names host {} ({}), not this host {host} ({machine_id})",
                    st.host, st.machine_id
                ),
            );
        }
        if self.trusted >= st.expires {
            self.pending.remove(pi);
            return refuse(
                self,
                format!(
                    "statement {digest} expired at {} (trusted clock now {}); prepare a new one",
                    st.expires, self.trusted
                ),
            );
        }
        let sigs: Vec<&[u8]> = signatures.iter().map(Vec::as_slice).collect();
        let names = match approval.approvers().check(statement, &sigs) {
            Ok(n) => n,
            Err(e) => {
                return refuse(
                    self,
                    format!("statement {digest} ({}): {e}", st.action.name()),
                )
            }
        };
        let who = names.join(", ");
        let summary = match &st.action {
            Action::Release { repos } => self.apply_release(repos, &who)?,
            Action::TimeAccept { offset, .. } => {
                let r = self.source.read();
                let now = r.wall - self.clock.last_trusted;
                let tol = self.config.clock_tolerance_secs;
                if (now - offset).abs() > tol {
                    return refuse(self, format!(
                        "the wall clock is now {now} s from the trusted clock, not the approved {offset} s (tolerance {tol} s): the clock moved since the statement was issued; prepare a new one"
                    ));
                }
                let p = self.time_preview_at(&r);
                self.accept_time(&r, &p, &format!("with the approval of {who}"))?;
                format!(
                    "time accepted with the approval of {who}: the trusted clock is now {}",
                    self.trusted
                )
            }
            Action::Config {
                approved, proposed, ..
            } => {
                let (disk, changes, now_proposed) = self.proposal()?;
                let now_approved = proposal_digest(&self.config.text, self.watch.settings.iter());
                if *approved != now_approved || *proposed != now_proposed {
                    return refuse(self, format!(
                        "statement {digest}: the configuration in force or the proposed one changed since the statement was issued; prepare a new one"
                    ));
                }
                for (r, d, _) in self.settings_changes() {
                    self.alerts.clear(&format!("settings:{}", r.display()));
                    self.watch.settings.insert(r, d);
                }
                self.save_settings();
                self.seen_config = disk.digest();
                self.proposed = None;
                self.alerts.clear("config");
                if disk.text != self.config.text {
                    self.apply_config(disk, &format!("approved by {who}"));
                }
                let _ = self.alerts.save(&self.paths.dir);
                format!("configuration approved by {who}: {}", changes.join("; "))
            }
        };
        self.pending.retain(|p| p.nonce != st.nonce);
        let _ = self.log(
            "approval-applied",
            &format!(
                "statement {digest} action={} signed by {who}: {summary}",
                st.action.name()
            ),
        );
        Ok(Response::Applied { summary })
    }

    fn apply_release(
        &mut self,
        repos: &[RepoFiles],
        who: &str,
    ) -> std::result::Result<String, ReqError> {
        // Every file is checked before any is touched.
        let mut idx = Vec::new();
        for f in repos.iter().flat_map(|r| &r.files) {
            let i = self.ledger.find_path(Path::new(&f.path)).ok_or_else(|| {
                ReqError::refused(format!("{} is no longer in the ledger", f.path))
            })?;
            let e = &self.ledger.entries[i];
            if e.root.to_hex() != f.root
                || e.size != f.size
                || e.state == FileState::Deleted
                || e.released != 0
            {
                return Err(ReqError::refused(format!(
                    "{} is not the file the statement names any more (root digest, size or state differ)",
                    f.path
                )));
            }
            idx.push(i);
        }
        let mut done = Vec::new();
        for i in idx {
            let e = self.ledger.entries[i].clone();
            let shown = e.path().display().to_string();
            let gone = if e.state == FileState::Locked {
                match self.repo_of(&e).map(|r| r.set_lock(&e, false)) {
                    Some(Ok(())) => false,
                    Some(Err(err)) => {
                        // A file root already deleted by hand: released means forgotten.
                        if !e.path().exists() {
                            true
                        } else {
                            return Err(ReqError::internal(format!(
                                "unlocking {shown}: {}",
                                err.message
                            )));
                        }
                    }
                    None => !e.path().exists(),
                }
            } else {
                false
            };
            let en = &mut self.ledger.entries[i];
            en.released = self.trusted;
            en.state = if gone {
                FileState::Deleted
            } else {
                FileState::Unlocked
            };
            en.state_time = self.trusted;
            for k in ["missing", "changed", "links"] {
                self.alerts.clear(&format!("{k}:{shown}"));
            }
            let _ = self.log(
                "release",
                &format!(
                    "{shown} released before its expiry with the approval of {who}{}",
                    if gone {
                        " (it was already gone: recorded as deleted)"
                    } else {
                        ""
                    }
                ),
            );
            done.push(shown);
        }
        self.commit()?;
        let _ = self.alerts.save(&self.paths.dir);
        Ok(format!(
            "released with the approval of {who}: {}",
            done.join(", ")
        ))
    }

    /// Clears the alert events (root's hand undone); conditions stay while they last.
    pub(super) fn ack_alerts(&mut self) -> std::result::Result<Response, ReqError> {
        let n = self.alerts.ack();
        let _ = self.alerts.save(&self.paths.dir);
        let _ = self.log("alerts-ack", &format!("root acknowledged {n} alerts"));
        Ok(Response::Applied {
            summary: format!(
                "{n} alerts acknowledged; {} conditions remain until they end",
                self.alerts.lines().len()
            ),
        })
    }
}
