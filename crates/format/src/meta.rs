//! The metadata section: what the restore point is, where it sits in its chain, which files
//! it references.

use crate::layout::{u32_at, u64_at};
use crate::{Digest, FormatError, PointId, Result};

/// How a restore point was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PointKind {
    /// Every block was read from the source.
    ActiveFull,
    /// Only blocks changed since the parent were sent; the rest reference earlier files.
    Incremental,
    /// Built on the repository from an earlier chain by block cloning.
    SyntheticFull,
}

impl PointKind {
    fn code(self) -> u8 {
        match self {
            PointKind::ActiveFull => 1,
            PointKind::Incremental => 2,
            PointKind::SyntheticFull => 3,
        }
    }
    fn from_code(c: u8) -> Result<Self> {
        Ok(match c {
            1 => PointKind::ActiveFull,
            2 => PointKind::Incremental,
            3 => PointKind::SyntheticFull,
            _ => return Err(FormatError::Meta(format!("unknown restore point kind {c}"))),
        })
    }
    /// True for both kinds of full (a chain starts with one).
    pub fn is_full(self) -> bool {
        !matches!(self, PointKind::Incremental)
    }
    /// Short name for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            PointKind::ActiveFull => "full",
            PointKind::Incremental => "incremental",
            PointKind::SyntheticFull => "synthetic-full",
        }
    }
}

/// Retention class of a restore point; GFS classes are protected for their longer lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetentionClass {
    Regular,
    Weekly,
    Monthly,
    Yearly,
}

impl RetentionClass {
    fn code(self) -> u8 {
        match self {
            RetentionClass::Regular => 0,
            RetentionClass::Weekly => 1,
            RetentionClass::Monthly => 2,
            RetentionClass::Yearly => 3,
        }
    }
    fn from_code(c: u8) -> Result<Self> {
        Ok(match c {
            0 => RetentionClass::Regular,
            1 => RetentionClass::Weekly,
            2 => RetentionClass::Monthly,
            3 => RetentionClass::Yearly,
            _ => return Err(FormatError::Meta(format!("unknown retention class {c}"))),
        })
    }
    /// Short name for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionClass::Regular => "regular",
            RetentionClass::Weekly => "weekly",
            RetentionClass::Monthly => "monthly",
            RetentionClass::Yearly => "yearly",
        }
    }
}

/// An earlier restore point this one references blocks of, bound by its root digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRef {
    pub point: PointId,
    pub root: Digest,
}

/// Counters recorded at creation, for listings without reading the map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blocks in the map (all non-zero blocks of the disk).
    pub blocks_mapped: u64,
    /// Blocks stored in this file.
    pub blocks_new: u64,
    /// Plain bytes of the blocks stored in this file.
    pub bytes_new_plain: u64,
    /// Bytes of block data stored in this file (after compression, before alignment).
    pub bytes_stored: u64,
}

/// Everything the restore point says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointMeta {
    pub kind: PointKind,
    pub retention: RetentionClass,
    /// zstd level used for new blocks; 0 when stored uncompressed.
    pub compression_level: i32,
    /// Creation time by the repository's clock.
    pub created_unix_secs: i64,
    pub created_nanos: u32,
    pub block_size: u32,
    pub disk_size: u64,
    pub point: PointId,
    /// Previous restore point of the chain; [`PointId::NONE`] for a full.
    pub parent: PointId,
    /// The chain: the id of its first (full) restore point.
    pub chain: PointId,
    pub job: String,
    /// Identity of the client that sent it (its certificate name); empty for local backups.
    pub client: String,
    pub stats: Stats,
    /// Earlier restore points referenced by map entries with `file_ref >= 1`.
    pub files: Vec<FileRef>,
}

const MAX_NAME: usize = 255;
const FIXED: usize = 112;

/// Checks a job or client name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not starting with
/// a dot. This rules out `/`, `..`, control characters and anything a shell or path would
/// interpret.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(ok_char) {
        return Err(FormatError::Invalid(format!(
            "{what} name {name:?} is not allowed: use 1 to 64 characters from A-Z a-z 0-9 . _ -, not starting with '.'"
        )));
    }
    Ok(())
}

