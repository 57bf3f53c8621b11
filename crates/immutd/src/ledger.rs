//! The ledger: every sealed file with where it is, what it is and until when it is protected.
//! Root-owned, outside the repositories, rewritten whole by temp-fsync-rename-fsync-dir.
//!
//! Text format, one tab-separated line per file between a header and a footer that holds the
//! entry count and a BLAKE3 of everything before it:
//! ```text
//! bulwark-immutd-ledger 2
//! <repo> <job> <chain> <point> <dev> <ino> <size> <root> <sealed> <period> <requested> <floor> <state> <state_time> <released>
//! end <count> <blake3 hex>
//! ```
//! Version 1 ledgers (without `released`) are still read; they are written back as version 2.

use std::io::Read;
use std::path::{Path, PathBuf};

use bulwark_format::{Digest, PointId};
use bulwark_immut_msg::layout::sealed_path;
use bulwark_immut_msg::{FileInfo, FileState};

use crate::atomic::write_atomic;
use crate::error::{ImmutdError, Result};

const HEADER: &str = "bulwark-immutd-ledger 2";
const HEADER_V1: &str = "bulwark-immutd-ledger 1";
const FIELDS: usize = 15;
/// Largest ledger file read (about five million entries).
const MAX_LEDGER: u64 = 1 << 30;

/// One sealed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub repo: PathBuf,
    pub job: String,
    pub chain: PointId,
    pub point: PointId,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Root digest read from the trailer when sealing.
    pub root: Digest,
    /// Seal time by the trusted clock.
    pub sealed: i64,
    /// The repository's period when it was sealed.
    pub period_days: u32,
    /// Requested expiry after capping; 0 for none.
    pub requested: i64,
    /// The longest expiry ever computed for it: expiries never shrink below this.
    pub floor: i64,
    pub state: FileState,
    /// When it was unlocked or deleted (trusted clock); 0 while locked.
    pub state_time: i64,
    /// When k approvers released it before its expiry (trusted clock); 0 for never. A
    /// released file stays unlocked and may be deleted whatever its expiry says.
    pub released: i64,
}

impl Entry {
    /// The entry of a file just sealed (or adopted) at trusted time `sealed`, under the
    /// repository's period: locked, nothing requested yet. The one place entries are made.
    pub fn new_sealed(
        repo: PathBuf,
        s: crate::repo::Sealed,
        sealed: i64,
        period_days: u32,
    ) -> Entry {
        Entry {
            repo,
            job: s.job,
            chain: s.chain,
            point: s.point,
            dev: s.dev,
            ino: s.ino,
            size: s.size,
            root: s.root,
            sealed,
            period_days,
            requested: 0,
            floor: 0,
            state: FileState::Locked,
            state_time: 0,
            released: 0,
        }
    }

    /// Where the file lives.
    pub fn path(&self) -> PathBuf {
        sealed_path(&self.repo, &self.job, self.chain, self.point)
    }

    /// The protocol view of this entry with its computed expiry.
    pub fn info(&self, expiry: i64) -> FileInfo {
        FileInfo {
            sealed_path: self.path(),
            job: self.job.clone(),
            chain: self.chain,
            point: self.point,
            root_digest: self.root,
            size: self.size,
            inode: self.ino,
            sealed_unix: self.sealed,
            expiry_unix: expiry,
            requested_expiry_unix: self.requested,
            state: self.state,
        }
    }

    fn encode(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.repo.display(),
            self.job,
            self.chain,
            self.point,
            self.dev,
            self.ino,
            self.size,
            self.root,
            self.sealed,
            self.period_days,
            self.requested,
            self.floor,
            self.state.as_str(),
            self.state_time,
            self.released
        );
    }

    fn decode(line: &str, fields: usize) -> std::result::Result<Entry, String> {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != fields {
            return Err(format!("{} fields instead of {fields}", f.len()));
        }
        let int = |i: usize| {
            f[i].parse::<i64>()
                .map_err(|_| format!("field {i} is not a number"))
        };
        let uint = |i: usize| {
            f[i].parse::<u64>()
                .map_err(|_| format!("field {i} is not a number"))
        };
        let state = match f[12] {
            "locked" => FileState::Locked,
            "unlocked" => FileState::Unlocked,
            "deleted" => FileState::Deleted,
            s => return Err(format!("unknown state {s:?}")),
        };
        bulwark_format::validate_name("job", f[1]).map_err(|e| e.to_string())?;
        Ok(Entry {
            repo: PathBuf::from(f[0]),
            job: f[1].to_string(),
            chain: f[2].parse()?,
            point: f[3].parse()?,
            dev: uint(4)?,
            ino: uint(5)?,
            size: uint(6)?,
            root: f[7].parse()?,
            sealed: int(8)?,
            period_days: f[9].parse().map_err(|_| "bad period".to_string())?,
            requested: int(10)?,
            floor: int(11)?,
            state,
            state_time: int(13)?,
            released: if fields > 14 { int(14)? } else { 0 },
        })
    }
}

/// All entries, in seal order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    pub entries: Vec<Entry>,
}

