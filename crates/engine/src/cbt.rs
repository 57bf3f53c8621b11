//! Changed-block tracking: the provenance record each restore point carries (extension
//! `EXT_CBT_SOURCE`, byte layout in docs/sources.md), the rules that decide whether an
//! incremental may trust a dirty bitmap, and which blocks it then reads.
//!
//! The rule (docs/sources.md, "Safety of changed-block tracking"): a bitmap is used only
//! when the parent point's record shows that this bitmap existed on this same source, with
//! this disk size, when the parent was read — then every write since the parent's read is in
//! it. Anything else (no record, a record of another point, another source, another size,
//! the bitmap missing, not recording, marked inconsistent, recreated with another
//! granularity, a contradiction between the bitmap and the allocation map) reads and hashes
//! the whole disk and says why.

use bulwark_format::PointId;

use crate::input::Run;

pub use bulwark_format::EXT_CBT_SOURCE as TAG;

/// Version of the record layout.
pub const RECORD_VERSION: u8 = 1;
/// Longest source identity and bitmap name recorded.
const MAX_TEXT: usize = 4096;

/// Who manages the bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bulwark creates it (`--cbt`): named after the point, created before the point is read.
    Managed,
    /// Its owner does (`--dirty-bitmap NAME`: libvirt, Proxmox, `qemu-nbd -B`).
    Owner,
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Managed => 1,
            Mode::Owner => 2,
        }
    }
    /// How docs and reports name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Managed => "managed",
            Mode::Owner => "dirty-bitmap",
        }
    }
}

/// Where a point's changed-block tracking state came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CbtRecord {
    pub mode: Mode,
    /// The disk's size when the point was read.
    pub disk_size: u64,
    /// The checkpoint Bulwark made: the id of the point the record belongs to.
    pub checkpoint: PointId,
    /// The bitmap's granularity in bytes (0 when there is no bitmap).
    pub granularity: u64,
    /// Changed-block-tracking incrementals since the chain was last read in full.
    pub since_full_read: u32,
    /// The source's identity (`file:PATH`, `nbd:URI`, `qmp:SOCKET#NODE`).
    pub source: String,
    /// The bitmap that records every write since this point was read; empty when none did.
    pub bitmap: String,
}

impl CbtRecord {
    /// The record's bytes (little-endian, docs/sources.md).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(40 + self.source.len() + self.bitmap.len());
        b.push(RECORD_VERSION);
        b.push(self.mode.code());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&self.disk_size.to_le_bytes());
        b.extend_from_slice(&self.checkpoint.0);
        b.extend_from_slice(&self.granularity.to_le_bytes());
        b.extend_from_slice(&self.since_full_read.to_le_bytes());
        for s in [&self.source, &self.bitmap] {
            let s = &s.as_bytes()[..s.len().min(MAX_TEXT)];
            b.extend_from_slice(&(s.len() as u16).to_le_bytes());
            b.extend_from_slice(s);
        }
        b
    }

    /// Decodes a record; every length is checked.
    pub fn decode(b: &[u8]) -> Result<CbtRecord, String> {
        if b.len() < 40 {
            return Err(format!("{} bytes, shorter than the fixed 40", b.len()));
        }
        if b[0] != RECORD_VERSION {
            return Err(format!(
                "record version {} (this Bulwark reads version 1)",
                b[0]
            ));
        }
        let mode = match b[1] {
            1 => Mode::Managed,
            2 => Mode::Owner,
            m => return Err(format!("unknown mode {m}")),
        };
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let mut pos = 40;
        let mut texts = [String::new(), String::new()];
        for t in texts.iter_mut() {
            if pos + 2 > b.len() {
                return Err("truncated before a text".into());
            }
            let n = u16::from_le_bytes([b[pos], b[pos + 1]]) as usize;
            pos += 2;
            if n > MAX_TEXT || pos + n > b.len() {
                return Err("a text length out of bounds".into());
            }
            *t = std::str::from_utf8(&b[pos..pos + n])
                .map_err(|_| "a text that is not UTF-8".to_string())?
                .to_string();
            pos += n;
        }
        if pos != b.len() {
            return Err("bytes after the record".into());
        }
        let [source, bitmap] = texts;
        Ok(CbtRecord {
            mode,
            disk_size: u64_at(4),
            checkpoint: PointId(b[12..28].try_into().expect("16 bytes")),
            granularity: u64_at(28),
            since_full_read: u32::from_le_bytes(b[36..40].try_into().expect("4 bytes")),
            source,
            bitmap,
        })
    }
}

