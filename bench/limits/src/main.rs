//! `bulwark-limits IMAGE [ZSTD_LEVEL] [--write-dir DIR]`: what this machine can do at best,
//! measured on IMAGE's data. Prints one JSON object:
//! - `extents_read_*`: reading IMAGE's data extents (`SEEK_DATA`/`SEEK_HOLE`) cold, once, in
//!   order, with the data asked for 32 MiB ahead: the least a full backup must do. The page
//!   cache is dropped first when root.
//! - `write_*`: writing the same number of bytes at the same offsets into a new file in DIR
//!   (default: IMAGE's folder), and `fsync`: the least a restore must do. Measured with the
//!   page cache, written pages dropped every 256 MiB as a restore does (`write_buffered_secs`),
//!   and with direct I/O (`write_direct_secs`);
//!   `write_secs` is the faster.
//! - `copy_*`: the data extents read cold and written as above at the same time (a second
//!   thread writes): the device doing both, as a restore does; `copy_mbps` counts both ways.
//! - `seq_read_mbps`: the whole image read cold (holes read as zeroes).
//! - BLAKE3 and zstd throughput on one core and on all cores over a 256 MiB sample of
//!   non-zero data taken from the whole image.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

const CHUNK: usize = 1 << 20;
const SAMPLE: usize = 256 << 20;
const IO: usize = 4 << 20;
const ALIGN: usize = 4096;
const PREFETCH: u64 = 32 << 20;

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// Drops the page cache (root only): every "cold" figure starts from the device.
fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// Runs `f` over every chunk of `data`, on `threads` threads, and returns MB/s.
fn parallel(data: &[u8], threads: usize, f: impl Fn(&[u8]) + Sync) -> f64 {
    let chunks: Vec<&[u8]> = data.chunks(CHUNK).collect();
    // One untimed pass first: page faults and clock ramp-up belong to no one's throughput.
    chunks.iter().take(64).for_each(|c| f(c));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(c) = chunks.get(i) else { break };
                f(c);
            });
        }
    });
    mbps(data.len() as u64, t.elapsed().as_secs_f64())
}

/// The file's data extents, as the backup finds them.
fn extents(f: &File, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Ok(Some(start)) = bulwark_sys::seek_data(f, pos) else {
            break;
        };
        let end = bulwark_sys::seek_hole(f, start).unwrap_or(size).min(size);
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    out
}

/// A 4 KiB-aligned window of `len` bytes inside `v` (direct I/O wants aligned buffers).
fn aligned(v: &mut [u8], len: usize) -> &mut [u8] {
    let skip = (ALIGN - v.as_ptr() as usize % ALIGN) % ALIGN;
    &mut v[skip..skip + len]
}

/// Keeps the device busy, as the backup's reader does: when reading at `at` comes within
/// 16 MiB of what was asked for (`asked`), asks for the data of `ranges` in the 32 MiB from
/// there (`next`: see `bulwark_sys::will_need_within`).
fn ask_ahead(
    f: &File,
    ranges: &[(u64, u64)],
    next: &mut usize,
    at: u64,
    size: u64,
    asked: &mut u64,
) {
    if at + PREFETCH / 2 >= *asked {
        let from = (*asked).max(at);
        let to = (at + PREFETCH).min(size);
        bulwark_sys::will_need_within(f, ranges, next, from, to);
        *asked = to.max(*asked);
    }
}

/// Every 256 MiB written, starts writeback and drops written pages (as a restore does): the
/// page cache never fills with dirty data waiting for the final fsync.
fn flush_behind(f: &File, written: u64, len: u64) {
    const CHUNK: u64 = 256 << 20;
    if written / CHUNK != (written - len) / CHUNK {
        let _ = bulwark_sys::fadvise(f, 0, 0, bulwark_sys::Advice::DontNeed);
    }
}

/// Writes `total` bytes from `ring` at `ranges`' offsets into a new file at `path`, fsyncs it,
/// and returns the seconds taken; the file is removed.
fn write_test(path: &Path, size: u64, ranges: &[(u64, u64)], ring: &[u8], direct: bool) -> f64 {
    let _ = std::fs::remove_file(path);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    if direct {
        opts.custom_flags(bulwark_sys::open::DIRECT);
    }
    let f = opts.open(path).expect("create the write test file");
    f.set_len(size).expect("size the write test file");
    // The ring, copied to an aligned buffer once: writes are slices of it.
    let ring_len = ring.len() / IO * IO;
    assert!(ring_len >= IO, "the data sample is smaller than one write");
    let mut store = vec![0u8; ring_len + ALIGN];
    let data = aligned(&mut store, ring_len);
    data.copy_from_slice(&ring[..ring_len]);
    let t = Instant::now();
    let mut ring_at = 0usize;
    let mut written = 0u64;
    for &(start, end) in ranges {
        // Direct I/O: whole 4 KiB pages (extents of a 4 KiB-block file system are).
        let (start, end) = (
            start & !(ALIGN as u64 - 1),
            end.div_ceil(ALIGN as u64) * ALIGN as u64,
        );
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(IO);
            f.write_all_at(&data[ring_at..ring_at + n], at)
                .expect("write test");
            written += n as u64;
            if !direct {
                flush_behind(&f, written, n as u64);
            }
            ring_at = (ring_at + IO) % ring_len;
            at += n as u64;
        }
    }
    f.sync_all().expect("fsync the write test file");
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    secs
}

