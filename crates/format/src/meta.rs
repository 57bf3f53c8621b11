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
    /// Extension records (see [`Extension`]), tags strictly increasing; empty for most points.
    pub extensions: Vec<Extension>,
}

/// A tagged record after the file table, for what later features record about a point
/// (where its changed-block tracking came from, how its blocks are encrypted, …).
///
/// A tag with bit 15 set is *critical*: a reader that does not know it must refuse the file,
/// because reading the blocks without understanding it would give wrong bytes. Other unknown
/// tags are kept and ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    pub tag: u16,
    pub data: Vec<u8>,
}

/// Bit 15 of an extension tag: readers that do not know the tag refuse the file.
pub const EXT_CRITICAL: u16 = 0x8000;
/// Where a point's changed-block tracking state came from (live sources, docs/sources.md).
pub const EXT_CBT_SOURCE: u16 = 0x0001;
/// How the point's blocks are encrypted (docs/encryption.md); critical.
pub const EXT_ENCRYPTION: u16 = EXT_CRITICAL | 0x0002;
/// The critical tags this version of the format understands.
const KNOWN_CRITICAL: [u16; 1] = [EXT_ENCRYPTION];
/// At most this many extension records, each at most this many bytes.
pub const MAX_EXTENSIONS: usize = 32;
pub const MAX_EXTENSION_LEN: usize = 64 * 1024;
/// Metadata flag (bytes 2..4): extension records follow the file table.
const META_FLAG_EXTENSIONS: u16 = 1;

impl PointMeta {
    /// The data of the extension record with `tag`, if the point has one.
    pub fn extension(&self, tag: u16) -> Option<&[u8]> {
        self.extensions
            .iter()
            .find(|e| e.tag == tag)
            .map(|e| e.data.as_slice())
    }

    /// Sets (replaces) the extension record with `tag`, keeping tags in order; refuses more
    /// than [`MAX_EXTENSIONS`] records or one longer than [`MAX_EXTENSION_LEN`].
    pub fn set_extension(&mut self, tag: u16, data: Vec<u8>) -> Result<()> {
        if data.len() > MAX_EXTENSION_LEN {
            return Err(FormatError::Invalid(format!(
                "extension {tag:#06x} of {} bytes is over the limit of {MAX_EXTENSION_LEN}",
                data.len()
            )));
        }
        match self.extensions.binary_search_by_key(&tag, |e| e.tag) {
            Ok(i) => self.extensions[i].data = data,
            Err(_) if self.extensions.len() >= MAX_EXTENSIONS => {
                return Err(FormatError::Invalid(format!(
                    "a restore point holds at most {MAX_EXTENSIONS} extension records"
                )))
            }
            Err(i) => self.extensions.insert(i, Extension { tag, data }),
        }
        Ok(())
    }
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
        let flags = if self.extensions.is_empty() {
            0
        } else {
            META_FLAG_EXTENSIONS
        };
        b.extend_from_slice(&flags.to_le_bytes());
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
        if !self.extensions.is_empty() {
            b.extend_from_slice(&(self.extensions.len() as u16).to_le_bytes());
            for e in &self.extensions {
                b.extend_from_slice(&e.tag.to_le_bytes());
                b.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
                b.extend_from_slice(&e.data);
            }
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
        let flags = u16::from_le_bytes([b[2], b[3]]);
        if flags & !META_FLAG_EXTENSIONS != 0 {
            return Err(bad("unknown metadata flags"));
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
        let table_end = count.checked_mul(48).and_then(|n| n.checked_add(pos));
        let table_fits = match table_end {
            Some(end) if flags & META_FLAG_EXTENSIONS == 0 => end == b.len(),
            Some(end) => end <= b.len(),
            None => false,
        };
        if !table_fits {
            return Err(bad("file table length does not match the metadata size"));
        }
        let extensions = match table_end {
            Some(end) if flags & META_FLAG_EXTENSIONS != 0 => decode_extensions(&b[end..])?,
            _ => Vec::new(),
        };
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
            extensions,
        })
    }
}

