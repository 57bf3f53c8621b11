//! The root-owned configuration: which repositories are guarded, who may ask, and the limits
//! that bound what any request can lock.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{ImmutdError, Result};
use crate::toml_lite::{self, Table, Value};

/// Default configuration path.
pub const DEFAULT_CONFIG: &str = "/etc/bulwark/immutd.toml";
/// Shortest immutability period a repository may have.
pub const MIN_PERIOD_DAYS: u32 = 7;
/// Longest immutability period a repository may have.
pub const MAX_PERIOD_DAYS: u32 = 9999;
/// Upper bound of `max_period_days` (100 years).
pub const MAX_MAX_PERIOD_DAYS: u32 = 36500;

/// One guarded repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoConfig {
    pub path: PathBuf,
    /// Immutability period of files sealed from now on, 7 to 9999 days.
    pub min_period_days: u32,
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The only non-root uid allowed to talk to the service, and the owner of `incoming/`.
    pub service_uid: u32,
    pub service_gid: u32,
    pub service_user: String,
    pub socket: PathBuf,
    /// Ledger, audit log and clock checkpoints; root-owned, outside every repository.
    pub state_dir: PathBuf,
    pub repositories: Vec<RepoConfig>,
    /// No expiry may lie further than this after a file's seal time.
    pub max_period_days: u32,
    /// Seal is refused when the locked files would exceed this many bytes.
    pub max_locked_bytes: u64,
    /// Wall-clock difference from the boot clock accepted without an alert, seconds.
    pub clock_tolerance_secs: i64,
    /// Drift between wall and boot clock accepted on top of that, parts per million of the
    /// boot time since the last anchor (20 ppm: about 1.7 s a day, 10.5 minutes a year).
    pub clock_drift_ppm: i64,
    /// How often the clock is checked and expired files unlocked.
    pub tick_secs: u64,
    /// Set the append-only attribute on each repository folder so its entries (the store,
    /// incoming/) cannot be renamed or removed by the service user.
    pub lock_repository_root: bool,
    /// How often every sealed file, the settings and this configuration are checked for
    /// root's hand (cleared attribute, changed or missing file), seconds.
    pub watch_secs: u64,
    /// Four-eyes approvals (`[approval]`); `None` when not configured.
    pub approval: Option<ApprovalConfig>,
    /// The text this configuration was parsed from (its BLAKE3 is what approvals name).
    pub text: String,
}

/// `[approval]`: who must sign weakening actions, and how many of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalConfig {
    /// k: signatures of different approvers needed, at least 2.
    pub threshold: u32,
    /// n: `ssh-ed25519 AAAA… NAME` lines.
    pub approvers: Vec<String>,
}

impl ApprovalConfig {
    /// The parsed approvers (checked when the configuration was read).
    pub fn approvers(&self) -> bulwark_approval::Approvers {
        bulwark_approval::Approvers::parse(&self.approvers, self.threshold)
            .expect("checked when the configuration was parsed")
    }
}

/// Default seconds between checks for root's hand.
pub const DEFAULT_WATCH_SECS: u64 = 30;

/// Default drift rate between wall and boot clock, parts per million.
pub const DEFAULT_DRIFT_PPM: i64 = 20;
/// Highest drift rate a configuration may set (NTP's own limit on frequency correction).
pub const MAX_DRIFT_PPM: i64 = 500;

impl Config {
    /// The clock tolerance of this configuration.
    pub fn tolerance(&self) -> crate::clock::Tolerance {
        crate::clock::Tolerance {
            secs: self.clock_tolerance_secs,
            drift_ppm: self.clock_drift_ppm,
        }
    }
}

fn err(path: &Path, msg: impl Into<String>) -> ImmutdError {
    ImmutdError::Config {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Looks up a user by name (or `#uid`) in `/etc/passwd`: (uid, gid).
pub fn lookup_user(passwd: &str, user: &str) -> Option<(u32, u32)> {
    let by_uid = user.strip_prefix('#').and_then(|u| u.parse::<u32>().ok());
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
            continue;
        };
        if f[0] == user || by_uid == Some(uid) {
            return Some((uid, gid));
        }
    }
    None
}

