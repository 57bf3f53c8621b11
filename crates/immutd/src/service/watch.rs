//! Root's own hand: every `watch_secs` the service checks every locked file it guards
//! (attribute, owner, mode, inode, links, size, status-change time; the root digest of one
//! file per check in turn, and the whole content of every file whose inode was touched —
//! any write moves the status-change time — or whose attribute was cleared), each repository's
//! settings file and its own configuration file. What it finds is audited and alerted; a
//! sealed file whose bytes still match is sealed again at once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulwark_immut_msg::FileState;

use super::Service;
use crate::config::Config;
use crate::repo::Inspect;

/// The alerts file in the state folder (read by the offline `status`).
pub const ALERTS_FILE: &str = "alerts";
/// Most alert events kept; older ones are summed up.
const MAX_EVENTS: usize = 100;
/// Largest alerts file read.
const MAX_ALERTS_FILE: u64 = 1 << 20;
/// The approved repository settings digests, in the state folder.
pub(super) const SETTINGS_FILE: &str = "approved-settings";

/// Protection alerts: conditions (true while they last: a missing file, a refused
/// configuration) and events (root's hand undone; kept until root acknowledges them).
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alerts {
    events: Vec<(i64, String)>,
    conditions: BTreeMap<String, String>,
}

impl Alerts {
    /// The alerts saved in `dir`, none when there is no file or it cannot be read.
    pub(crate) fn load(dir: &Path) -> Alerts {
        let mut a = Alerts::default();
        let Some(text) = read_bounded(&dir.join(ALERTS_FILE)) else {
            return a;
        };
        for l in text.lines() {
            let mut f = l.splitn(3, '\t');
            match (f.next(), f.next(), f.next()) {
                (Some("event"), Some(t), Some(m)) => {
                    a.events.push((t.parse().unwrap_or(0), m.to_string()));
                }
                (Some("condition"), Some(k), Some(m)) => {
                    a.conditions.insert(k.to_string(), m.to_string());
                }
                _ => {}
            }
        }
        a
    }

    fn encode(&self) -> String {
        let mut s = String::new();
        for (k, m) in &self.conditions {
            s.push_str(&format!("condition\t{}\t{}\n", one_line(k), one_line(m)));
        }
        for (t, m) in &self.events {
            s.push_str(&format!("event\t{t}\t{}\n", one_line(m)));
        }
        s
    }

    pub(crate) fn save(&self, dir: &Path) -> crate::error::Result<()> {
        crate::atomic::write_atomic(&dir.join(ALERTS_FILE), self.encode().as_bytes(), 0o600)
    }

    /// Every alert, one line each: conditions first, then events with their time.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.conditions.values().cloned().collect();
        for (t, m) in &self.events {
            v.push(format!("{} {m}", bulwark_time::UnixTime(*t).zulu()));
        }
        v
    }

    pub(crate) fn event(&mut self, t: i64, msg: String) {
        self.events.push((t, msg));
        if self.events.len() > MAX_EVENTS {
            let n = self.events.len() - MAX_EVENTS + 1;
            self.events.drain(..n);
            self.events.insert(
                0,
                (
                    t,
                    format!("{n} older alerts were dropped; see the audit log"),
                ),
            );
        }
    }

    /// Sets a condition; true when it is new or its message changed.
    pub(crate) fn set(&mut self, key: &str, msg: String) -> bool {
        self.conditions.insert(key.to_string(), msg.clone()) != Some(msg)
    }

    /// Ends a condition; true when it was set.
    pub(crate) fn clear(&mut self, key: &str) -> bool {
        self.conditions.remove(key).is_some()
    }

    /// Drops the events (root acknowledged them); returns how many.
    pub(crate) fn ack(&mut self) -> usize {
        std::mem::take(&mut self.events).len()
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\t', '\r'], " ")
}

