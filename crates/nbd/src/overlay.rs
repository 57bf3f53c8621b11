//! A copy-on-write overlay: a read-only [`BlockDevice`] made writable by a sparse local file
//! of the same size. Writes go to the file in 4 KiB clusters (a partial cluster is first
//! filled from the base), a bitmap says which clusters the file holds, and reads take each
//! cluster from the file or the base. The base is never written.
//!
//! The bitmap is kept beside the file (`FILE.map`, written by temp-fsync-rename-fsync-dir) at
//! every flush and when the overlay closes, so an export can be stopped and started again on
//! the same overlay. The map also names the base it was made over (the caller's `base_id`,
//! e.g. job and restore point): an overlay reopened over another base is refused, because its
//! clusters are changes to that other disk and would read back as a mix of two disks.
//!
//! Map layout (little-endian): magic `BWOVL2\0\0`, disk size (u64), base id length (u16),
//! the base id, then the bitmap words (u64). Maps of version 1 (magic `BWOVL1\0\0`, no base
//! id), made by earlier versions, still open over any base of their size and stay version 1:
//! which base they were made over is not known, so none is written into them.
//!
//! Only flushed writes are durable: after a crash, writes since the last flush may read back
//! as the base, as with any disk's write cache.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::proto::{EIO, STATE_HOLE, STATE_ZERO};
use crate::server::{BlockDevice, ReadError};

/// Size of one overlay cluster.
pub const CLUSTER: u64 = 4096;
const MAP_MAGIC: &[u8; 8] = b"BWOVL2\0\0";
const MAP_MAGIC_V1: &[u8; 8] = b"BWOVL1\0\0";
/// Longest base id a map records.
pub const MAX_BASE_ID: usize = 1024;

/// A writable view of `base` whose writes land in a local file.
pub struct Overlay {
    base: Arc<dyn BlockDevice>,
    file: File,
    map_path: PathBuf,
    bits: Mutex<Vec<u64>>,
    size: u64,
    /// The base the map names; `None` for a version-1 map (kept as version 1).
    base_id: Option<Vec<u8>>,
}

fn io_err(offset: u64, what: &str, e: std::io::Error) -> ReadError {
    ReadError {
        offset,
        len: 0,
        errno: EIO,
        message: format!("overlay: {what}: {e}"),
    }
}