fn clean_abs_path(cfg: &Path, key: &str, s: &str) -> Result<PathBuf> {
    let p = PathBuf::from(s);
    let ok = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !s.chars().any(|c| c.is_control())
        && s.len() <= 1024
        && (s == "/" || !s.ends_with('/'));
    if !ok {
        return Err(err(cfg, format!("{key} {s:?} must be an absolute path without `.`, `..`, `//`, a trailing `/` or control characters")));
    }
    if p.components().count() != s.split('/').filter(|c| !c.is_empty()).count() + 1 {
        return Err(err(cfg, format!("{key} {s:?} is not in canonical form")));
    }
    Ok(p)
}

/// The values of one table, whose keys were all checked known when it was read.
struct Keys<'a> {
    cfg: &'a Path,
    table: &'a Table,
}

impl<'a> Keys<'a> {
    /// The keys of `table` (named `what` in errors), refusing any not in `known`.
    fn known(
        cfg: &'a Path,
        table: &'a Table,
        what: &'static str,
        known: &[&str],
    ) -> Result<Keys<'a>> {
        for (k, (_, line)) in table {
            if !known.contains(&k.as_str()) {
                return Err(err(
                    cfg,
                    format!("line {line}: unknown key {k:?} in {what}"),
                ));
            }
        }
        Ok(Keys { cfg, table })
    }
    fn str(&self, k: &str) -> Result<Option<&str>> {
        match self.table.get(k) {
            None => Ok(None),
            Some((Value::Str(s), _)) => Ok(Some(s)),
            Some((_, line)) => Err(err(self.cfg, format!("line {line}: {k} must be a string"))),
        }
    }
    fn int(&self, k: &str, lo: i64, hi: i64) -> Result<Option<i64>> {
        match self.table.get(k) {
            None => Ok(None),
            Some((Value::Int(v), line)) => {
                if *v < lo || *v > hi {
                    return Err(err(
                        self.cfg,
                        format!("line {line}: {k} = {v} is outside {lo}..={hi}"),
                    ));
                }
                Ok(Some(*v))
            }
            Some((_, line)) => Err(err(
                self.cfg,
                format!("line {line}: {k} must be an integer"),
            )),
        }
    }
    fn bool(&self, k: &str) -> Result<Option<bool>> {
        match self.table.get(k) {
            None => Ok(None),
            Some((Value::Bool(b), _)) => Ok(Some(*b)),
            Some((_, line)) => Err(err(
                self.cfg,
                format!("line {line}: {k} must be true or false"),
            )),
        }
    }
}

