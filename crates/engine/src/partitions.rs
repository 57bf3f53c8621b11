//! Finding the partitions of a disk image (GPT and MBR, with MBR logical partitions) and the
//! filesystem in each, for file-level restore. Everything read from the disk is bounded and
//! checked (the GPT header's and entries' CRC32, every range inside the disk) before use: a
//! restore point is the backup of an untrusted machine.

/// Bytes per sector assumed by MBR, and tried first for GPT (then 4096).
pub const SECTOR: u64 = 512;
/// At most this many GPT entries are read (the usual table has 128).
const MAX_GPT_ENTRIES: u32 = 1024;
/// At most this many logical partitions are followed in an extended partition.
const MAX_LOGICAL: usize = 128;

/// One partition: its number as Linux names it (1-based), where it lies, what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub offset: u64,
    pub size: u64,
    /// The filesystem found in it, if one this crate recognises.
    pub fs: Option<FsType>,
    /// "gpt" or "mbr".
    pub table: &'static str,
}

/// A filesystem that can be mounted read-only without writing to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// ext2, ext3 or ext4 (mounted as ext4 with `ro,noload`).
    Ext4,
    /// XFS (`ro,norecovery`).
    Xfs,
    /// FAT12/16/32 (`ro`).
    Vfat,
}

impl FsType {
    /// The `mount -t` type.
    pub fn mount_type(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Vfat => "vfat",
        }
    }
    /// Mount options that never write to the device (no journal replay, no log recovery),
    /// and that honour nothing the backed-up machine put there: no setuid or setgid bits, no
    /// device nodes, no execution (a compromised guest's setuid shell stays a file).
    pub fn mount_options(self) -> &'static str {
        match self {
            FsType::Ext4 => "ro,noload,nosuid,nodev,noexec",
            FsType::Xfs => "ro,norecovery,nosuid,nodev,noexec",
            FsType::Vfat => "ro,nosuid,nodev,noexec",
        }
    }
}

/// Reads at an offset of the disk.
pub type ReadAt<'a> = dyn Fn(u64, &mut [u8]) -> std::io::Result<()> + 'a;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// CRC-32 (IEEE 802.3, reflected), as GPT uses it.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Recognises the filesystem that starts at `offset` (`size` bytes).
pub fn detect_fs(read: &ReadAt<'_>, offset: u64, size: u64) -> Option<FsType> {
    if size < 4096 {
        return None;
    }
    let mut b = [0u8; 2048];
    read(offset, &mut b).ok()?;
    if &b[0..4] == b"XFSB" {
        return Some(FsType::Xfs);
    }
    if b[1080] == 0x53 && b[1081] == 0xef {
        return Some(FsType::Ext4);
    }
    let boot_sig = b[510] == 0x55 && b[511] == 0xaa;
    if boot_sig && (&b[54..59] == b"FAT12" || &b[54..59] == b"FAT16" || &b[82..87] == b"FAT32") {
        return Some(FsType::Vfat);
    }
    None
}

/// At most this many partitions of one disk are offered (and mounted).
pub const MAX_PARTITIONS: usize = 128;

/// The partitions in table order, leaving out each one that overlaps one kept before it and
/// any beyond [`MAX_PARTITIONS`]: a hostile table of many entries over the same extent
/// would otherwise cost a loop device and a mount each.
fn no_overlaps(parts: Vec<Partition>) -> Vec<Partition> {
    let mut kept: Vec<Partition> = Vec::new();
    for p in parts {
        if kept.len() == MAX_PARTITIONS {
            break;
        }
        let overlaps = kept
            .iter()
            .any(|k| p.offset < k.offset + k.size && k.offset < p.offset + p.size);
        if !overlaps {
            kept.push(p);
        }
    }
    kept
}

/// The partitions of a disk of `disk_size` bytes: GPT when the MBR is protective (or absent
/// and a GPT header is found), else the MBR's primary and logical partitions. Empty for a
/// disk without a partition table. Partitions reaching outside the disk are left out.
pub fn find(read: &ReadAt<'_>, disk_size: u64) -> Vec<Partition> {
    let mut mbr = [0u8; 512];
    if disk_size < 2 * SECTOR || read(0, &mut mbr).is_err() {
        return Vec::new();
    }
    let signed = mbr[510] == 0x55 && mbr[511] == 0xaa;
    let protective = signed && (0..4).any(|i| mbr[446 + 16 * i + 4] == 0xee);
    let mut parts = if protective || !signed {
        gpt(read, disk_size).unwrap_or_default()
    } else {
        Vec::new()
    };
    if parts.is_empty() && signed && !protective {
        parts = mbr_parts(read, &mbr, disk_size);
    }
    let mut parts = no_overlaps(parts);
    for p in &mut parts {
        p.fs = detect_fs(read, p.offset, p.size);
    }
    parts
}

