use std::fmt;
use std::str::FromStr;

/// A BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// BLAKE3 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(*blake3::hash(data).as_bytes())
    }
    /// Full lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Digest(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..16])
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| format!("not a 64-digit hex digest: {e}"))?;
        Ok(Digest(out))
    }
}

/// Identifies a restore point: 8 bytes of creation time (big-endian nanoseconds, so that ids
/// sort by time) and 8 random bytes. Rendered as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PointId(pub [u8; 16]);

impl PointId {
    /// The all-zero id, meaning "none" (e.g. a full has no parent).
    pub const NONE: PointId = PointId([0; 16]);

    /// A new id from a creation time and 8 random bytes.
    pub fn new(unix_nanos: u64, random: [u8; 8]) -> Self {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&unix_nanos.to_be_bytes());
        b[8..].copy_from_slice(&random);
        PointId(b)
    }
    /// The creation time the id carries, in nanoseconds since the epoch (what
    /// [`PointId::new`] was given).
    pub fn unix_nanos(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
    /// True for [`PointId::NONE`].
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PointId({})", self.to_hex())
    }
}

impl FromStr for PointId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out)
            .map_err(|e| format!("not a restore point id (32 hex digits): {e}"))?;
        Ok(PointId(out))
    }
}

/// A block number of the protected disk (block `n` covers bytes `n*block_size ..`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct BlockNo(pub u64);

impl fmt::Display for BlockNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