/// Decodes the extension records that end the metadata: a count (1 ..= [`MAX_EXTENSIONS`]),
/// then per record its tag, its length and its data. Tags strictly increase; an unknown
/// critical tag is refused.
fn decode_extensions(b: &[u8]) -> Result<Vec<Extension>> {
    let bad = |m: String| FormatError::Meta(m);
    if b.len() < 2 {
        return Err(bad("metadata truncated before the extension count".into()));
    }
    let count = u16::from_le_bytes([b[0], b[1]]) as usize;
    if count == 0 || count > MAX_EXTENSIONS {
        return Err(bad(format!(
            "extension count {count} is outside 1..={MAX_EXTENSIONS}"
        )));
    }
    let mut pos = 2;
    let mut out: Vec<Extension> = Vec::with_capacity(count);
    for _ in 0..count {
        if pos + 6 > b.len() {
            return Err(bad("metadata truncated in an extension header".into()));
        }
        let tag = u16::from_le_bytes([b[pos], b[pos + 1]]);
        let len = u32_at(b, pos + 2) as usize;
        pos += 6;
        if len > MAX_EXTENSION_LEN || pos + len > b.len() {
            return Err(bad(format!(
                "extension {tag:#06x} length {len} out of bounds"
            )));
        }
        if out.last().is_some_and(|e| e.tag >= tag) {
            return Err(bad("extension tags do not strictly increase".into()));
        }
        if tag & EXT_CRITICAL != 0 && !KNOWN_CRITICAL.contains(&tag) {
            return Err(bad(format!(
                "the restore point needs extension {tag:#06x}, which this version of Bulwark does not understand; read it with a newer version"
            )));
        }
        out.push(Extension {
            tag,
            data: b[pos..pos + len].to_vec(),
        });
        pos += len;
    }
    if pos != b.len() {
        return Err(bad("bytes after the last extension record".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> PointMeta {
        PointMeta {
            kind: PointKind::Incremental,
            retention: RetentionClass::Regular,
            compression_level: 3,
            created_unix_secs: 1_790_000_000,
            created_nanos: 5,
            block_size: 1 << 20,
            disk_size: 1 << 30,
            point: PointId([1; 16]),
            parent: PointId([2; 16]),
            chain: PointId([2; 16]),
            job: "web01".into(),
            client: "web01.example".into(),
            stats: Stats::default(),
            files: vec![FileRef {
                point: PointId([2; 16]),
                root: Digest([9; 32]),
            }],
            extensions: vec![],
        }
    }

    #[test]
    fn a_point_without_extensions_encodes_as_before() {
        let b = meta().encode();
        assert_eq!(
            &b[2..4],
            &[0, 0],
            "the flags stay zero, so older readers read it"
        );
        assert_eq!(PointMeta::decode(&b).unwrap(), meta());
    }

    #[test]
    fn extensions_round_trip_in_tag_order() {
        let mut m = meta();
        m.set_extension(EXT_ENCRYPTION, vec![7; 40]).unwrap();
        m.set_extension(EXT_CBT_SOURCE, b"cbt".to_vec()).unwrap();
        m.set_extension(0x0100, vec![]).unwrap();
        assert_eq!(
            m.extensions.iter().map(|e| e.tag).collect::<Vec<_>>(),
            [EXT_CBT_SOURCE, 0x0100, EXT_ENCRYPTION]
        );
        let d = PointMeta::decode(&m.encode()).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.extension(EXT_CBT_SOURCE), Some(&b"cbt"[..]));
        assert_eq!(d.extension(0x0200), None);
    }

    #[test]
    fn unknown_critical_extensions_and_bad_records_are_refused() {
        let mut m = meta();
        m.set_extension(EXT_CRITICAL | 0x0777, vec![1]).unwrap();
        let err = PointMeta::decode(&m.encode()).unwrap_err().to_string();
        assert!(err.contains("does not understand"), "{err}");

        let mut m = meta();
        m.set_extension(0x0777, vec![1, 2, 3]).unwrap();
        let good = m.encode();
        assert!(
            PointMeta::decode(&good).is_ok(),
            "unknown non-critical tags are kept"
        );
        for cut in 1..=9 {
            assert!(
                PointMeta::decode(&good[..good.len() - cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(PointMeta::decode(&extra).is_err());
        let mut flags = good.clone();
        flags[2] = 2;
        assert!(
            PointMeta::decode(&flags).is_err(),
            "unknown flag bits are refused"
        );
        assert!(m.set_extension(1, vec![0; MAX_EXTENSION_LEN + 1]).is_err());
        for t in 0..MAX_EXTENSIONS as u16 {
            let _ = m.set_extension(0x1000 + t, vec![]);
        }
        assert_eq!(m.extensions.len(), MAX_EXTENSIONS);
        assert!(m.set_extension(0x2000, vec![]).is_err());
    }
}