/// The granularity of the bitmaps Bulwark creates: not QEMU's default (64 KiB), so that a
/// bitmap deleted and re-added under the same name with the default (`qemu-img bitmap --add
/// NAME`) differs from the granularity its record holds and is told apart as recreated. A
/// bitmap recreated with this granularity too cannot be told apart (a qcow2 bitmap carries no
/// identity): `--cbt-verify-every` finds what such a bitmap missed.
pub const MANAGED_GRANULARITY: u64 = 128 << 10;

/// The name of the bitmap Bulwark creates for point `point` of `job`.
pub fn managed_bitmap_name(job: &str, point: PointId) -> String {
    format!("{}{}", managed_prefix(job), point.to_hex())
}

/// The prefix of every bitmap Bulwark manages for `job`.
pub fn managed_prefix(job: &str) -> String {
    format!("bulwark.{job}.")
}

/// A dirty bitmap as the source shows it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitmapNow {
    pub name: String,
    pub granularity: u64,
    /// It records writes (enabled, `auto` in a qcow2).
    pub recording: bool,
    /// QEMU marked it inconsistent (`in-use` in a qcow2 not closed cleanly).
    pub inconsistent: bool,
}

/// What the parent offers: its id, its disk size, its CBT record bytes.
#[derive(Clone, Copy, Debug)]
pub struct ParentCbt<'a> {
    pub point: PointId,
    pub disk_size: u64,
    pub record: Option<&'a [u8]>,
}

/// What this backup's source offers.
#[derive(Clone, Debug)]
pub struct Offer<'a> {
    pub mode: Mode,
    pub identity: &'a str,
    pub disk_size: u64,
    /// The bitmaps the source has now (managed), or the owner's bitmap if the export has it.
    pub bitmaps: &'a [BitmapNow],
    /// `--dirty-bitmap NAME` (owner mode).
    pub owner_bitmap: Option<&'a str>,
    /// `--cbt-verify-every N` (0: never).
    pub verify_every: u32,
}

/// The decision for an incremental.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Read only what bitmap `bitmap` marks dirty.
    Use {
        bitmap: String,
        since_full_read: u32,
    },
    /// Read and hash everything, but compare with what `bitmap` marks dirty and report
    /// every block it missed (periodic verify-by-reading).
    Verify { bitmap: String },
    /// Read and hash everything, because of `reason`.
    FullRead { reason: String },
}

