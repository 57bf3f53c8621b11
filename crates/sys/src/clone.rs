//! Block cloning (`FICLONERANGE`) and extent maps (`FS_IOC_FIEMAP`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::cvt;

/// Extent flag: the last extent of the file.
pub const FIEMAP_EXTENT_LAST: u32 = 0x0001;
/// Extent flag: the location is not known yet.
pub const FIEMAP_EXTENT_UNKNOWN: u32 = 0x0002;
/// Extent flag: allocated but not written (reads as zeros).
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x0800;
/// Extent flag: the extent is shared with another file (reflink).
pub const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

const FIEMAP_FLAG_SYNC: u32 = 0x0001;
const BATCH: usize = 128;

/// Shares `len` bytes of `src` at `src_off` into `dst` at `dst_off` without copying data.
/// Offsets and length must be multiples of the filesystem block size (a `len` reaching the
/// end of `src` may be unaligned). Fails with `EOPNOTSUPP` or `EXDEV` where unsupported.
pub fn ficlone_range(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
) -> io::Result<()> {
    let arg = libc::file_clone_range {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset: src_off,
        src_length: len,
        dest_offset: dst_off,
    };
    // SAFETY: both fds are borrowed for the call; the kernel reads `arg`, a live struct of
    // the layout FICLONERANGE expects.
    cvt(unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONERANGE, &arg) })?;
    Ok(())
}

/// One extent of a file: `length` bytes at `logical` in the file, `physical` on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

impl Extent {
    /// True when the extent is shared with another file.
    pub fn is_shared(&self) -> bool {
        self.flags & FIEMAP_EXTENT_SHARED != 0
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
    fm_extents: [FiemapExtent; BATCH],
}

const _: () = assert!(std::mem::size_of::<FiemapExtent>() == 56);
const _: () = assert!(std::mem::offset_of!(Fiemap, fm_extents) == 32);
// _IOWR('f', 11, struct fiemap), whose header is 32 bytes.
const FS_IOC_FIEMAP: libc::Ioctl = 0xC020_660B;

/// Reads the whole extent map of `file` (after syncing its data), in batches of 128.
pub fn fiemap(file: &File) -> io::Result<Vec<Extent>> {
    let zero = FiemapExtent {
        fe_logical: 0,
        fe_physical: 0,
        fe_length: 0,
        fe_reserved64: [0; 2],
        fe_flags: 0,
        fe_reserved: [0; 3],
    };
    let mut buf = Box::new(Fiemap {
        fm_start: 0,
        fm_length: 0,
        fm_flags: 0,
        fm_mapped_extents: 0,
        fm_extent_count: 0,
        fm_reserved: 0,
        fm_extents: [zero; BATCH],
    });
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        buf.fm_start = start;
        buf.fm_length = u64::MAX - start;
        buf.fm_flags = FIEMAP_FLAG_SYNC;
        buf.fm_mapped_extents = 0;
        buf.fm_extent_count = BATCH as u32;
        // SAFETY: the fd is borrowed; `buf` is a live, correctly laid out fiemap with room
        // for `fm_extent_count` extents, which bounds what the kernel writes.
        cvt(unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut *buf as *mut Fiemap) })?;
        let n = (buf.fm_mapped_extents as usize).min(BATCH);
        if n == 0 {
            break;
        }
        let mut last = false;
        for e in &buf.fm_extents[..n] {
            out.push(Extent {
                logical: e.fe_logical,
                physical: e.fe_physical,
                length: e.fe_length,
                flags: e.fe_flags,
            });
            last |= e.fe_flags & FIEMAP_EXTENT_LAST != 0;
        }
        let e = &buf.fm_extents[n - 1];
        let next = e.fe_logical.saturating_add(e.fe_length);
        if last || next <= start {
            break;
        }
        start = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn data_file(dir: &std::path::Path, name: &str, blocks: usize) -> File {
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(name))
            .unwrap();
        for i in 0..blocks {
            f.write_all(&[i as u8 + 1; 4096]).unwrap();
        }
        f.sync_all().unwrap();
        f
    }

    #[test]
    fn fiemap_lists_written_extents() {
        let t = tempfile::tempdir().unwrap();
        let f = data_file(t.path(), "a", 64);
        let ex = match fiemap(&f) {
            Ok(ex) => ex,
            Err(e) => {
                eprintln!("SKIP fiemap_lists_written_extents: FIEMAP unsupported here: {e}");
                return;
            }
        };
        let total: u64 = ex.iter().map(|e| e.length).sum();
        assert!(total >= 64 * 4096, "extents cover {total} bytes: {ex:?}");
        assert!(ex.last().unwrap().flags & FIEMAP_EXTENT_LAST != 0);
        assert!(ex.iter().all(|e| !e.is_shared()));
    }

    #[test]
    fn clone_range_shares_blocks() {
        let dir = std::env::var_os("BULWARK_REFLINK_DIR").map(std::path::PathBuf::from);
        let t = match &dir {
            Some(d) => tempfile::tempdir_in(d).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let src = data_file(t.path(), "src", 16);
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(t.path().join("dst"))
            .unwrap();
        match ficlone_range(&src, 4096, &dst, 0, 8 * 4096) {
            Ok(()) => {}
            Err(e) if crate::is_unsupported(&e) => {
                eprintln!(
                    "SKIP clone_range_shares_blocks: no reflink on this filesystem ({e}); \
                     set BULWARK_REFLINK_DIR to a folder on XFS with reflink=1"
                );
                return;
            }
            Err(e) => panic!("FICLONERANGE failed: {e}"),
        }
        let mut b = vec![0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&dst, &mut b, 0).unwrap();
        assert!(b.iter().all(|&x| x == 2));
        let ex = fiemap(&dst).unwrap();
        assert!(
            ex.iter().any(|e| e.is_shared()),
            "clone is not shared: {ex:?}"
        );
    }
}