impl Config {
    /// Parses and validates configuration text. `passwd` is the content of `/etc/passwd`.
    pub fn parse(cfg: &Path, text: &str, passwd: &str) -> Result<Config> {
        let doc = toml_lite::parse(text).map_err(|m| err(cfg, m))?;
        let top = Keys::known(
            cfg,
            &doc.top,
            "the top level",
            &[
                "service_user",
                "socket",
                "state_dir",
                "min_period_days",
                "max_period_days",
                "max_locked_bytes",
                "clock_tolerance_secs",
                "clock_drift_ppm",
                "tick_secs",
                "lock_repository_root",
                "watch_secs",
            ],
        )?;
        let service_user = top
            .str("service_user")?
            .ok_or_else(|| err(cfg, "service_user is required"))?;
        let (service_uid, service_gid) = lookup_user(passwd, service_user).ok_or_else(|| {
            err(
                cfg,
                format!("service_user {service_user:?} is not in /etc/passwd"),
            )
        })?;
        if service_uid == 0 {
            return Err(err(cfg, "service_user must not be root: the service user is the one the protection is against"));
        }
        let socket = clean_abs_path(
            cfg,
            "socket",
            top.str("socket")?.unwrap_or("/run/bulwark/immutd.sock"),
        )?;
        let state_dir = clean_abs_path(
            cfg,
            "state_dir",
            top.str("state_dir")?.unwrap_or("/var/lib/bulwark-immutd"),
        )?;
        let period = |k: &Keys, key| k.int(key, MIN_PERIOD_DAYS.into(), MAX_PERIOD_DAYS.into());
        let default_period =
            period(&top, "min_period_days")?.unwrap_or(MIN_PERIOD_DAYS.into()) as u32;
        let max_period_days = top
            .int(
                "max_period_days",
                MIN_PERIOD_DAYS.into(),
                MAX_MAX_PERIOD_DAYS.into(),
            )?
            .ok_or_else(|| {
                err(
                    cfg,
                    "max_period_days is required (the longest any file may be locked)",
                )
            })? as u32;
        let max_locked_bytes = top.int("max_locked_bytes", 1, i64::MAX)?.ok_or_else(|| {
            err(
                cfg,
                "max_locked_bytes is required (the most bytes requests may lock)",
            )
        })? as u64;
        let clock_tolerance_secs = top.int("clock_tolerance_secs", 10, 86_400)?.unwrap_or(120);
        let clock_drift_ppm = top
            .int("clock_drift_ppm", 0, MAX_DRIFT_PPM)?
            .unwrap_or(DEFAULT_DRIFT_PPM);
        let tick_secs = top.int("tick_secs", 1, 3600)?.unwrap_or(60) as u64;
        let lock_repository_root = top.bool("lock_repository_root")?.unwrap_or(true);
        let watch_secs = top
            .int("watch_secs", 1, 3600)?
            .map_or(DEFAULT_WATCH_SECS, |v| v as u64);
        let mut approval = None;
        for (name, table, line) in &doc.tables {
            if name != "approval" {
                return Err(err(
                    cfg,
                    format!("line {line}: unknown table [{name}] (only [approval] is known)"),
                ));
            }
            let k = Keys::known(cfg, table, "[approval]", &["threshold", "approvers"])?;
            let threshold = k
                .int(
                    "threshold",
                    2,
                    bulwark_approval::verify::MAX_APPROVERS as i64,
                )?
                .ok_or_else(|| {
                    err(
                        cfg,
                        format!("line {line}: [approval] needs a threshold (k, at least 2)"),
                    )
                })? as u32;
            let approvers = match table.get("approvers") {
                Some((Value::Strs(v), _)) => v.clone(),
                Some((_, l)) => {
                    return Err(err(
                        cfg,
                        format!("line {l}: approvers must be an array of \"ssh-ed25519 AAAA… NAME\" strings"),
                    ))
                }
                None => return Err(err(cfg, format!("line {line}: [approval] needs approvers"))),
            };
            bulwark_approval::Approvers::parse(&approvers, threshold)
                .map_err(|e| err(cfg, format!("[approval]: {e}")))?;
            approval = Some(ApprovalConfig {
                threshold,
                approvers,
            });
        }

        let mut repositories = Vec::new();
        for (name, table, line) in &doc.arrays {
            if name != "repository" {
                return Err(err(cfg, format!("line {line}: unknown table [[{name}]]")));
            }
            let k = Keys::known(cfg, table, "[[repository]]", &["path", "min_period_days"])?;
            let path = k
                .str("path")?
                .ok_or_else(|| err(cfg, format!("line {line}: [[repository]] needs a path")))?;
            let path = clean_abs_path(cfg, "repository path", path)?;
            let min_period_days =
                period(&k, "min_period_days")?.map_or(default_period, |v| v as u32);
            if min_period_days > max_period_days {
                return Err(err(cfg, format!("repository {}: min_period_days {min_period_days} exceeds max_period_days {max_period_days}", path.display())));
            }
            repositories.push(RepoConfig {
                path,
                min_period_days,
            });
        }
        if repositories.is_empty() {
            return Err(err(cfg, "no [[repository]] to guard"));
        }
        for (i, a) in repositories.iter().enumerate() {
            for b in &repositories[i + 1..] {
                if a.path.starts_with(&b.path) || b.path.starts_with(&a.path) {
                    return Err(err(
                        cfg,
                        format!(
                            "repositories {} and {} overlap",
                            a.path.display(),
                            b.path.display()
                        ),
                    ));
                }
            }
            for (what, p) in [("state_dir", &state_dir), ("socket", &socket)] {
                if p.starts_with(&a.path) || a.path.starts_with(p) {
                    return Err(err(
                        cfg,
                        format!(
                            "{what} {} must be outside repository {}: the service user controls it",
                            p.display(),
                            a.path.display()
                        ),
                    ));
                }
            }
        }
        Ok(Config {
            service_uid,
            service_gid,
            service_user: service_user.to_string(),
            socket,
            state_dir,
            repositories,
            max_period_days,
            max_locked_bytes,
            clock_tolerance_secs,
            clock_drift_ppm,
            tick_secs,
            lock_repository_root,
            watch_secs,
            approval,
            text: text.to_string(),
        })
    }

