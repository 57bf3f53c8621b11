//! The statement approvers sign: one weakening action, named exactly, for one host, with a
//! nonce and an expiry chosen by the service. Plain text, one `key: value` per line, so an
//! approver reads what they sign; canonical (one text per statement: decoding and encoding
//! again gives the same bytes), so what was signed is exactly what is acted on.
//!
//! ```text
//! bulwark-approval-statement 1
//! host: backup-1
//! machine-id: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
//! nonce: 8c1d0f4e5a6b7c8d9e0f1a2b3c4d5e6f
//! issued: 1800000000 2027-01-15 08:00:00Z
//! expires: 1800086400 2027-01-16 08:00:00Z
//! action: release
//! repository: /srv/bulwark/repo
//! repository-id: 5f3c0a…
//! file: /srv/bulwark/repo/store/vm-1/<chain>/<point>.bwrp
//! root: <64 hex>
//! size: 12288
//! until: 1800604800 2027-01-22 08:00:00Z
//! end
//! ```

use std::fmt::Write;

/// First line of every statement.
pub const MAGIC: &str = "bulwark-approval-statement 1";
/// Largest statement accepted (bytes), checked before anything is parsed.
pub const MAX_STATEMENT: usize = 32 * 1024;
/// Longest value of one line.
pub const MAX_VALUE: usize = 4096;
/// Most files one release names.
pub const MAX_FILES: usize = 100;
/// Most change lines of a configuration statement.
pub const MAX_CHANGES: usize = 100;

/// A statement that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("approval statement, line {line}: {msg}")]
pub struct StatementError {
    pub line: usize,
    pub msg: String,
}

/// One sealed file a release names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The sealed path.
    pub path: String,
    /// The root digest the service recorded when sealing (64 hex).
    pub root: String,
    pub size: u64,
    /// The expiry it would have had (unix seconds, trusted clock).
    pub until: i64,
}

/// The files of one repository that a release names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFiles {
    pub path: String,
    /// The repository's id from its `repository.toml`, `unknown` when it has none.
    pub id: String,
    pub files: Vec<FileRef>,
}

/// What the approvers allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Unlock these files now, before their expiry.
    Release { repos: Vec<RepoFiles> },
    /// Accept the wall clock although that unlocks files early. Applied only while the wall
    /// clock is still `offset` seconds ahead of the trusted clock (within the tolerance).
    TimeAccept {
        trusted: i64,
        wall: i64,
        offset: i64,
        files_unlocking: u64,
        bytes_unlocking: u64,
        earliest_expiry: i64,
    },
    /// Put a configuration in force that weakens the approved one.
    Config {
        /// BLAKE3 (hex) of the approved configuration being replaced.
        approved: String,
        /// BLAKE3 (hex) of the proposed configuration.
        proposed: String,
        /// Each weakening, one line each.
        changes: Vec<String>,
    },
}

impl Action {
    /// The action's name as written after `action:`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Release { .. } => "release",
            Action::TimeAccept { .. } => "time-accept",
            Action::Config { .. } => "config",
        }
    }
}

/// One approval statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The host's name, for the approvers to read.
    pub host: String,
    /// `/etc/machine-id` of the host: binds the statement to one machine.
    pub machine_id: String,
    /// 16 random bytes chosen by the service (32 hex): makes each statement single-use.
    pub nonce: String,
    pub issued: i64,
    pub expires: i64,
    pub action: Action,
}

fn when(t: i64) -> String {
    format!("{t} {}", bulwark_time::UnixTime(t).zulu())
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A value that fits on one line of a statement: not empty, no control characters, no
/// leading or trailing space, at most [`MAX_VALUE`] bytes.
pub fn valid_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_VALUE && !s.chars().any(char::is_control) && s.trim() == s
}