impl Ledger {
    /// Encodes the whole ledger file.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(64 + 256 * self.entries.len());
        s.push_str(HEADER);
        s.push('\n');
        for e in &self.entries {
            e.encode(&mut s);
        }
        let sum = blake3::hash(s.as_bytes());
        s.push_str(&format!("end\t{}\t{}\n", self.entries.len(), sum.to_hex()));
        s
    }

    /// Decodes and checks a ledger file.
    pub fn decode(text: &str) -> std::result::Result<Ledger, String> {
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .map(|i| i + 1)
            .ok_or("no footer")?;
        let (body, footer) = text.split_at(body_end);
        let footer: Vec<&str> = footer.trim_end_matches('\n').split('\t').collect();
        if footer.len() != 3 || footer[0] != "end" {
            return Err("missing footer (the file is truncated)".into());
        }
        if blake3::hash(body.as_bytes()).to_hex().as_str() != footer[2] {
            return Err("checksum mismatch".into());
        }
        let mut lines = body.lines();
        let fields = match lines.next() {
            Some(HEADER) => FIELDS,
            Some(HEADER_V1) => 14,
            _ => return Err("unknown header".into()),
        };
        let entries = lines
            .enumerate()
            .map(|(i, l)| Entry::decode(l, fields).map_err(|e| format!("entry {}: {e}", i + 1)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if footer[1].parse::<usize>().ok() != Some(entries.len()) {
            return Err("entry count mismatch".into());
        }
        Ok(Ledger { entries })
    }

    /// Loads the ledger at `path`; a missing file is an empty ledger.
    pub fn load(path: &Path) -> Result<Ledger> {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ledger::default()),
            Err(e) => return Err(ImmutdError::io("opening ledger", path)(e)),
        };
        let mut s = String::new();
        f.take(MAX_LEDGER + 1)
            .read_to_string(&mut s)
            .map_err(ImmutdError::io("reading ledger", path))?;
        if s.len() as u64 > MAX_LEDGER {
            return Err(ImmutdError::State {
                path: path.into(),
                msg: "larger than 1 GiB".into(),
            });
        }
        Ledger::decode(&s).map_err(|msg| ImmutdError::State {
            path: path.into(),
            msg,
        })
    }

    /// Writes the ledger atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.encode().as_bytes(), 0o600)
    }

    /// Index of the live (not deleted) entry of `point` in `repo`.
    pub fn find_point(&self, repo: Option<&Path>, point: PointId) -> Option<usize> {
        self.entries
            .iter()
            .rposition(|e| {
                e.point == point
                    && repo.is_none_or(|r| e.repo == r)
                    && e.state != FileState::Deleted
            })
            .or_else(|| {
                self.entries
                    .iter()
                    .rposition(|e| e.point == point && repo.is_none_or(|r| e.repo == r))
            })
    }

    /// Index of the entry whose sealed path is `path`.
    pub fn find_path(&self, path: &Path) -> Option<usize> {
        self.entries.iter().rposition(|e| e.path() == path)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A test entry: job, chain byte, point byte, seal time, period.
    pub(crate) fn entry(job: &str, chain: u8, point: u8, sealed: i64, period_days: u32) -> Entry {
        let file = crate::repo::Sealed {
            job: job.into(),
            chain: PointId([chain; 16]),
            point: PointId([point; 16]),
            dev: 1,
            ino: u64::from(point),
            size: 4096,
            root: Digest([point; 32]),
        };
        Entry::new_sealed("/srv/repo".into(), file, sealed, period_days)
    }

    #[test]
    fn a_version_1_ledger_is_still_read() {
        let mut l = Ledger::default();
        l.entries.push(entry("a", 1, 1, 5, 7));
        let v2 = l.encode();
        let body: String = v2
            .lines()
            .take(2)
            .map(|x| x.replace(HEADER, HEADER_V1))
            .map(|x| match x.rsplit_once('\t') {
                Some((a, "0")) => format!("{a}\n"),
                _ => format!("{x}\n"),
            })
            .collect();
        let sum = blake3::hash(body.as_bytes());
        let v1 = format!("{body}end\t1\t{}\n", sum.to_hex());
        assert_eq!(Ledger::decode(&v1).unwrap(), l);
        let mut released = l.clone();
        released.entries[0].released = 99;
        assert_eq!(Ledger::decode(&released.encode()).unwrap(), released);
    }

    #[test]
    fn round_trip_and_damage() {
        let mut l = Ledger::default();
        assert_eq!(Ledger::decode(&l.encode()).unwrap(), l);
        l.entries.push(entry("a", 1, 1, 5, 7));
        let mut e = entry("b", 2, 3, 6, 9);
        e.state = FileState::Unlocked;
        e.requested = 99;
        l.entries.push(e);
        let text = l.encode();
        assert_eq!(Ledger::decode(&text).unwrap(), l);
        assert!(
            Ledger::decode(&text.replace("\t9\t", "\t8\t")).is_err(),
            "edit detected"
        );
        let lines: Vec<&str> = text.lines().collect();
        let dropped = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]);
        assert!(Ledger::decode(&dropped).is_err(), "removal detected");
        assert!(
            Ledger::decode(&text[..text.len() - 10]).is_err(),
            "truncation detected"
        );
        assert_eq!(l.find_point(None, PointId([3; 16])), Some(1));
        assert_eq!(l.find_path(&l.entries[0].path()), Some(0));
    }
}
