//! The audit log: one line per seal, extend, unlock, delete, refused request and clock alert,
//! each carrying the hash of the one before, so removing or editing an entry breaks the
//! chain. The file has the append-only attribute; `audit.head` (written atomically after
//! each append) holds the last sequence number and hash, so cutting entries off the end is
//! detected too.
//!
//! Line: `seq \t wall \t trusted \t event \t detail \t prev \t hash`, where `hash` is keyed
//! BLAKE3 of everything before `\t hash`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;
use crate::error::{ImmutdError, Result};

const CONTEXT: &str = "bulwark-immutd 2026 audit log v1 entry hash";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest line accepted when verifying.
const MAX_LINE: u64 = 64 * 1024;

fn hash_line(body: &str) -> String {
    blake3::Hasher::new_derive_key(CONTEXT)
        .update(body.as_bytes())
        .finalize()
        .to_hex()
        .to_string()
}

/// Makes a detail safe for one tab-separated field.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().take(2048) {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The open audit log.
pub struct AuditLog {
    path: PathBuf,
    head_path: PathBuf,
    file: File,
    seq: u64,
    prev: String,
    /// Set when the existing log failed verification at open.
    pub problem: Option<String>,
}

/// Result of checking a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub last_hash: String,
}

/// Checks the chain of `log` and, when `head` is given, that nothing was cut off the end.
pub fn verify(log: &Path, head: Option<&Path>) -> std::result::Result<Verified, String> {
    let f = match File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return check_head(
                head,
                &Verified {
                    entries: 0,
                    last_hash: GENESIS.into(),
                },
            );
        }
        Err(e) => return Err(format!("cannot open {}: {e}", log.display())),
    };
    let mut r = BufReader::new(f);
    let mut seq = 0u64;
    let mut prev = GENESIS.to_string();
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_LINE + 1)
            .read_line(&mut line)
            .map_err(|e| format!("reading entry {}: {e}", seq + 1))?;
        if n == 0 {
            break;
        }
        if n as u64 > MAX_LINE || !line.ends_with('\n') {
            return Err(format!("entry {} is overlong or unterminated", seq + 1));
        }
        let l = &line[..line.len() - 1];
        let (body, hash) = l
            .rsplit_once('\t')
            .ok_or_else(|| format!("entry {} is malformed", seq + 1))?;
        let f: Vec<&str> = body.split('\t').collect();
        if f.len() != 6 {
            return Err(format!("entry {} has {} fields", seq + 1, f.len() + 1));
        }
        if f[0].parse::<u64>().ok() != Some(seq + 1) {
            return Err(format!(
                "entry {} has sequence number {:?}: an entry was removed or inserted",
                seq + 1,
                f[0]
            ));
        }
        if f[5] != prev {
            return Err(format!(
                "entry {} does not chain to the entry before it: an entry was removed or edited",
                seq + 1
            ));
        }
        if hash_line(body) != hash {
            return Err(format!(
                "entry {} was edited (its hash does not match its content)",
                seq + 1
            ));
        }
        seq += 1;
        prev = hash.to_string();
    }
    check_head(
        head,
        &Verified {
            entries: seq,
            last_hash: prev,
        },
    )
}

fn check_head(head: Option<&Path>, v: &Verified) -> std::result::Result<Verified, String> {
    let Some(head) = head else {
        return Ok(v.clone());
    };
    let text = match std::fs::read_to_string(head) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && v.entries == 0 => {
            return Ok(v.clone())
        }
        Err(e) => return Err(format!("cannot read {}: {e}", head.display())),
    };
    let (seq, hash) = text
        .trim()
        .split_once('\t')
        .ok_or("audit head is malformed")?;
    let seq: u64 = seq.parse().map_err(|_| "audit head is malformed")?;
    // The head is written just after each append, so it may lag by one entry after a crash.
    if seq == v.entries && hash == v.last_hash {
        return Ok(v.clone());
    }
    if seq + 1 == v.entries {
        return Ok(v.clone());
    }
    if seq > v.entries {
        return Err(format!(
            "the log ends at entry {} but {} were written: entries were cut off the end",
            v.entries, seq
        ));
    }
    Err(format!(
        "the log's last entry (#{}) does not match the recorded head (#{seq})",
        v.entries
    ))
}

