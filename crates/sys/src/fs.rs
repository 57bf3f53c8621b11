//! Page-cache advice, sparse-file seeks, filesystem statistics and device numbers.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::cvt;

/// What `posix_fadvise` is told about the coming access to a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// Read front to back: the kernel reads ahead more.
    Sequential,
    /// The range is needed soon: start reading it now.
    WillNeed,
    /// The range is not needed again: start writeback and drop it from the cache.
    DontNeed,
}

/// `posix_fadvise(file, offset, len, advice)`; `len` 0 means "to the end of the file".
pub fn fadvise(file: &impl AsFd, offset: u64, len: u64, advice: Advice) -> io::Result<()> {
    let advice = match advice {
        Advice::Sequential => libc::POSIX_FADV_SEQUENTIAL,
        Advice::WillNeed => libc::POSIX_FADV_WILLNEED,
        Advice::DontNeed => libc::POSIX_FADV_DONTNEED,
    };
    // SAFETY: integer arguments only; the fd is borrowed for the call.
    let r =
        unsafe { libc::posix_fadvise(file.as_fd().as_raw_fd(), off(offset)?, off(len)?, advice) };
    // posix_fadvise returns the error number instead of setting errno.
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Asks for the parts of `ranges` (sorted, disjoint byte ranges: what will be read) within
/// `[from, to)` with [`Advice::WillNeed`], never for the holes between them: a filesystem
/// fills a hole that is asked for with zeroed page-cache pages that nobody reads. `next` is
/// the first range that may still matter; it moves past the ranges that end at or before
/// `from`, so windows that move forward look at each range about once. Advice only: errors
/// are ignored.
pub fn will_need_within(
    file: &impl AsFd,
    ranges: &[(u64, u64)],
    next: &mut usize,
    from: u64,
    to: u64,
) {
    for (a, b) in parts_within(ranges, next, from, to) {
        let _ = fadvise(file, a, b - a, Advice::WillNeed);
    }
}

/// The parts of `ranges` (sorted, disjoint byte ranges) within `[from, to)`, in order. `next`
/// is the first range that may still matter; it moves past the ranges that end at or before
/// `from` (see [`will_need_within`]).
pub fn parts_within<'r>(
    ranges: &'r [(u64, u64)],
    next: &mut usize,
    from: u64,
    to: u64,
) -> impl Iterator<Item = (u64, u64)> + 'r {
    while ranges.get(*next).is_some_and(|&(_, end)| end <= from) {
        *next += 1;
    }
    ranges[*next..]
        .iter()
        .take_while(move |&&(start, _)| start < to)
        .map(move |&(start, end)| (start.max(from), end.min(to)))
        .filter(|(a, b)| b > a)
}

/// The offset of the first data byte at or after `from` (`SEEK_DATA`), or `None` when only a
/// hole follows (`ENXIO`). Moves the file position there.
pub fn seek_data(file: &impl AsFd, from: u64) -> io::Result<Option<u64>> {
    match lseek(file, from, libc::SEEK_DATA) {
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        r => r.map(Some),
    }
}

/// The offset of the first hole at or after `from` (`SEEK_HOLE`); the end of the file counts
/// as a hole. Moves the file position there.
pub fn seek_hole(file: &impl AsFd, from: u64) -> io::Result<u64> {
    lseek(file, from, libc::SEEK_HOLE)
}

fn lseek(file: &impl AsFd, from: u64, whence: libc::c_int) -> io::Result<u64> {
    // SAFETY: integer arguments only; the fd is borrowed for the call.
    let r = unsafe { libc::lseek(file.as_fd().as_raw_fd(), off(from)?, whence) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

fn off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Sizes of a mounted filesystem, in units of `frsize` bytes (`statvfs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    /// The fragment size: the unit of `blocks` and `blocks_available`.
    pub frsize: u64,
    /// Size of the filesystem.
    pub blocks: u64,
    /// Free blocks an unprivileged user may take.
    pub blocks_available: u64,
}

/// `statvfs(path)`: the sizes of the filesystem holding `path`.
pub fn statvfs(path: &Path) -> io::Result<FsStats> {
    let c = cpath(path)?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` is a live statvfs.
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(FsStats {
        frsize: st.f_frsize as u64,
        blocks: st.f_blocks as u64,
        blocks_available: st.f_bavail as u64,
    })
}

/// The `statfs` magic number (`f_type`) of the filesystem holding `path`, e.g. `0x58465342`
/// for XFS.
pub fn filesystem_type(path: &Path) -> io::Result<u64> {
    let c = cpath(path)?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` is a live statfs.
    cvt(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    Ok(st.f_type as u64)
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// The major number of a device number (`st_rdev`), as Linux encodes it.
pub fn major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}

/// The minor number of a device number (`st_rdev`), as Linux encodes it.
pub fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn device_numbers_match_libc() {
        for (ma, mi) in [(0u32, 0u32), (8, 1), (259, 7), (4095, 1_048_575), (7, 300)] {
            let dev = libc::makedev(ma, mi);
            assert_eq!((major(dev), minor(dev)), (ma, mi));
        }
    }

    #[test]
    fn seeks_find_data_and_the_end() {
        let t = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(t.path().join("f")).unwrap();
        f.write_all_at(b"x", 1 << 20).unwrap();
        let start = seek_data(&f, 0).unwrap().unwrap();
        assert!(start <= 1 << 20);
        assert_eq!(seek_hole(&f, 1 << 20).unwrap(), (1 << 20) + 1);
        assert_eq!(seek_data(&f, (1 << 20) + 1).unwrap(), None);
        fadvise(&f, 0, 0, Advice::DontNeed).unwrap();
    }

    #[test]
    fn statistics_of_the_temporary_folder() {
        let t = tempfile::tempdir().unwrap();
        let st = statvfs(t.path()).unwrap();
        assert!(st.frsize > 0 && st.blocks >= st.blocks_available);
        assert!(filesystem_type(t.path()).unwrap() != 0);
        assert!(statvfs(&t.path().join("missing")).is_err());
    }

    #[test]
    fn the_prefetch_asks_only_for_what_will_be_read() {
        let reads = [(0, 10), (20, 30), (40, 100)];
        let mut next = 0;
        let got: Vec<_> = parts_within(&reads, &mut next, 5, 45).collect();
        assert_eq!(
            got,
            [(5, 10), (20, 30), (40, 45)],
            "holes 10..20 and 30..40 left out"
        );
        assert_eq!(next, 0);
        let got: Vec<_> = parts_within(&reads, &mut next, 45, 60).collect();
        assert_eq!(got, [(45, 60)]);
        assert_eq!(next, 2, "ranges left behind are skipped from now on");
        let got: Vec<_> = parts_within(&reads, &mut next, 100, 200).collect();
        assert!(got.is_empty(), "{got:?}");
        let got: Vec<_> = parts_within(&reads, &mut 0, 10, 20).collect();
        assert!(
            got.is_empty(),
            "a window on a hole asks for nothing: {got:?}"
        );
        assert!(parts_within(&[], &mut 0, 0, 10).next().is_none());
    }
}