impl Statement {
    /// The canonical text (what approvers sign).
    pub fn encode(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{MAGIC}");
        let _ = writeln!(o, "host: {}", self.host);
        let _ = writeln!(o, "machine-id: {}", self.machine_id);
        let _ = writeln!(o, "nonce: {}", self.nonce);
        let _ = writeln!(o, "issued: {}", when(self.issued));
        let _ = writeln!(o, "expires: {}", when(self.expires));
        let _ = writeln!(o, "action: {}", self.action.name());
        match &self.action {
            Action::Release { repos } => {
                for r in repos {
                    let _ = writeln!(o, "repository: {}", r.path);
                    let _ = writeln!(o, "repository-id: {}", r.id);
                    for f in &r.files {
                        let _ = writeln!(o, "file: {}", f.path);
                        let _ = writeln!(o, "root: {}", f.root);
                        let _ = writeln!(o, "size: {}", f.size);
                        let _ = writeln!(o, "until: {}", when(f.until));
                    }
                }
            }
            Action::TimeAccept {
                trusted,
                wall,
                offset,
                files_unlocking,
                bytes_unlocking,
                earliest_expiry,
            } => {
                let _ = writeln!(o, "trusted: {}", when(*trusted));
                let _ = writeln!(o, "wall: {}", when(*wall));
                let _ = writeln!(o, "offset: {offset}");
                let _ = writeln!(o, "files-unlocking: {files_unlocking}");
                let _ = writeln!(o, "bytes-unlocking: {bytes_unlocking}");
                let _ = writeln!(o, "earliest-expiry: {}", when(*earliest_expiry));
            }
            Action::Config {
                approved,
                proposed,
                changes,
            } => {
                let _ = writeln!(o, "approved: {approved}");
                let _ = writeln!(o, "proposed: {proposed}");
                for c in changes {
                    let _ = writeln!(o, "change: {c}");
                }
            }
        }
        o.push_str("end\n");
        o
    }

    /// Checks every field against the rules the decoder applies, so that what is encoded
    /// always decodes (the service calls this before issuing a statement).
    pub fn validate(&self) -> Result<(), StatementError> {
        let bad = |msg: String| Err(StatementError { line: 0, msg });
        if !valid_value(&self.host) {
            return bad(format!("host {:?} is not a one-line value", self.host));
        }
        if !is_hex(&self.machine_id, 32) {
            return bad("machine-id must be 32 lowercase hex digits".into());
        }
        if !is_hex(&self.nonce, 32) {
            return bad("nonce must be 32 lowercase hex digits".into());
        }
        if self.expires <= self.issued {
            return bad("expires must be after issued".into());
        }
        match &self.action {
            Action::Release { repos } => {
                let n: usize = repos.iter().map(|r| r.files.len()).sum();
                if n == 0 || n > MAX_FILES {
                    return bad(format!("a release names 1 to {MAX_FILES} files, not {n}"));
                }
                for r in repos {
                    if !valid_value(&r.path) || !valid_value(&r.id) || r.files.is_empty() {
                        return bad(format!("repository {:?} is malformed", r.path));
                    }
                    for f in &r.files {
                        if !valid_value(&f.path) || !is_hex(&f.root, 64) {
                            return bad(format!("file {:?} is malformed", f.path));
                        }
                    }
                }
            }
            Action::TimeAccept { .. } => {}
            Action::Config {
                approved,
                proposed,
                changes,
            } => {
                if !is_hex(approved, 64) || !is_hex(proposed, 64) {
                    return bad("configuration digests must be 64 hex digits".into());
                }
                if changes.is_empty() || changes.len() > MAX_CHANGES {
                    return bad(format!("1 to {MAX_CHANGES} change lines"));
                }
                if let Some(c) = changes.iter().find(|c| !valid_value(c)) {
                    return bad(format!("change {c:?} is not a one-line value"));
                }
            }
        }
        let len = self.encode().len();
        if len > MAX_STATEMENT {
            return bad(format!(
                "the statement would take {len} bytes, more than {MAX_STATEMENT}; name fewer files"
            ));
        }
        Ok(())
    }