/// Copies `ranges` of `src` into a new file at `path` (read by one thread with the data asked
/// for ahead, written by another at the same offsets, then fsync): the device reading and
/// writing at once, as a restore does. Returns the seconds taken; the file is removed.
fn copy_test(src: &File, path: &Path, size: u64, ranges: &[(u64, u64)]) -> f64 {
    let _ = std::fs::remove_file(path);
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create the copy test file");
    out.set_len(size).expect("size the copy test file");
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(8);
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(move || {
            let (mut prefetched, mut next) = (0u64, 0usize);
            for &(start, end) in ranges {
                let mut at = start;
                while at < end {
                    let n = ((end - at) as usize).min(IO);
                    ask_ahead(src, ranges, &mut next, at, size, &mut prefetched);
                    let mut buf = vec![0u8; n];
                    src.read_exact_at(&mut buf, at).expect("read image");
                    if tx.send((at, buf)).is_err() {
                        return;
                    }
                    at += n as u64;
                }
            }
        });
        let mut written = 0u64;
        for (at, buf) in rx {
            out.write_all_at(&buf, at).expect("copy test write");
            written += buf.len() as u64;
            flush_behind(&out, written, buf.len() as u64);
        }
    });
    out.sync_all().expect("fsync the copy test file");
    let secs = t.elapsed().as_secs_f64();
    drop(out);
    let _ = std::fs::remove_file(path);
    secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1).filter(|a| !a.starts_with('-')) else {
        eprintln!("usage: bulwark-limits IMAGE [ZSTD_LEVEL] [--write-dir DIR]");
        std::process::exit(2);
    };
    let level: i32 = args
        .get(2)
        .filter(|a| !a.starts_with("--"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let write_dir = args
        .iter()
        .position(|a| a == "--write-dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(path)
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf()
        });
    let cold = drop_caches();

    // The data extents, cold, in order.
    let f = File::open(path).unwrap_or_else(|e| {
        eprintln!("bulwark-limits: cannot open the image {path}: {e}");
        std::process::exit(2)
    });
    let size = f.metadata().expect("stat image").len();
    let ranges = extents(&f, size);
    let mut buf = vec![0u8; IO];
    let mut sample = Vec::with_capacity(SAMPLE);
    let mut data_bytes = 0u64;
    // A sample spread over the whole image (every `stride`-th chunk), not just its start.
    let extent_total: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    let stride = (extent_total / SAMPLE as u64).max(1);
    let mut chunk_no = 0u64;
    let t = Instant::now();
    let (mut prefetched, mut next) = (0u64, 0usize);
    for &(start, end) in &ranges {
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(IO);
            ask_ahead(&f, &ranges, &mut next, at, size, &mut prefetched);
            f.read_exact_at(&mut buf[..n], at).expect("read image");
            // Keep non-zero data as the sample: zero runs would flatter BLAKE3 and zstd.
            chunk_no += 1;
            if chunk_no.is_multiple_of(stride)
                && sample.len() < SAMPLE
                && buf[..n].iter().any(|&b| b != 0)
            {
                sample.extend_from_slice(&buf[..n.min(SAMPLE - sample.len())]);
            }
            at += n as u64;
            data_bytes += n as u64;
        }
    }
    let extents_secs = t.elapsed().as_secs_f64();

    // Writing as much at the same places, to the same file system as a restore would.
    let wpath = write_dir.join(format!(".bulwark-limits-write-{}", std::process::id()));
    // What is written: the sample (at least one write's worth; a tiny image repeats it).
    let mut ring = sample[..sample.len().min(64 << 20)].to_vec();
    if ring.len() < IO {
        let seed = if ring.is_empty() { vec![0xa5] } else { ring };
        ring = seed.iter().copied().cycle().take(IO).collect();
    }
    let ring = &ring[..];
    drop_caches();
    let write_buffered = write_test(&wpath, size, &ranges, ring, false);
    drop_caches();
    let write_direct = write_test(&wpath, size, &ranges, ring, true);

    drop_caches();
    let copy = copy_test(&f, &wpath, size, &ranges);

    // The whole image, cold.
    drop_caches();
    let mut f = f;
    let _ = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0));
    let t = Instant::now();
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read image");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let read = mbps(total, t.elapsed().as_secs_f64());

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let hash = |c: &[u8]| {
        std::hint::black_box(blake3::hash(c));
    };
    let zstd = |c: &[u8]| {
        std::hint::black_box(zstd::bulk::compress(c, level).expect("zstd"));
    };
    let write_secs = write_buffered.min(write_direct);
    println!(
        "{{\"image_bytes\": {total}, \"cold\": {cold}, \"cores\": {cores}, \
         \"data_bytes\": {data_bytes}, \"extents_read_secs\": {extents_secs:.3}, \
         \"extents_read_mbps\": {:.0}, \"write_buffered_secs\": {write_buffered:.3}, \
         \"write_direct_secs\": {write_direct:.3}, \"write_secs\": {write_secs:.3}, \
         \"write_mbps\": {:.0}, \"copy_secs\": {copy:.3}, \"copy_mbps\": {:.0}, \
         \"seq_read_mbps\": {read:.0}, \
         \"blake3_1_mbps\": {:.0}, \"blake3_all_mbps\": {:.0}, \"zstd_level\": {level}, \
         \"zstd_1_mbps\": {:.0}, \"zstd_all_mbps\": {:.0}}}",
        mbps(data_bytes, extents_secs),
        mbps(data_bytes, write_secs),
        mbps(2 * data_bytes, copy),
        parallel(&sample, 1, hash),
        parallel(&sample, cores, hash),
        parallel(&sample, 1, zstd),
        parallel(&sample, cores, zstd)
    );
}