impl Overlay {
    /// Opens (or creates, sparse) the overlay file `path` for `base`, named `base_id` (at most
    /// [`MAX_BASE_ID`] bytes). An existing overlay must have its bitmap beside it, the base's
    /// size, and have been made over the same `base_id` (a version-1 map, which records none,
    /// is taken to be).
    pub fn open(
        base: Arc<dyn BlockDevice>,
        path: &Path,
        base_id: &[u8],
    ) -> std::io::Result<Overlay> {
        if base_id.len() > MAX_BASE_ID {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("an overlay's base id is at most {MAX_BASE_ID} bytes"),
            ));
        }
        let size = base.size();
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".map");
        let map_path = path.with_file_name(name);
        let exists = path.exists();
        // 0600 from the start: an overlay holds what the base serves (plaintext of an
        // encrypted point) and what clients wrote.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        // One export at a time: two writing the same overlay would each rewrite its map on
        // stop, and the first to stop would lose the other's flushed writes.
        if !bulwark_sys::try_lock_exclusive(&file)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another writable export: stop that one first, or give a new overlay file",
                    path.display()
                ),
            ));
        }
        let words = size.div_ceil(CLUSTER).div_ceil(64) as usize;
        // A new overlay names its base; an existing one keeps what its map says.
        let mut recorded_id = Some(base_id.to_vec());
        let bits = if exists {
            let len = file.metadata()?.len();
            let bad = |why: String| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {why}; use a new overlay file", path.display()),
                )
            };
            if len != size {
                return Err(bad(format!(
                    "the overlay has {len} bytes but the disk {size}"
                )));
            }
            let m = std::fs::read(&map_path).map_err(|e| {
                bad(format!(
                    "its bitmap {} is unreadable: {e}",
                    map_path.display()
                ))
            })?;
            let recorded = parse_map(&m, size, words)
                .ok_or_else(|| bad(format!("its bitmap {} does not match", map_path.display())))?;
            recorded_id = recorded.base_id.map(<[u8]>::to_vec);
            if let Some(id) = recorded.base_id {
                if id != base_id {
                    return Err(bad(format!(
                        "it holds writes made over {}, not over {}: its clusters would read back \
                         as a mix of two disks",
                        String::from_utf8_lossy(id),
                        String::from_utf8_lossy(base_id)
                    )));
                }
            }
            recorded.bits
        } else {
            file.set_len(size)?;
            vec![0u64; words]
        };
        let o = Overlay {
            base,
            file,
            map_path,
            bits: Mutex::new(bits),
            size,
            base_id: recorded_id,
        };
        o.save_map()?;
        Ok(o)
    }

    fn save_map(&self) -> std::io::Result<()> {
        let bits = self.bits.lock().expect("overlay lock");
        let mut b = Vec::with_capacity(18 + MAX_BASE_ID + 8 * bits.len());
        match &self.base_id {
            Some(id) => {
                b.extend_from_slice(MAP_MAGIC);
                b.extend_from_slice(&self.size.to_le_bytes());
                b.extend_from_slice(&(id.len() as u16).to_le_bytes());
                b.extend_from_slice(id);
            }
            None => {
                b.extend_from_slice(MAP_MAGIC_V1);
                b.extend_from_slice(&self.size.to_le_bytes());
            }
        }
        for w in bits.iter() {
            b.extend_from_slice(&w.to_le_bytes());
        }
        drop(bits);
        let mut tmp_name = self.map_path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = self.map_path.with_file_name(tmp_name);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&b)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.map_path)?;
        let dir = self.map_path.parent().filter(|d| !d.as_os_str().is_empty());
        File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
    }

    fn has(bits: &[u64], c: u64) -> bool {
        bits[(c / 64) as usize] & (1 << (c % 64)) != 0
    }

    /// Clusters the overlay holds (for tests and reports).
    pub fn clusters_written(&self) -> u64 {
        let bits = self.bits.lock().expect("overlay lock");
        bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// A map read back: the base it names (none in version 1) and its bitmap words.
struct RecordedMap<'a> {
    base_id: Option<&'a [u8]>,
    bits: Vec<u64>,
}

/// Decodes a map of either version for a disk of `size` bytes and `words` bitmap words;
/// `None` when it is not one.
fn parse_map(m: &[u8], size: u64, words: usize) -> Option<RecordedMap<'_>> {
    let (magic, rest) = m.split_at_checked(8)?;
    let (recorded_size, rest) = rest.split_at_checked(8)?;
    if recorded_size != size.to_le_bytes() {
        return None;
    }
    let (base_id, rest) = if magic == MAP_MAGIC {
        let (len, rest) = rest.split_at_checked(2)?;
        let len = u16::from_le_bytes(len.try_into().ok()?) as usize;
        if len > MAX_BASE_ID {
            return None;
        }
        let (id, rest) = rest.split_at_checked(len)?;
        (Some(id), rest)
    } else if magic == MAP_MAGIC_V1 {
        (None, rest)
    } else {
        return None;
    };
    if rest.len() != 8 * words {
        return None;
    }
    let bits = rest
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
        .collect();
    Some(RecordedMap { base_id, bits })
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = self.file.sync_data();
        let _ = self.save_map();
    }
}