    /// Reads a statement; refuses anything that is not exactly the canonical encoding.
    pub fn decode(text: &[u8]) -> Result<Statement, StatementError> {
        if text.len() > MAX_STATEMENT {
            return Err(StatementError {
                line: 0,
                msg: format!("larger than {MAX_STATEMENT} bytes"),
            });
        }
        let text = std::str::from_utf8(text).map_err(|_| StatementError {
            line: 0,
            msg: "not UTF-8 text".into(),
        })?;
        let mut r = Lines::new(text)?;
        r.exact(MAGIC)?;
        let host = r.value("host")?.to_string();
        let machine_id = r.hex("machine-id", 32)?;
        let nonce = r.hex("nonce", 32)?;
        let issued = r.time("issued")?;
        let expires = r.time("expires")?;
        let action = match r.value("action")? {
            "release" => {
                let mut repos: Vec<RepoFiles> = Vec::new();
                while r.peek_key() == Some("repository") {
                    let path = r.value("repository")?.to_string();
                    let id = r.value("repository-id")?.to_string();
                    let mut files = Vec::new();
                    while r.peek_key() == Some("file") {
                        files.push(FileRef {
                            path: r.value("file")?.to_string(),
                            root: r.hex("root", 64)?,
                            size: r.int("size")?,
                            until: r.time("until")?,
                        });
                    }
                    repos.push(RepoFiles { path, id, files });
                }
                Action::Release { repos }
            }
            "time-accept" => Action::TimeAccept {
                trusted: r.time("trusted")?,
                wall: r.time("wall")?,
                offset: r.int("offset")?,
                files_unlocking: r.int("files-unlocking")?,
                bytes_unlocking: r.int("bytes-unlocking")?,
                earliest_expiry: r.time("earliest-expiry")?,
            },
            "config" => {
                let approved = r.hex("approved", 64)?;
                let proposed = r.hex("proposed", 64)?;
                let mut changes = Vec::new();
                while r.peek_key() == Some("change") {
                    changes.push(r.value("change")?.to_string());
                }
                Action::Config {
                    approved,
                    proposed,
                    changes,
                }
            }
            other => return Err(r.err(format!("unknown action {other:?}"))),
        };
        r.exact("end")?;
        r.finish()?;
        let s = Statement {
            host,
            machine_id,
            nonce,
            issued,
            expires,
            action,
        };
        s.validate().map_err(|e| StatementError {
            line: r.line,
            msg: e.msg,
        })?;
        if s.encode() != text {
            return Err(StatementError {
                line: 0,
                msg: "not in canonical form".into(),
            });
        }
        Ok(s)
    }
}