fn read_bounded(p: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(p).ok()?;
    let mut s = String::new();
    f.take(MAX_ALERTS_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}

/// The protection alerts saved in the state folder `dir` (for `status` without the service).
pub fn read_alerts(dir: &Path) -> Vec<String> {
    Alerts::load(dir).lines()
}

/// What the watch remembers between checks.
#[derive(Default)]
pub(crate) struct WatchState {
    last: Option<Instant>,
    /// Status-change time of each locked file at the last check.
    ctimes: HashMap<PathBuf, (i64, i64)>,
    /// Next ledger index whose content is checked in full.
    sample: usize,
    /// Approved BLAKE3 of each repository's `repository.toml`.
    pub(super) settings: BTreeMap<PathBuf, String>,
    settings_loaded: bool,
}

/// Loads the approved settings digests.
pub(super) fn load_settings(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    if let Some(text) = read_bounded(&dir.join(SETTINGS_FILE)) {
        for l in text.lines() {
            if let Some((r, d)) = l.split_once('\t') {
                m.insert(PathBuf::from(r), d.to_string());
            }
        }
    }
    m
}

impl Service {
    /// Runs the watch when `watch_secs` passed since the last one.
    pub(super) fn watch_if_due(&mut self) {
        let every = Duration::from_secs(self.config.watch_secs);
        if self.watch.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.watch_now();
    }

    /// One check of everything the watch covers.
    pub(super) fn watch_now(&mut self) {
        self.watch.last = Some(Instant::now());
        let before = self.alerts.clone();
        self.check_config_file();
        self.check_settings();
        self.check_sealed();
        if self.alerts != before {
            if let Err(e) = self.alerts.save(&self.paths.dir) {
                eprintln!("bulwark-immutd: cannot save the alerts: {e}");
            }
        }
    }

    /// Raises (and audits, when new) a condition alert.
    pub(super) fn condition(&mut self, key: &str, event: &str, msg: String) {
        if self.alerts.set(key, msg.clone()) {
            eprintln!("bulwark-immutd: ALERT: {msg}");
            let _ = self.log(event, &msg);
        }
    }

    /// Records (and audits) an alert event.
    fn alert_event(&mut self, event: &str, msg: String) {
        eprintln!("bulwark-immutd: ALERT: {msg}");
        let _ = self.log(event, &msg);
        self.alerts.event(self.wall, msg);
    }

    fn check_sealed(&mut self) {
        let n = self.ledger.entries.len();
        let sample = if n == 0 { 0 } else { self.watch.sample % n };
        let mut sampled = false;
        for i in 0..n {
            let e = self.ledger.entries[i].clone();
            let path = e.path();
            let shown = path.display().to_string();
            let (k_missing, k_changed, k_links) = (
                format!("missing:{shown}"),
                format!("changed:{shown}"),
                format!("links:{shown}"),
            );
            if e.state != FileState::Locked || e.released != 0 {
                self.watch.ctimes.remove(&path);
                continue;
            }
            let Some(ri) = self.repos.iter().position(|r| r.path == e.repo) else {
                continue;
            };
            let looks = match self.repos[ri].inspect(&e) {
                Err(err) => {
                    self.condition(
                        &k_changed,
                        "watch-failed",
                        format!("{shown} cannot be checked: {err}"),
                    );
                    continue;
                }
                Ok(Inspect::Missing) => {
                    self.watch.ctimes.remove(&path);
                    self.condition(&k_missing, "tamper-missing", format!(
                        "{shown} is MISSING: a sealed file (locked until its expiry) was deleted or moved by hand (root); the bytes are gone from this host, `bulwark-repo verify` names the damaged point; restore it from another copy (the S3 COMPLIANCE tier)"
                    ));
                    continue;
                }
                Ok(Inspect::Replaced(what)) => {
                    self.watch.ctimes.remove(&path);
                    self.condition(&k_changed, "tamper-replaced", format!(
                        "{shown} was REPLACED by hand (root): {what}; it is not the sealed file any more, `bulwark-repo verify` names the damaged point"
                    ));
                    continue;
                }
                Ok(Inspect::Present(l)) => l,
            };
            if self.alerts.clear(&k_missing) {
                let _ = self.log("tamper-ok", &format!("{shown} is back"));
            }
            let mut hands = Vec::new();
            if !looks.immutable {
                hands.push("the immutable attribute was cleared");
            }
            if !looks.owner_ok {
                hands.push("its owner was changed");
            }
            if !looks.mode_ok {
                hands.push("its mode was changed");
            }
            if looks.size != e.size {
                hands.push("its size changed");
            }
            let touched = self
                .watch
                .ctimes
                .get(&path)
                .is_some_and(|c| *c != looks.ctime);
            if looks.nlink != 1 {
                self.condition(&k_links, "tamper-links", format!(
                    "{shown} has {} names: a hard link was made by hand (root); remove the extra name (find -inum {})",
                    looks.nlink, e.ino
                ));
            } else {
                self.alerts.clear(&k_links);
            }
            if !hands.is_empty() || touched || (i == sample && !sampled) {
                sampled |= i == sample;
                let what = if hands.is_empty() {
                    "its inode was changed (attributes or content) since the last check".to_string()
                } else {
                    hands.join(", ")
                };
                let intact = if hands.is_empty() && !touched {
                    // The rolling sample: the root digest (header, metadata, map), not
                    // every block, so a check costs little whatever the file's size.
                    self.repos[ri].verify_sealed_root(&e).is_ok()
                } else if hands.is_empty() {
                    self.repos[ri].verify_sealed(&e).is_ok()
                } else {
                    match self.repos[ri].reseal(&e) {
                        Ok(ok) => ok,
                        Err(err) => {
                            self.condition(
                                &k_changed,
                                "reseal-failed",
                                format!(
                                    "{shown}: {what}; sealing it again failed: {}",
                                    err.message
                                ),
                            );
                            continue;
                        }
                    }
                };
                if !intact {
                    self.condition(&k_changed, "tamper-changed", format!(
                        "{shown} was CHANGED by hand (root): {what}; its content no longer matches the sealed root digest; it is kept immutable as evidence, `bulwark-repo verify` names the damaged point; restore it from another copy"
                    ));
                } else if !hands.is_empty() {
                    self.alert_event("tamper-resealed", format!(
                        "root's hand on {shown}: {what}; the bytes still match the sealed root digest and the file is sealed again (acknowledge with `bulwark-immutd alerts ack`)"
                    ));
                } else if touched {
                    let _ = self.log(
                        "watch-touched",
                        &format!(
                            "{shown}: {what}; its content still matches the sealed root digest"
                        ),
                    );
                }
                if let Ok(Inspect::Present(l)) = self.repos[ri].inspect(&e) {
                    self.watch.ctimes.insert(path, l.ctime);
                }
                continue;
            }
            // A file once found changed stays reported until approvers release it.
            self.watch.ctimes.insert(path, looks.ctime);
        }
        self.watch.sample = sample + 1;
    }

    fn check_settings(&mut self) {
        if !self.watch.settings_loaded {
            self.watch.settings = load_settings(&self.paths.dir);
            self.watch.settings_loaded = true;
        }
        let mut changed_record = false;
        for ri in 0..self.repos.len() {
            if !self.repos[ri].locks_root() {
                continue;
            }
            let repo = self.repos[ri].path.clone();
            let shown = format!("{}/{}", repo.display(), crate::repo::SETTINGS);
            let key = format!("settings:{}", repo.display());
            let recorded = self.watch.settings.get(&repo).cloned();
            match self.repos[ri].settings_state() {
                Err(e) => self.condition(
                    &key,
                    "watch-failed",
                    format!("{shown} cannot be checked: {e}"),
                ),
                Ok(None) => {
                    if recorded.is_some() {
                        self.condition(&key, "tamper-settings-missing", format!(
                            "{shown} is MISSING: the repository's settings were removed by hand (root); put the approved file back"
                        ));
                    }
                }
                Ok(Some((digest, immutable))) => {
                    match &recorded {
                        None => {
                            self.watch.settings.insert(repo.clone(), digest.clone());
                            changed_record = true;
                        }
                        Some(r) if *r == digest => {
                            if self.alerts.clear(&key) {
                                let _ = self.log(
                                    "tamper-ok",
                                    &format!("{shown} is the approved file again"),
                                );
                            }
                            if !immutable {
                                self.alert_event("tamper-settings-resealed", format!(
                                    "root's hand on {shown}: the immutable attribute was cleared; the content is the approved one and the file is immutable again (acknowledge with `bulwark-immutd alerts ack`)"
                                ));
                            }
                        }
                        Some(r) => {
                            if self.config.approval.is_none() {
                                self.watch.settings.insert(repo.clone(), digest.clone());
                                changed_record = true;
                                self.alert_event("settings-changed", format!(
                                    "{shown} was changed by hand (digest {} → {}); without [approval] configured the change is accepted",
                                    &r[..16], &digest[..16]
                                ));
                            } else {
                                self.condition(&key, "tamper-settings-changed", format!(
                                    "{shown} was CHANGED by hand (root; digest {} → {}): the repository may be running on settings nobody approved; have the change approved (`bulwark-immutd approve config`) or put the approved file back",
                                    &r[..16], &digest[..16]
                                ));
                            }
                        }
                    }
                    if !immutable {
                        if let Err(e) = self.repos[ri].protect_settings() {
                            let _ = self.log("settings-unprotected", &format!("{shown}: {e}"));
                        }
                    }
                }
            }
        }
        if changed_record {
            self.save_settings();
        }
    }

    pub(super) fn save_settings(&self) {
        let text: String = self
            .watch
            .settings
            .iter()
            .map(|(r, d)| format!("{}\t{d}\n", r.display()))
            .collect();
        if let Err(e) =
            crate::atomic::write_atomic(&self.paths.dir.join(SETTINGS_FILE), text.as_bytes(), 0o600)
        {
            eprintln!("bulwark-immutd: cannot save the approved settings: {e}");
        }
    }

    /// Notices an edited configuration file: applies what strengthens, refuses (and alerts)
    /// what weakens.
    fn check_config_file(&mut self) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                let digest = format!("unreadable:{e}");
                if digest != self.seen_config {
                    self.seen_config = digest;
                    self.condition("config", "config-refused", format!(
                        "the configuration file {} cannot be used ({e}); the service keeps running on the approved configuration",
                        path.display()
                    ));
                }
                return;
            }
        };
        if new.digest() == self.seen_config {
            return;
        }
        self.seen_config = new.digest();
        self.consider_config(new);
    }

    /// Applies `new` when it weakens nothing (or no approvers are configured); otherwise
    /// keeps it as the proposal root may have approved, and alerts.
    pub(super) fn consider_config(&mut self, new: Config) {
        if new.text == self.config.text {
            self.proposed = None;
            if self.alerts.clear("config") {
                let _ = self.log(
                    "config-ok",
                    "the configuration file is the approved one again",
                );
            }
            return;
        }
        let w = self.config.weakenings(&new);
        if w.is_empty() {
            self.proposed = None;
            self.alerts.clear("config");
            self.apply_config(
                new,
                "it strengthens protection or changes nothing that protects",
            );
        } else if self.config.approval.is_none() {
            self.proposed = None;
            self.alerts.clear("config");
            self.alert_event("config-weakened", super::approve::weakened_unguarded(&w));
            self.apply_config(new, "no approvers are configured");
        } else {
            let msg = self.weakening_refused(&w);
            self.proposed = Some((new, w));
            self.condition("config", "config-weakening-refused", msg);
        }
    }
}