    /// BLAKE3 (hex) of the configuration text: what approvals and the state name it by.
    pub fn digest(&self) -> String {
        blake3::hash(self.text.as_bytes()).to_hex().to_string()
    }

    /// How `new` weakens protection compared with `self` (the approved configuration), one
    /// line per weakening; empty when every change strengthens it or changes nothing that
    /// protects. Weakening: fewer or other approvers, a lower threshold, approvals removed,
    /// a repository dropped, a shorter period, a higher cap (`max_period_days`,
    /// `max_locked_bytes`), more clock tolerance or drift, a slower check for root's hand,
    /// the top level no longer locked, another service user, socket or state folder.
    pub fn weakenings(&self, new: &Config) -> Vec<String> {
        let mut w = Vec::new();
        match (&self.approval, &new.approval) {
            (Some(_), None) => w.push(
                "[approval] is removed: weakening actions would need no signatures".to_string(),
            ),
            (Some(a), Some(b)) => {
                if b.threshold < a.threshold {
                    w.push(format!(
                        "approval threshold lowered from {} to {}",
                        a.threshold, b.threshold
                    ));
                }
                let (old, newk) = (a.approvers(), b.approvers());
                for o in &old.list {
                    if !newk.list.iter().any(|n| n.fingerprint() == o.fingerprint()) {
                        w.push(format!("approver {} ({}) removed", o.name, o.fingerprint()));
                    }
                }
                for n in &newk.list {
                    if !old.list.iter().any(|o| o.fingerprint() == n.fingerprint()) {
                        w.push(format!("approver {} ({}) added", n.name, n.fingerprint()));
                    }
                }
            }
            _ => {}
        }
        for r in &self.repositories {
            match new.repo(&r.path) {
                None => w.push(format!(
                    "repository {} is no longer guarded",
                    r.path.display()
                )),
                Some(n) if n.min_period_days < r.min_period_days => w.push(format!(
                    "repository {}: min_period_days lowered from {} to {}",
                    r.path.display(),
                    r.min_period_days,
                    n.min_period_days
                )),
                Some(_) => {}
            }
        }
        macro_rules! raised {
            ($($field:ident),*) => {$(
                let (a, b) = (i128::from(self.$field), i128::from(new.$field));
                if b > a {
                    w.push(format!("{} raised from {a} to {b}", stringify!($field)));
                }
            )*};
        }
        raised!(
            max_period_days,
            max_locked_bytes,
            clock_tolerance_secs,
            clock_drift_ppm,
            watch_secs
        );
        if self.lock_repository_root && !new.lock_repository_root {
            w.push("lock_repository_root turned off".to_string());
        }
        if self.service_user != new.service_user || self.service_uid != new.service_uid {
            w.push(format!(
                "service_user changed from {} to {}",
                self.service_user, new.service_user
            ));
        }
        if self.socket != new.socket {
            w.push(format!(
                "socket moved from {} to {}",
                self.socket.display(),
                new.socket.display()
            ));
        }
        if self.state_dir != new.state_dir {
            w.push(format!(
                "state_dir moved from {} to {}",
                self.state_dir.display(),
                new.state_dir.display()
            ));
        }
        w
    }

    /// Reads the configuration file, refusing one that anybody but root could have written.
    pub fn load(path: &Path) -> Result<Config> {
        check_root_owned(path, "configuration file")?;
        if let Some(parent) = path.parent() {
            check_root_owned(parent, "configuration folder")?;
        }
        let text = read_bounded(path, 1 << 20)?;
        Config::parse(path, &text, &read_passwd()?)
    }

    /// The repository whose folder is `path`.
    pub fn repo(&self, path: &Path) -> Option<&RepoConfig> {
        self.repositories.iter().find(|r| r.path == path)
    }
}

/// `/etc/passwd`, for looking up the service user.
pub fn read_passwd() -> Result<String> {
    read_bounded(Path::new("/etc/passwd"), 64 << 20)
}