fn gpt(read: &ReadAt<'_>, disk_size: u64) -> Option<Vec<Partition>> {
    for sector in [SECTOR, 4096] {
        let mut h = [0u8; 512];
        if sector * 2 > disk_size || read(sector, &mut h).is_err() || &h[0..8] != b"EFI PART" {
            continue;
        }
        let hsize = le32(&h, 12) as usize;
        if !(92..=512).contains(&hsize) {
            continue;
        }
        let mut hc = h[..hsize].to_vec();
        hc[16..20].fill(0);
        if crc32(&hc) != le32(&h, 16) {
            continue;
        }
        let entries_lba = le64(&h, 72);
        let n = le32(&h, 80);
        let esize = le32(&h, 84);
        if n > MAX_GPT_ENTRIES || !(128..=4096).contains(&esize) || !esize.is_multiple_of(8) {
            continue;
        }
        let len = u64::from(n) * u64::from(esize);
        let start = entries_lba.checked_mul(sector)?;
        if start.checked_add(len).is_none_or(|e| e > disk_size) {
            continue;
        }
        let mut table = vec![0u8; len as usize];
        if read(start, &mut table).is_err() || crc32(&table) != le32(&h, 88) {
            continue;
        }
        let mut out = Vec::new();
        for (i, e) in table.chunks_exact(esize as usize).enumerate() {
            if e[0..16].iter().all(|&b| b == 0) {
                continue;
            }
            let (first, last) = (le64(e, 32), le64(e, 40));
            let (Some(off), Some(end)) = (
                first.checked_mul(sector),
                last.checked_add(1).and_then(|l| l.checked_mul(sector)),
            ) else {
                continue;
            };
            if first == 0 || end <= off || end > disk_size {
                continue;
            }
            out.push(Partition {
                number: i as u32 + 1,
                offset: off,
                size: end - off,
                fs: None,
                table: "gpt",
            });
        }
        return Some(out);
    }
    None
}