/// The lines of a statement, read one by one.
struct Lines<'a> {
    lines: Vec<&'a str>,
    next: usize,
    line: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Result<Lines<'a>, StatementError> {
        let body = text.strip_suffix('\n').ok_or(StatementError {
            line: 0,
            msg: "the last line must end with a newline".into(),
        })?;
        Ok(Lines {
            lines: body.split('\n').collect(),
            next: 0,
            line: 0,
        })
    }
    fn err(&self, msg: String) -> StatementError {
        StatementError {
            line: self.line,
            msg,
        }
    }
    fn take(&mut self) -> Result<&'a str, StatementError> {
        let l = *self
            .lines
            .get(self.next)
            .ok_or_else(|| self.err("the statement ends early".into()))?;
        self.next += 1;
        self.line = self.next;
        Ok(l)
    }
    fn exact(&mut self, want: &str) -> Result<(), StatementError> {
        let l = self.take()?;
        if l != want {
            return Err(self.err(format!("expected {want:?}")));
        }
        Ok(())
    }
    fn peek_key(&self) -> Option<&'a str> {
        self.lines.get(self.next)?.split_once(": ").map(|(k, _)| k)
    }
    fn value(&mut self, key: &str) -> Result<&'a str, StatementError> {
        let l = self.take()?;
        let v = l
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(": "))
            .ok_or_else(|| self.err(format!("expected `{key}: …`")))?;
        if !valid_value(v) {
            return Err(self.err(format!("{key} is not a one-line value")));
        }
        Ok(v)
    }
    fn hex(&mut self, key: &str, len: usize) -> Result<String, StatementError> {
        let v = self.value(key)?;
        if !is_hex(v, len) {
            return Err(self.err(format!("{key} must be {len} lowercase hex digits")));
        }
        Ok(v.to_string())
    }
    fn int<T: std::str::FromStr>(&mut self, key: &str) -> Result<T, StatementError> {
        let v = self.value(key)?;
        v.parse()
            .map_err(|_| self.err(format!("{key} {v:?} is not a number")))
    }
    fn time(&mut self, key: &str) -> Result<i64, StatementError> {
        let v = self.value(key)?;
        let t: i64 = v
            .split_once(' ')
            .and_then(|(n, _)| n.parse().ok())
            .ok_or_else(|| self.err(format!("{key} must be `<unix seconds> <UTC time>`")))?;
        if v != when(t) {
            return Err(self.err(format!("{key} must read {:?}", when(t))));
        }
        Ok(t)
    }
    fn finish(&self) -> Result<(), StatementError> {
        if self.next != self.lines.len() {
            return Err(self.err("text after `end`".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> Statement {
        Statement {
            host: "backup-1".into(),
            machine_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            nonce: "8c1d0f4e5a6b7c8d9e0f1a2b3c4d5e6f".into(),
            issued: 1_800_000_000,
            expires: 1_800_086_400,
            action: Action::Release {
                repos: vec![RepoFiles {
                    path: "/srv/repo".into(),
                    id: "5f3c".into(),
                    files: vec![FileRef {
                        path: "/srv/repo/store/vm-1/a/b.bwrp".into(),
                        root: "ab".repeat(32),
                        size: 12288,
                        until: 1_800_604_800,
                    }],
                }],
            },
        }
    }

    #[test]
    fn sample_round_trips_and_edits_are_refused() {
        let s = sample();
        let t = s.encode();
        assert_eq!(Statement::decode(t.as_bytes()).unwrap(), s);
        for bad in [
            t.replace("\nend\n", "\nend\nmore\n"),
            t.replace("end\n", "end"),
            t.replace("size: 12288", "size: 012288"),
            t.replace("size: 12288", "size:  12288"),
            t.replace("2027-01-15 08:00:00Z", "2027-01-15 08:00:01Z"),
            t.replace("action: release", "action: delete"),
            t.replace("host: backup-1", "host: backup-1 "),
            t.replace("nonce: 8c", "nonce: 8C"),
            t.replace("\n", "\r\n"),
            format!("{t}\n"),
            t.replace(
                "bulwark-approval-statement 1",
                "bulwark-approval-statement 2",
            ),
        ] {
            assert!(
                Statement::decode(bad.as_bytes()).is_err(),
                "accepted:\n{bad}"
            );
        }
        let big = vec![b'a'; MAX_STATEMENT + 1];
        assert!(Statement::decode(&big).is_err());
    }

    fn value() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9/._-][a-zA-Z0-9/._ :|=-]{0,40}[a-zA-Z0-9/._-]"
    }
    fn hex(n: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(0u8..16, n).prop_map(|v| {
            v.iter()
                .map(|d| char::from_digit(u32::from(*d), 16).unwrap())
                .collect()
        })
    }
    fn time() -> impl Strategy<Value = i64> {
        0i64..4_000_000_000
    }
    fn action() -> impl Strategy<Value = Action> {
        let file =
            (value(), hex(64), any::<u64>(), time()).prop_map(|(path, root, size, until)| {
                FileRef {
                    path,
                    root,
                    size,
                    until,
                }
            });
        let repo = (value(), value(), proptest::collection::vec(file, 1..4))
            .prop_map(|(path, id, files)| RepoFiles { path, id, files });
        prop_oneof![
            proptest::collection::vec(repo, 1..4).prop_map(|repos| Action::Release { repos }),
            (
                time(),
                time(),
                any::<i64>(),
                any::<u64>(),
                any::<u64>(),
                time()
            )
                .prop_map(
                    |(trusted, wall, offset, files_unlocking, bytes_unlocking, earliest_expiry)| {
                        Action::TimeAccept {
                            trusted,
                            wall,
                            offset,
                            files_unlocking,
                            bytes_unlocking,
                            earliest_expiry,
                        }
                    }
                ),
            (hex(64), hex(64), proptest::collection::vec(value(), 1..5)).prop_map(
                |(approved, proposed, changes)| Action::Config {
                    approved,
                    proposed,
                    changes
                }
            ),
        ]
    }
    fn statement() -> impl Strategy<Value = Statement> {
        (value(), hex(32), hex(32), time(), 1i64..1_000_000, action()).prop_map(
            |(host, machine_id, nonce, issued, ttl, action)| Statement {
                host,
                machine_id,
                nonce,
                issued,
                expires: issued + ttl,
                action,
            },
        )
    }

    proptest! {
        #[test]
        fn every_statement_round_trips_to_the_same_bytes(s in statement()) {
            let t = s.encode();
            let d = Statement::decode(t.as_bytes()).unwrap();
            prop_assert_eq!(&d, &s);
            prop_assert_eq!(d.encode(), t);
        }

        #[test]
        fn any_change_of_one_byte_is_refused_or_decodes_to_another_statement(
            s in statement(), at in any::<prop::sample::Index>(), b in any::<u8>()
        ) {
            let mut t = s.encode().into_bytes();
            let i = at.index(t.len());
            prop_assume!(t[i] != b);
            t[i] = b;
            if let Ok(d) = Statement::decode(&t) {
                prop_assert_ne!(&d, &s);
                let again = d.encode();
                prop_assert_eq!(again.as_bytes(), &t[..]);
            }
        }

        #[test]
        fn arbitrary_text_never_panics_and_what_decodes_is_canonical(t in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(d) = Statement::decode(&t) {
                let again = d.encode();
                prop_assert_eq!(again.as_bytes(), &t[..]);
            }
        }
    }
}