fn read_bounded(path: &Path, max: u64) -> Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(ImmutdError::io("opening", path))?;
    let mut s = String::new();
    f.take(max + 1)
        .read_to_string(&mut s)
        .map_err(ImmutdError::io("reading", path))?;
    if s.len() as u64 > max {
        return Err(err(path, format!("larger than {max} bytes")));
    }
    Ok(s)
}

/// Refuses a file or folder that is not owned by root or that group or others can write.
pub fn check_root_owned(path: &Path, what: &str) -> Result<()> {
    let m = std::fs::metadata(path).map_err(ImmutdError::io("checking", path))?;
    if m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(err(
            path,
            format!("the {what} must be owned by root and not writable by group or others (it is uid {} mode {:o}); fix with chown root: and chmod go-w", m.uid(), m.mode() & 0o7777),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0::/root:/bin/sh\nbulwark:x:990:985::/nonexistent:/usr/sbin/nologin\n";

    fn parse(t: &str) -> Result<Config> {
        Config::parse(Path::new("/etc/bulwark/immutd.toml"), t, PASSWD)
    }

    const GOOD: &str = "service_user = \"bulwark\"\nmax_period_days = 400\nmax_locked_bytes = 1_000_000\n[[repository]]\npath = \"/srv/r1\"\n[[repository]]\npath = \"/srv/r2\"\nmin_period_days = 30\n";

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!((c.service_uid, c.service_gid), (990, 985));
        assert_eq!(c.repositories[0].min_period_days, 7);
        assert_eq!(c.repositories[1].min_period_days, 30);
        assert_eq!(c.clock_tolerance_secs, 120);
        assert!(c.lock_repository_root);
        assert_eq!(c.repo(Path::new("/srv/r2")).unwrap().min_period_days, 30);
    }

    #[test]
    fn bad_configs_are_refused() {
        let cases = [
            GOOD.replace("bulwark\"", "root\""),
            GOOD.replace("bulwark\"", "nobody-here\""),
            GOOD.replace("min_period_days = 30", "min_period_days = 6"),
            GOOD.replace("min_period_days = 30", "min_period_days = 10000"),
            GOOD.replace("min_period_days = 30", "min_period_days = 401"),
            GOOD.replace("/srv/r2", "/srv/r1/sub"),
            GOOD.replace("/srv/r2", "srv/r2"),
            GOOD.replace("/srv/r2", "/srv/../r2"),
            GOOD.replace("/srv/r2", "/srv/r2/"),
            GOOD.replace("max_locked_bytes = 1_000_000\n", ""),
            GOOD.replace("max_period_days = 400", "max_period_days = 400\ntypo = 1"),
            format!("state_dir = \"/srv/r1/state\"\n{GOOD}"),
            format!("socket = \"/srv/r2/s.sock\"\n{GOOD}"),
            "service_user = \"bulwark\"\nmax_period_days = 400\nmax_locked_bytes = 1\n".to_string(),
        ];
        for c in cases {
            assert!(parse(&c).is_err(), "accepted:\n{c}");
        }
    }

    // Real OpenSSH Ed25519 public keys (made with ssh-keygen for this test).
    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINFHf6JXDKgeNNmZcdsHFH9rPT7b5+h5bai+Y3zq+9KJ alice";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHw+zqruzzldKYG0UXQwBRtu/R1X+FxKMUU9fR/D241N bob";
    const K3: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFTSWJrmqLaOOt/mNCCwuGfnskyuUfl23t9QZ4M7h29D carol";

    const K4: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKAwzsYb2QjGnQlEr9LPSJyrZdq8DTVAMjM2NBXPtZ4Z dave";

    fn with_approval(base: &str, k: u32, keys: &[&str]) -> String {
        let list: Vec<String> = keys.iter().map(|k| format!("  \"{k}\",\n")).collect();
        format!(
            "{base}\n[approval]\nthreshold = {k}\napprovers = [\n{}]\n",
            list.concat()
        )
    }

    #[test]
    fn approval_tables_are_checked() {
        let c = parse(&with_approval(GOOD, 2, &[K1, K2, K3])).unwrap();
        let a = c.approval.as_ref().unwrap();
        assert_eq!(a.threshold, 2);
        assert_eq!(a.approvers().list.len(), 3);
        assert_eq!(c.watch_secs, DEFAULT_WATCH_SECS);
        for bad in [
            with_approval(GOOD, 1, &[K1, K2]),
            with_approval(GOOD, 3, &[K1, K2]),
            with_approval(GOOD, 2, &[K1, K1]),
            with_approval(GOOD, 2, &[K1, "ssh-ed25519 AAAAbroken x"]),
            format!("{GOOD}\n[approval]\nthreshold = 2\n"),
            format!("{GOOD}\n[approval]\nthreshold = 2\napprovers = \"{K1}\"\n"),
            format!("{GOOD}\n[other]\na = 1\n"),
            GOOD.replace(
                "max_period_days = 400",
                "max_period_days = 400\nwatch_secs = 0",
            ),
        ] {
            assert!(parse(&bad).is_err(), "accepted:\n{bad}");
        }
    }

    #[test]
    fn weakenings_are_listed_and_strengthening_is_not() {
        let base = with_approval(GOOD, 2, &[K1, K2, K3]);
        let old = parse(&base).unwrap();
        let weaker = [
            (
                base.replace("min_period_days = 30", "min_period_days = 14"),
                "min_period_days lowered from 30 to 14",
            ),
            (
                base.replace("[[repository]]\npath = \"/srv/r1\"\n", ""),
                "repository /srv/r1 is no longer guarded",
            ),
            (
                base.replace("max_period_days = 400", "max_period_days = 500"),
                "max_period_days raised",
            ),
            (
                base.replace(
                    "max_locked_bytes = 1_000_000",
                    "max_locked_bytes = 2_000_000",
                ),
                "max_locked_bytes raised",
            ),
            (
                format!("clock_tolerance_secs = 600\n{base}"),
                "clock_tolerance_secs raised",
            ),
            (
                format!("clock_drift_ppm = 100\n{base}"),
                "clock_drift_ppm raised",
            ),
            (format!("watch_secs = 600\n{base}"), "watch_secs raised"),
            (
                format!("lock_repository_root = false\n{base}"),
                "lock_repository_root turned off",
            ),
            (
                format!("state_dir = \"/var/lib/other\"\n{base}"),
                "state_dir moved",
            ),
            (with_approval(GOOD, 2, &[K1, K2]), "approver carol"),
            (with_approval(GOOD, 2, &[K1, K2, K3, K4]), "approver dave"),
            (GOOD.to_string(), "[approval] is removed"),
        ];
        for (text, want) in weaker {
            let w = old.weakenings(&parse(&text).unwrap());
            assert!(w.iter().any(|l| l.contains(want)), "{want}: {w:?}\n{text}");
        }
        let k3 = with_approval(GOOD, 3, &[K1, K2, K3]);
        let stronger = [
            base.replace("min_period_days = 30", "min_period_days = 60"),
            base.replace("max_locked_bytes = 1_000_000", "max_locked_bytes = 500_000"),
            base.replace("max_period_days = 400", "max_period_days = 300"),
            format!("{base}\n[[repository]]\npath = \"/srv/r3\"\n"),
            format!("clock_tolerance_secs = 60\nwatch_secs = 5\n{base}"),
            k3.clone(),
            format!("# a comment\n{base}"),
        ];
        for text in stronger {
            let w = old.weakenings(&parse(&text).unwrap());
            assert!(w.is_empty(), "{w:?}\n{text}");
        }
        // Adding approvals to a configuration without them strengthens it.
        assert!(parse(GOOD).unwrap().weakenings(&old).is_empty());
        // Lowering k back is a weakening.
        let w = parse(&k3).unwrap().weakenings(&old);
        assert!(
            w.iter()
                .any(|l| l.contains("threshold lowered from 3 to 2")),
            "{w:?}"
        );
    }

    #[test]
    fn users_by_name_or_number() {
        assert_eq!(lookup_user(PASSWD, "bulwark"), Some((990, 985)));
        assert_eq!(lookup_user(PASSWD, "#990"), Some((990, 985)));
        assert_eq!(lookup_user(PASSWD, "#5"), None);
    }
}