impl PointMeta {
    /// Encodes the metadata section.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            FIXED + self.job.len() + self.client.len() + 8 + 48 * self.files.len(),
        );
        b.push(self.kind.code());
        b.push(self.retention.code());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&self.compression_level.to_le_bytes());
        b.extend_from_slice(&self.created_unix_secs.to_le_bytes());
        b.extend_from_slice(&self.created_nanos.to_le_bytes());
        b.extend_from_slice(&self.block_size.to_le_bytes());
        b.extend_from_slice(&self.disk_size.to_le_bytes());
        b.extend_from_slice(&self.point.0);
        b.extend_from_slice(&self.parent.0);
        b.extend_from_slice(&self.chain.0);
        for v in [
            self.stats.blocks_mapped,
            self.stats.blocks_new,
            self.stats.bytes_new_plain,
            self.stats.bytes_stored,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        debug_assert_eq!(b.len(), FIXED);
        for s in [&self.job, &self.client] {
            b.extend_from_slice(&(s.len() as u16).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        b.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for f in &self.files {
            b.extend_from_slice(&f.point.0);
            b.extend_from_slice(&f.root.0);
        }
        b
    }

    /// Decodes and validates a metadata section.
    pub fn decode(b: &[u8]) -> Result<PointMeta> {
        let bad = |m: &str| FormatError::Meta(m.to_string());
        if b.len() < FIXED + 8 {
            return Err(bad("metadata section too short"));
        }
        let kind = PointKind::from_code(b[0])?;
        let retention = RetentionClass::from_code(b[1])?;
        if b[2] != 0 || b[3] != 0 {
            return Err(bad("reserved metadata bytes are not zero"));
        }
        let id = |at: usize| PointId(b[at..at + 16].try_into().expect("16 bytes"));
        let mut pos = FIXED;
        let mut names = [String::new(), String::new()];
        for name in names.iter_mut() {
            if pos + 2 > b.len() {
                return Err(bad("metadata truncated in a name"));
            }
            let len = u16::from_le_bytes([b[pos], b[pos + 1]]) as usize;
            pos += 2;
            if len > MAX_NAME || pos + len > b.len() {
                return Err(bad("metadata name length out of bounds"));
            }
            *name = std::str::from_utf8(&b[pos..pos + len])
                .map_err(|_| bad("metadata name is not UTF-8"))?
                .to_string();
            pos += len;
        }
        let [job, client] = names;
        validate_name("job", &job)?;
        if !client.is_empty() {
            validate_name("client", &client)?;
        }
        if pos + 4 > b.len() {
            return Err(bad("metadata truncated before file table"));
        }
        let count = u32_at(b, pos) as usize;
        pos += 4;
        if count.checked_mul(48).and_then(|n| n.checked_add(pos)) != Some(b.len()) {
            return Err(bad("file table length does not match the metadata size"));
        }
        let files = (0..count)
            .map(|i| {
                let at = pos + i * 48;
                FileRef {
                    point: id(at),
                    root: Digest(b[at + 16..at + 48].try_into().expect("32 bytes")),
                }
            })
            .collect();
        let created_nanos = u32_at(b, 16);
        if created_nanos >= 1_000_000_000 {
            return Err(bad("creation time nanoseconds out of range"));
        }
        Ok(PointMeta {
            kind,
            retention,
            compression_level: i32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            created_unix_secs: i64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            created_nanos,
            block_size: u32_at(b, 20),
            disk_size: u64_at(b, 24),
            point: id(32),
            parent: id(48),
            chain: id(64),
            stats: Stats {
                blocks_mapped: u64_at(b, 80),
                blocks_new: u64_at(b, 88),
                bytes_new_plain: u64_at(b, 96),
                bytes_stored: u64_at(b, 104),
            },
            job,
            client,
            files,
        })
    }
}