impl AuditLog {
    /// Opens (creating) the log in `dir`, checks it, and sets the append-only attribute.
    pub fn open(dir: &Path) -> Result<AuditLog> {
        let path = dir.join("audit.log");
        let head_path = dir.join("audit.head");
        let (seq, prev, problem) = match verify(&path, Some(&head_path)) {
            Ok(v) => (v.entries, v.last_hash, None),
            Err(msg) => {
                // Keep appending after the last line as it stands, and report the damage.
                let (seq, prev) = last_line(&path).unwrap_or((0, GENESIS.into()));
                (seq, prev, Some(msg))
            }
        };
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(bulwark_sys::open::NOFOLLOW)
            .open(&path)
            .map_err(ImmutdError::io("opening audit log", &path))?;
        if let Err(e) = bulwark_sys::set_flag(&file, bulwark_sys::FS_APPEND_FL, true) {
            eprintln!(
                "bulwark-immutd: warning: cannot set the append-only attribute on {}: {e}",
                path.display()
            );
        }
        Ok(AuditLog {
            path,
            head_path,
            file,
            seq,
            prev,
            problem,
        })
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and fsyncs it.
    pub fn append(&mut self, wall: i64, trusted: i64, event: &str, detail: &str) -> Result<()> {
        let seq = self.seq + 1;
        let body = format!(
            "{seq}\t{wall}\t{trusted}\t{}\t{}\t{}",
            escape(event),
            escape(detail),
            self.prev
        );
        let hash = hash_line(&body);
        self.file
            .write_all(format!("{body}\t{hash}\n").as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(ImmutdError::io("appending to audit log", &self.path))?;
        self.seq = seq;
        self.prev = hash;
        write_atomic(
            &self.head_path,
            format!("{}\t{}\n", self.seq, self.prev).as_bytes(),
            0o600,
        )
    }
}

fn last_line(path: &Path) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let l = text.lines().last()?;
    let (_, hash) = l.rsplit_once('\t')?;
    let seq = l.split('\t').next()?.parse().ok()?;
    Some((seq, hash.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clear_append(p: &Path) {
        if let Ok(f) = File::open(p) {
            let _ = bulwark_sys::set_flag(&f, bulwark_sys::FS_APPEND_FL, false);
        }
    }

    #[test]
    fn chain_detects_removal_edit_and_truncation() {
        let t = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(t.path()).unwrap();
        for i in 0..5 {
            log.append(100 + i, 100 + i, "seal", &format!("file {i}\twith tab"))
                .unwrap();
        }
        drop(log);
        let p = t.path().join("audit.log");
        let h = t.path().join("audit.head");
        assert_eq!(verify(&p, Some(&h)).unwrap().entries, 5);
        clear_append(&p);
        let good = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = good.lines().collect();

        let removed: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(&p, removed).unwrap();
        assert!(verify(&p, Some(&h)).unwrap_err().contains("entry 3"));

        std::fs::write(&p, good.replace("file 3", "file 9")).unwrap();
        assert!(verify(&p, Some(&h)).unwrap_err().contains("edited"));

        let cut: String = lines[..3].iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&p, cut).unwrap();
        assert!(verify(&p, Some(&h)).unwrap_err().contains("cut off"));

        std::fs::write(&p, &good).unwrap();
        assert!(verify(&p, Some(&h)).is_ok());
        // Reopening continues the chain.
        let mut log = AuditLog::open(t.path()).unwrap();
        assert!(log.problem.is_none());
        log.append(200, 200, "unlock", "x").unwrap();
        drop(log);
        assert_eq!(verify(&p, Some(&h)).unwrap().entries, 6);
        clear_append(&p);
    }
}