/// Applies the proof rules (module doc) to a parent and a source.
pub fn decide(parent: Option<ParentCbt<'_>>, offer: &Offer<'_>) -> Decision {
    let full = |reason: String| Decision::FullRead { reason };
    let Some(p) = parent else {
        return full("a new chain reads the whole disk".into());
    };
    let Some(bytes) = p.record else {
        return full(format!(
            "the parent point {} carries no changed-block tracking record (it was not read with --cbt or --dirty-bitmap)",
            p.point
        ));
    };
    let r = match CbtRecord::decode(bytes) {
        Ok(r) => r,
        Err(e) => {
            return full(format!(
                "the parent's changed-block tracking record is unreadable: {e}"
            ))
        }
    };
    if r.checkpoint != p.point {
        return full(format!(
            "the parent's record names checkpoint {}, not the parent {} (copied from another point)",
            r.checkpoint, p.point
        ));
    }
    if r.source != offer.identity {
        return full(format!(
            "the parent was read from {}, this backup reads {}: a bitmap of one source says nothing about another",
            r.source, offer.identity
        ));
    }
    if r.disk_size != offer.disk_size || p.disk_size != offer.disk_size {
        return full(format!(
            "the disk is {} bytes now but was {} bytes when the parent was read",
            offer.disk_size, r.disk_size
        ));
    }
    if r.mode != offer.mode {
        return full(format!(
            "the parent was read with {} tracking, this backup uses {}",
            r.mode.as_str(),
            offer.mode.as_str()
        ));
    }
    if let Some(name) = offer.owner_bitmap {
        if !offer.bitmaps.iter().any(|b| b.name == name) {
            return full(format!(
                "the NBD export offers no bitmap {name:?} (no meta context qemu:dirty-bitmap:{name}): export it \
                 (`qemu-nbd -B {name}`, or the bitmap in the owner's NBD server); until then every backup reads the whole disk"
            ));
        }
    }
    if r.bitmap.is_empty() {
        return full(
            "no dirty bitmap was on the source when the parent was read, so none is known to have started before it"
                .into(),
        );
    }
    if let Some(name) = offer.owner_bitmap {
        if name != r.bitmap {
            return full(format!(
                "the parent was read while bitmap {:?} was on the source, not {name:?}",
                r.bitmap
            ));
        }
    }
    let Some(b) = offer.bitmaps.iter().find(|b| b.name == r.bitmap) else {
        return full(format!(
            "bitmap {:?} is not on the source any more (deleted, or the disk was replaced)",
            r.bitmap
        ));
    };
    if b.inconsistent {
        return full(format!(
            "bitmap {:?} is marked inconsistent (QEMU did not close the image cleanly)",
            b.name
        ));
    }
    if !b.recording {
        return full(format!("bitmap {:?} is not recording writes", b.name));
    }
    if r.granularity != 0 && b.granularity != r.granularity {
        return full(format!(
            "bitmap {:?} has a granularity of {} bytes, not the {} it was created with: it was recreated",
            b.name, b.granularity, r.granularity
        ));
    }
    if offer.verify_every > 0 && r.since_full_read + 1 >= offer.verify_every {
        return Decision::Verify {
            bitmap: b.name.clone(),
        };
    }
    Decision::Use {
        bitmap: b.name.clone(),
        since_full_read: r.since_full_read + 1,
    }
}

/// Sorted, merged `[start, end)` byte ranges: a cursor answers "does `[a, b)` overlap any?"
/// for increasing `a`.
struct Cursor<'a> {
    r: &'a [(u64, u64)],
    i: usize,
}

impl Cursor<'_> {
    fn overlaps(&mut self, a: u64, b: u64) -> bool {
        while self.i < self.r.len() && self.r[self.i].1 <= a {
            self.i += 1;
        }
        self.i < self.r.len() && self.r[self.i].0 < b
    }
}

/// The blocks an incremental reads and references. `data` are the byte ranges that may hold
/// data (the rest reads as zeroes), `dirty` the bitmap's dirty ranges, `parent_blocks` the
/// parent's non-zero blocks (sorted). A dirty block is read (or is zero when it holds no
/// data); a clean block is referenced when the parent has it and is zero otherwise. A clean
/// block that reads as zeroes where the parent has data is a contradiction: the bitmap
/// missed a change, and the error says which block.
pub fn plan_runs(
    size: u64,
    block_size: u32,
    data: &[(u64, u64)],
    dirty: &[(u64, u64)],
    parent_blocks: &[u64],
) -> Result<Vec<Run>, String> {
    let bs = u64::from(block_size);
    let blocks = size.div_ceil(bs);
    let mut out: Vec<Run> = Vec::new();
    let mut push = |b: u64, read: bool| match out.last_mut() {
        Some(l) if l.end == b && l.read == read => l.end = b + 1,
        _ => out.push(Run {
            first: b,
            end: b + 1,
            read,
        }),
    };
    let (mut d, mut x) = (Cursor { r: data, i: 0 }, Cursor { r: dirty, i: 0 });
    let mut p = 0usize;
    for b in 0..blocks {
        let (a, e) = (b * bs, ((b + 1) * bs).min(size));
        let has_data = d.overlaps(a, e);
        let is_dirty = x.overlaps(a, e);
        while p < parent_blocks.len() && parent_blocks[p] < b {
            p += 1;
        }
        let in_parent = p < parent_blocks.len() && parent_blocks[p] == b;
        match (is_dirty, has_data, in_parent) {
            (true, true, _) => push(b, true),
            (true, false, _) => {}
            (false, false, true) => {
                return Err(format!(
                    "the bitmap says block {b} did not change, but it reads as zeroes where the parent has data"
                ))
            }
            (false, true, true) => push(b, false),
            (false, _, false) => {}
        }
    }
    Ok(out)
}

