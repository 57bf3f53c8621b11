//! `bulwark-limits IMAGE [LEVEL]`: what this machine can do at best, measured on IMAGE's data.
//! Prints one JSON object: cold sequential read of IMAGE (the caller drops the page cache
//! first), and BLAKE3 and zstd throughput on one core and on all cores over a 256 MiB sample.

use std::io::Read;
use std::time::Instant;

const CHUNK: usize = 1 << 20;
const SAMPLE: usize = 256 << 20;

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
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
    mbps(data.len(), t.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: bulwark-limits IMAGE [ZSTD_LEVEL]");
        std::process::exit(2);
    };
    let level: i32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut f = std::fs::File::open(path).expect("open image");
    let t = Instant::now();
    let mut buf = vec![0u8; 4 * CHUNK];
    let mut total = 0usize;
    let mut sample = Vec::with_capacity(SAMPLE);
    loop {
        let n = f.read(&mut buf).expect("read image");
        if n == 0 {
            break;
        }
        total += n;
        // Keep non-zero data as the sample: zero runs would flatter BLAKE3 and zstd.
        if sample.len() < SAMPLE && buf[..n].iter().any(|&b| b != 0) {
            sample.extend_from_slice(&buf[..n.min(SAMPLE - sample.len())]);
        }
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
    println!(
        "{{\"image_bytes\": {total}, \"cores\": {cores}, \"seq_read_mbps\": {read:.0}, \
         \"blake3_1_mbps\": {:.0}, \"blake3_all_mbps\": {:.0}, \"zstd_level\": {level}, \
         \"zstd_1_mbps\": {:.0}, \"zstd_all_mbps\": {:.0}}}",
        parallel(&sample, 1, hash),
        parallel(&sample, cores, hash),
        parallel(&sample, 1, zstd),
        parallel(&sample, cores, zstd)
    );
}