impl BlockDevice for Overlay {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let bits = self.bits.lock().expect("overlay lock").clone();
        let end = offset + buf.len() as u64;
        let mut at = offset;
        while at < end {
            let mine = Self::has(&bits, at / CLUSTER);
            let mut run_end = ((at / CLUSTER) + 1) * CLUSTER;
            while run_end < end && Self::has(&bits, run_end / CLUSTER) == mine {
                run_end += CLUSTER;
            }
            let run_end = run_end.min(end);
            let dst = &mut buf[(at - offset) as usize..(run_end - offset) as usize];
            if mine {
                self.file
                    .read_exact_at(dst, at)
                    .map_err(|e| io_err(at, "reading", e))?;
            } else {
                self.base.read_at(at, dst)?;
            }
            at = run_end;
        }
        Ok(())
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, u32)>, ReadError> {
        let bits = self.bits.lock().expect("overlay lock").clone();
        let end = offset + len;
        let mut out: Vec<(u64, u32)> = Vec::new();
        let mut at = offset;
        while at < end && out.len() < 4096 {
            let mine = Self::has(&bits, at / CLUSTER);
            let mut run_end = ((at / CLUSTER) + 1) * CLUSTER;
            while run_end < end && Self::has(&bits, run_end / CLUSTER) == mine {
                run_end += CLUSTER;
            }
            let run_end = run_end.min(end);
            if mine {
                out.push((run_end - at, 0));
            } else {
                let mut covered = 0;
                for (l, f) in self.base.extents(at, run_end - at)? {
                    out.push((l, f & (STATE_HOLE | STATE_ZERO)));
                    covered += l;
                }
                if covered < run_end - at {
                    // The base answered for less: stop here, the client asks again.
                    break;
                }
            }
            at = run_end;
        }
        Ok(out)
    }

    fn preferred_block_size(&self) -> u32 {
        CLUSTER as u32
    }

    fn writable(&self) -> bool {
        true
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), ReadError> {
        // One writer at a time: a partial cluster's read-modify-write must not interleave.
        let mut bits = self.bits.lock().expect("overlay lock");
        let end = offset + data.len() as u64;
        let mut at = offset;
        while at < end {
            let c = at / CLUSTER;
            let cstart = c * CLUSTER;
            let cend = (cstart + CLUSTER).min(self.size);
            let n = cend.min(end) - at;
            let src = &data[(at - offset) as usize..(at - offset + n) as usize];
            if !Self::has(&bits, c) && (at != cstart || at + n != cend) {
                // First write to a cluster that is not written whole: start from the base.
                let mut whole = vec![0u8; (cend - cstart) as usize];
                self.base.read_at(cstart, &mut whole)?;
                whole[(at - cstart) as usize..(at - cstart + n) as usize].copy_from_slice(src);
                self.file
                    .write_all_at(&whole, cstart)
                    .map_err(|e| io_err(cstart, "writing", e))?;
            } else {
                self.file
                    .write_all_at(src, at)
                    .map_err(|e| io_err(at, "writing", e))?;
            }
            bits[(c / 64) as usize] |= 1 << (c % 64);
            at += n;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), ReadError> {
        self.file
            .sync_data()
            .map_err(|e| io_err(0, "flushing", e))?;
        self.save_map()
            .map_err(|e| io_err(0, "saving the bitmap", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Base(Vec<u8>);
    impl BlockDevice for Base {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, o: u64, b: &mut [u8]) -> Result<(), ReadError> {
            b.copy_from_slice(&self.0[o as usize..o as usize + b.len()]);
            Ok(())
        }
        fn extents(&self, _o: u64, l: u64) -> Result<Vec<(u64, u32)>, ReadError> {
            Ok(vec![(l, 0)])
        }
    }

    #[test]
    fn writes_land_in_the_overlay_reads_merge_and_the_bitmap_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let base: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let dev: Arc<dyn BlockDevice> = Arc::new(Base(base.clone()));
        let path = dir.path().join("ov");
        let mut want = base.clone();
        {
            let o = Overlay::open(dev.clone(), &path, b"vm/1").unwrap();
            for (off, len, v) in [(100u64, 10usize, 7u8), (8192, 4096, 9), (39_990, 10, 5)] {
                o.write_at(off, &vec![v; len]).unwrap();
                want[off as usize..off as usize + len].fill(v);
            }
            let mut got = vec![0u8; base.len()];
            o.read_at(0, &mut got).unwrap();
            assert_eq!(got, want);
            assert_eq!(o.clusters_written(), 3);
            o.flush().unwrap();
        }
        let o = Overlay::open(dev, &path, b"vm/1").unwrap();
        let mut got = vec![0u8; base.len()];
        o.read_at(0, &mut got).unwrap();
        assert_eq!(got, want, "the overlay reads the same after a reopen");
    }

    /// A folder, an 8 KiB base of ones, and an overlay `ov` over it (named `base_id`) holding
    /// a flushed write of 16 nines at offset 0.
    fn written_overlay(
        base_id: &[u8],
    ) -> (tempfile::TempDir, Arc<dyn BlockDevice>, PathBuf, Overlay) {
        let dir = tempfile::tempdir().unwrap();
        let dev: Arc<dyn BlockDevice> = Arc::new(Base(vec![1u8; 8192]));
        let path = dir.path().join("ov");
        let o = Overlay::open(dev.clone(), &path, base_id).unwrap();
        o.write_at(0, &[9u8; 16]).unwrap();
        o.flush().unwrap();
        (dir, dev, path, o)
    }

    #[test]
    fn an_overlay_in_use_by_one_export_is_refused_to_a_second_until_the_first_stops() {
        let (_dir, dev, path, first) = written_overlay(b"vm/1");
        let e = Overlay::open(dev.clone(), &path, b"vm/1")
            .err()
            .expect("a second writer");
        assert!(
            e.to_string().contains("in use by another writable export"),
            "{e}"
        );
        drop(first);
        let again = Overlay::open(dev, &path, b"vm/1").unwrap();
        let mut b = [0u8; 16];
        again.read_at(0, &mut b).unwrap();
        assert_eq!(b, [9u8; 16], "the first export's flushed write survives");
    }

    #[test]
    fn an_overlay_made_over_one_point_is_refused_over_another_and_a_version_1_map_still_opens() {
        let (dir, dev, path, first) = written_overlay(b"vm/aaaa");
        drop(first);
        let e = Overlay::open(dev.clone(), &path, b"vm/bbbb")
            .err()
            .expect("another base");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            e.to_string()
                .contains("made over vm/aaaa, not over vm/bbbb"),
            "{e}"
        );
        // The refusal changed nothing: the right base still reads the write.
        let again = Overlay::open(dev.clone(), &path, b"vm/aaaa").unwrap();
        let mut b = [0u8; 16];
        again.read_at(0, &mut b).unwrap();
        assert_eq!(b, [9u8; 16]);
        drop(again);

        // A version-1 map (no base id), as an older bulwark wrote it: one cluster written.
        let map = dir.path().join("ov.map");
        let mut v1 = MAP_MAGIC_V1.to_vec();
        v1.extend_from_slice(&8192u64.to_le_bytes());
        v1.extend_from_slice(&1u64.to_le_bytes());
        std::fs::write(&map, &v1).unwrap();
        let old = Overlay::open(dev.clone(), &path, b"vm/cccc").unwrap();
        old.read_at(0, &mut b).unwrap();
        assert_eq!(b, [9u8; 16], "a version-1 overlay keeps its writes");
        drop(old);
        assert_eq!(
            std::fs::read(&map).unwrap(),
            v1,
            "it stays version 1: which point it was made over is not known"
        );
        assert!(Overlay::open(dev.clone(), &path, b"vm/dddd").is_ok());
        // Damaged version-2 maps are refused, never read past their end.
        let m = {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&map);
            drop(Overlay::open(dev.clone(), &path, b"vm/cccc").unwrap());
            std::fs::read(&map).unwrap()
        };
        assert_eq!(&m[..8], MAP_MAGIC);
        for cut in [0, 7, 15, 17, m.len() - 1] {
            std::fs::write(&map, &m[..cut]).unwrap();
            assert!(
                Overlay::open(dev.clone(), &path, b"vm/cccc").is_err(),
                "{cut}"
            );
        }
        let mut long = m.clone();
        long[16..18].copy_from_slice(&u16::MAX.to_le_bytes());
        std::fs::write(&map, &long).unwrap();
        assert!(Overlay::open(dev, &path, b"vm/cccc").is_err());
    }
}