/// Dirty blocks of `dirty` at `block_size`, as sorted block numbers (for verify-by-reading).
pub fn dirty_blocks(size: u64, block_size: u32, dirty: &[(u64, u64)]) -> Vec<u64> {
    let bs = u64::from(block_size);
    let mut out: Vec<u64> = Vec::new();
    for &(a, e) in dirty {
        let e = e.min(size);
        if a >= e {
            continue;
        }
        for b in a / bs..e.div_ceil(bs) {
            if out.last() != Some(&b) {
                out.push(b);
            }
        }
    }
    out
}

/// Bytes in sorted ranges.
pub fn range_bytes(r: &[(u64, u64)]) -> u64 {
    r.iter().map(|(a, b)| b - a).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(point: PointId) -> CbtRecord {
        CbtRecord {
            mode: Mode::Managed,
            disk_size: 1 << 30,
            checkpoint: point,
            granularity: 65536,
            since_full_read: 2,
            source: "file:/vm/a.qcow2".into(),
            bitmap: managed_bitmap_name("web", point),
        }
    }

    fn bm(name: &str) -> BitmapNow {
        BitmapNow {
            name: name.into(),
            granularity: 65536,
            recording: true,
            inconsistent: false,
        }
    }

    #[test]
    fn records_round_trip_and_bad_bytes_are_refused() {
        let r = rec(PointId([3; 16]));
        let b = r.encode();
        assert_eq!(CbtRecord::decode(&b).unwrap(), r);
        for cut in 1..b.len() {
            assert!(CbtRecord::decode(&b[..cut]).is_err(), "cut {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(CbtRecord::decode(&extra).is_err());
        let mut v = b.clone();
        v[0] = 9;
        assert!(CbtRecord::decode(&v).unwrap_err().contains("version"));
    }

    #[test]
    fn a_bitmap_is_used_only_when_every_rule_holds() {
        let point = PointId([5; 16]);
        let good = rec(point);
        let name = good.bitmap.clone();
        let bytes = good.encode();
        let parent = ParentCbt {
            point,
            disk_size: 1 << 30,
            record: Some(&bytes),
        };
        let bitmaps = [bm(&name)];
        let offer = Offer {
            mode: Mode::Managed,
            identity: "file:/vm/a.qcow2",
            disk_size: 1 << 30,
            bitmaps: &bitmaps,
            owner_bitmap: None,
            verify_every: 0,
        };
        assert_eq!(
            decide(Some(parent), &offer),
            Decision::Use {
                bitmap: name.clone(),
                since_full_read: 3
            }
        );
        let reason = |p: Option<ParentCbt<'_>>, o: &Offer<'_>| match decide(p, o) {
            Decision::FullRead { reason } => reason,
            d => panic!("used {d:?}"),
        };
        assert!(reason(None, &offer).contains("new chain"));
        let no_rec = ParentCbt {
            record: None,
            ..parent
        };
        assert!(reason(Some(no_rec), &offer).contains("no changed-block tracking record"));
        let other = ParentCbt {
            point: PointId([6; 16]),
            ..parent
        };
        assert!(reason(Some(other), &offer).contains("copied from another point"));
        let o = Offer {
            identity: "file:/vm/b.qcow2",
            ..offer.clone()
        };
        assert!(reason(Some(parent), &o).contains("says nothing about another"));
        let o = Offer {
            disk_size: 2 << 30,
            ..offer.clone()
        };
        assert!(reason(Some(parent), &o).contains("bytes now"));
        let o = Offer {
            bitmaps: &[],
            ..offer.clone()
        };
        assert!(reason(Some(parent), &o).contains("not on the source"));
        let stale = [BitmapNow {
            inconsistent: true,
            ..bm(&name)
        }];
        let o = Offer {
            bitmaps: &stale,
            ..offer.clone()
        };
        assert!(reason(Some(parent), &o).contains("inconsistent"));
        let off = [BitmapNow {
            recording: false,
            ..bm(&name)
        }];
        let o = Offer {
            bitmaps: &off,
            ..offer.clone()
        };
        assert!(reason(Some(parent), &o).contains("not recording"));
        let regran = [BitmapNow {
            granularity: 1 << 20,
            ..bm(&name)
        }];
        let o = Offer {
            bitmaps: &regran,
            ..offer.clone()
        };
        assert!(reason(Some(parent), &o).contains("recreated"));
        let o = Offer {
            mode: Mode::Owner,
            owner_bitmap: Some(&name),
            ..offer.clone()
        };
        assert!(reason(Some(parent), &o).contains("tracking"));
        let o = Offer {
            verify_every: 3,
            ..offer.clone()
        };
        assert_eq!(
            decide(Some(parent), &o),
            Decision::Verify {
                bitmap: name.clone()
            }
        );
        let mut none = good.clone();
        none.bitmap.clear();
        let nb = none.encode();
        let p = ParentCbt {
            record: Some(&nb),
            ..parent
        };
        assert!(reason(Some(p), &offer).contains("no dirty bitmap"));
        // An owner's bitmap the export does not offer is named as such, every time.
        let mut owner = good.clone();
        owner.mode = Mode::Owner;
        let ob = owner.encode();
        let p = ParentCbt {
            record: Some(&ob),
            ..parent
        };
        let o = Offer {
            mode: Mode::Owner,
            owner_bitmap: Some("b9"),
            ..offer.clone()
        };
        let why = reason(Some(p), &o);
        assert!(
            why.contains("offers no bitmap \"b9\"") && why.contains("-B b9"),
            "{why}"
        );
    }

    #[test]
    fn runs_read_dirty_blocks_reference_clean_ones_and_catch_contradictions() {
        const M: u64 = 1 << 20;
        // 8 blocks of 1 MiB; data in blocks 0-5; the parent has blocks 0-4.
        let data = [(0, 6 * M)];
        let parent = [0, 1, 2, 3, 4];
        // 64 KiB dirty inside block 2 and at the start of block 5.
        let dirty = [(2 * M + 65536, 2 * M + 131072), (5 * M, 5 * M + 4096)];
        let runs = plan_runs(8 * M, M as u32, &data, &dirty, &parent).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    first: 0,
                    end: 2,
                    read: false
                },
                Run {
                    first: 2,
                    end: 3,
                    read: true
                },
                Run {
                    first: 3,
                    end: 5,
                    read: false
                },
                Run {
                    first: 5,
                    end: 6,
                    read: true
                },
            ]
        );
        // Block 4 clean in the bitmap but zero on the source: refused.
        let data = [(0, 4 * M)];
        let e = plan_runs(8 * M, M as u32, &data, &dirty, &parent).unwrap_err();
        assert!(e.contains("block 4"), "{e}");
        // A dirty block that is zero now becomes zero.
        let dirty = [(4 * M, 5 * M)];
        let runs = plan_runs(8 * M, M as u32, &data, &dirty, &parent).unwrap();
        assert_eq!(
            runs,
            vec![Run {
                first: 0,
                end: 4,
                read: false
            }]
        );
        assert_eq!(
            dirty_blocks(8 * M, M as u32, &[(M - 1, M + 1), (7 * M, 9 * M)]),
            vec![0, 1, 7]
        );
    }
}