fn mbr_parts(read: &ReadAt<'_>, mbr: &[u8; 512], disk_size: u64) -> Vec<Partition> {
    let mut out = Vec::new();
    let entry = |b: &[u8], i: usize| {
        let e = &b[446 + 16 * i..462 + 16 * i];
        (e[4], u64::from(le32(e, 8)), u64::from(le32(e, 12)))
    };
    let mut extended = None;
    for i in 0..4 {
        let (kind, start, count) = entry(mbr, i);
        if kind == 0 || count == 0 {
            continue;
        }
        let (off, size) = (start * SECTOR, count * SECTOR);
        if off == 0 || off + size > disk_size {
            continue;
        }
        if matches!(kind, 0x05 | 0x0f | 0x85) {
            extended.get_or_insert(start);
            continue;
        }
        out.push(Partition {
            number: i as u32 + 1,
            offset: off,
            size,
            fs: None,
            table: "mbr",
        });
    }
    // Logical partitions: a chain of EBRs, each relative to the extended partition's start.
    if let Some(ext) = extended {
        let mut ebr_lba = ext;
        let mut number = 5;
        let mut seen = std::collections::HashSet::new();
        while out.len() < MAX_LOGICAL && seen.insert(ebr_lba) {
            let mut b = [0u8; 512];
            if ebr_lba * SECTOR + SECTOR > disk_size
                || read(ebr_lba * SECTOR, &mut b).is_err()
                || b[510] != 0x55
                || b[511] != 0xaa
            {
                break;
            }
            let (kind, start, count) = entry(&b, 0);
            let off = (ebr_lba + start) * SECTOR;
            if kind != 0 && count != 0 && start != 0 && off + count * SECTOR <= disk_size {
                out.push(Partition {
                    number,
                    offset: off,
                    size: count * SECTOR,
                    fs: None,
                    table: "mbr",
                });
                number += 1;
            }
            let (next_kind, next, _) = entry(&b, 1);
            if next_kind == 0 || next == 0 {
                break;
            }
            ebr_lba = ext + next;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(d: &[u8]) -> impl Fn(u64, &mut [u8]) -> std::io::Result<()> + '_ {
        move |off, buf| {
            let s = off as usize;
            let e = s + buf.len();
            if e > d.len() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.copy_from_slice(&d[s..e]);
            Ok(())
        }
    }

    fn mbr_entry(d: &mut [u8], i: usize, kind: u8, start: u32, count: u32) {
        let e = &mut d[446 + 16 * i..462 + 16 * i];
        e[4] = kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&count.to_le_bytes());
    }

    /// A blank disk of `len` bytes with the MBR boot signature.
    fn mbr_disk(len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len];
        boot_signature(&mut d, 0);
        d
    }

    /// The 0x55 0xaa signature of the MBR or EBR sector at byte `at`.
    fn boot_signature(d: &mut [u8], at: usize) {
        d[at + 510] = 0x55;
        d[at + 511] = 0xaa;
    }

    /// An EBR at byte `at`: its logical partition and the link to the next EBR, each
    /// `(kind, start, count)` with `start` in sectors relative to the extended partition.
    fn ebr(d: &mut [u8], at: usize, logical: (u8, u32, u32), next: (u8, u32, u32)) {
        boot_signature(d, at);
        let sector = &mut d[at..at + 512];
        mbr_entry(sector, 0, logical.0, logical.1, logical.2);
        mbr_entry(sector, 1, next.0, next.1, next.2);
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn mbr_primary_and_logical_partitions_are_found_and_bad_ones_left_out() {
        let mut d = mbr_disk(8 << 20);
        mbr_entry(&mut d, 0, 0x83, 2048, 4096);
        mbr_entry(&mut d, 1, 0x83, 1, u32::MAX); // past the end: left out
        mbr_entry(&mut d, 2, 0x05, 8192, 4096);
        // EBR at 8192: a logical at +2048, next EBR at +3072 (relative to the extended).
        ebr(&mut d, 8192 * 512, (0x83, 2048, 512), (0x05, 3072, 1024));
        // A loop back to the first EBR must not loop forever.
        ebr(
            &mut d,
            (8192 + 3072) * 512,
            (0x83, 64, 512),
            (0x05, 0, 1024),
        );
        // An ext4 magic in partition 1.
        d[2048 * 512 + 1080] = 0x53;
        d[2048 * 512 + 1081] = 0xef;
        let p = find(&reader(&d), d.len() as u64);
        let got: Vec<_> = p
            .iter()
            .map(|p| (p.number, p.offset / 512, p.size / 512))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 2048, 4096),
                (5, 8192 + 2048, 512),
                (6, 8192 + 3072 + 64, 512)
            ]
        );
        assert_eq!(p[0].fs, Some(FsType::Ext4));
        assert_eq!(p[1].fs, None);
    }

    #[test]
    fn overlapping_partitions_are_offered_once_and_at_most_max_partitions() {
        let mut d = mbr_disk(8 << 20);
        mbr_entry(&mut d, 0, 0x83, 2048, 4096);
        mbr_entry(&mut d, 1, 0x83, 4096, 4096); // overlaps the first: left out
        mbr_entry(&mut d, 2, 0x83, 2048, 4096); // the same extent again: left out
        mbr_entry(&mut d, 3, 0x83, 6144, 2048); // right after the first: kept
        let got: Vec<_> = find(&reader(&d), d.len() as u64)
            .iter()
            .map(|p| p.number)
            .collect();
        assert_eq!(got, vec![1, 4]);
        let many = (0..300)
            .map(|i| Partition {
                number: i + 1,
                offset: u64::from(i) * 512,
                size: 512,
                fs: None,
                table: "gpt",
            })
            .collect();
        assert_eq!(no_overlaps(many).len(), MAX_PARTITIONS);
    }

    #[test]
    fn a_gpt_with_a_bad_crc_is_not_trusted() {
        let mut d = mbr_disk(4 << 20);
        mbr_entry(&mut d, 0, 0xee, 1, 8191);
        let h = 512;
        d[h..h + 8].copy_from_slice(b"EFI PART");
        d[h + 12..h + 16].copy_from_slice(&92u32.to_le_bytes());
        d[h + 72..h + 80].copy_from_slice(&2u64.to_le_bytes());
        d[h + 80..h + 84].copy_from_slice(&4u32.to_le_bytes());
        d[h + 84..h + 88].copy_from_slice(&128u32.to_le_bytes());
        let t = 1024;
        d[t] = 1; // a type GUID
        d[t + 32..t + 40].copy_from_slice(&2048u64.to_le_bytes());
        d[t + 40..t + 48].copy_from_slice(&4095u64.to_le_bytes());
        let tcrc = crc32(&d[t..t + 512]);
        d[h + 88..h + 92].copy_from_slice(&tcrc.to_le_bytes());
        let hcrc = crc32(&d[h..h + 92]);
        d[h + 16..h + 20].copy_from_slice(&hcrc.to_le_bytes());
        let p = find(&reader(&d), d.len() as u64);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].number, p[0].offset, p[0].size),
            (1, 2048 * 512, 2048 * 512)
        );
        assert_eq!(p[0].table, "gpt");
        d[t + 40] ^= 1;
        assert!(find(&reader(&d), d.len() as u64).is_empty());
    }
}
