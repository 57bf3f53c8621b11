//! Random access to a restore point: the disk as an image that can be read at any offset.
//!
//! The point's block map names every non-zero block of the disk, so a read maps each disk
//! block it touches to its map entry (absent: a zero block) and decodes the stored block,
//! checking it against its hashes first ([`decode_stored`], the one place a block's stored
//! bytes become plain bytes). A damaged block fails exactly its own range; it never yields
//! wrong bytes. Decoded blocks are kept in a bounded cache (64 MiB by default), so the small
//! reads a booting machine makes do not decompress a whole block each time, and a run of
//! sequential reads starts read-ahead of the following blocks on background threads.
//!
//! Where the stored bytes come from is a [`PointBlocks`]: the repository's files
//! ([`ChainReader`]) or a repository service over the network (bulwark-remote).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bulwark_format::{BlockDecoder, MapEntry};
use bulwark_repository::ChainReader;

/// Default bound of the decoded-block cache.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;
/// Read-ahead of a sequential reader, at most: 8 MiB (and never more than a quarter of the
/// cache, or prefetched blocks would push out each other before they are read).
pub const MAX_READ_AHEAD: u64 = 8 << 20;
/// Background threads that fetch and decode read-ahead blocks.
const PREFETCH_THREADS: usize = 2;

/// Why a block could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The stored bytes do not match the point's hashes, or do not decode.
    #[error("block {block} is damaged: {reason}; the rest of the disk is still readable, and `bulwark verify` lists every damaged block")]
    Damaged { block: u64, reason: String },
    /// The store could not give the block (I/O error, connection lost).
    #[error("block {block} could not be read: {reason}")]
    Unavailable { block: u64, reason: String },
}

impl ImageError {
    /// The block the error is about.
    pub fn block(&self) -> u64 {
        match self {
            ImageError::Damaged { block, .. } | ImageError::Unavailable { block, .. } => *block,
        }
    }
}

/// One fetched block: the entry describing its stored bytes (codec, stored length and hash,
/// as the store reports them), and the stored bytes.
pub type Fetched = Result<(MapEntry, Vec<u8>), ImageError>;

/// A restore point's blocks as a store gives them.
pub trait PointBlocks: Send + Sync {
    /// Disk size in bytes.
    fn disk_size(&self) -> u64;
    /// Block size in bytes.
    fn block_size(&self) -> u32;
    /// Every non-zero block, ascending by block number. Only `block`, `plain_len` and
    /// `plain_hash` are relied on: they are what each fetched block is checked against.
    fn map(&self) -> &[MapEntry];
    /// The stored bytes of map entries `first..first + count`, in order, one result each.
    fn fetch(&self, first: usize, count: usize) -> Vec<Fetched>;
    /// For an encrypted point: the decryptor and the restore point whose file holds `e`
    /// (docs/encryption.md; see `crate::Decrypting`). `None`: blocks are not encrypted.
    fn decryptor_for(&self, _e: &MapEntry) -> Option<(&crate::Decryptor, bulwark_format::PointId)> {
        None
    }
}

impl PointBlocks for ChainReader {
    fn disk_size(&self) -> u64 {
        self.point().meta.disk_size
    }
    fn block_size(&self) -> u32 {
        self.point().meta.block_size
    }
    fn map(&self) -> &[MapEntry] {
        self.entries()
    }
    fn fetch(&self, first: usize, count: usize) -> Vec<Fetched> {
        let map = self.entries();
        let end = (first + count).min(map.len());
        if count > 1 {
            for e in &map[first..end] {
                self.will_need(e);
            }
        }
        map[first..end]
            .iter()
            .map(|e| {
                let mut buf = Vec::new();
                let local = MapEntry { file_ref: 0, ..*e };
                self.file_of(e)
                    .read_stored(&local, &mut buf)
                    .map_err(|err| ImageError::Unavailable {
                        block: e.block.0,
                        reason: err.to_string(),
                    })?;
                buf.truncate(e.stored_len as usize);
                Ok((*e, buf))
            })
            .collect()
    }
}

/// Fails unless the store answered with the block the map names (`expected`): the same
/// position, plain length and plain hash.
pub(crate) fn check_same_block(expected: &MapEntry, got: &MapEntry) -> Result<(), ImageError> {
    if got.block != expected.block
        || got.plain_len != expected.plain_len
        || got.plain_hash != expected.plain_hash
    {
        return Err(ImageError::Damaged {
            block: expected.block.0,
            reason: "the store returned a block other than the one the map names".into(),
        });
    }
    Ok(())
}

/// Turns a block's stored bytes into its plain bytes, checking them first: the stored entry
/// must describe the block the map names, the stored bytes must match their hash, and the
/// decoded block must match the plain hash the map records. `expected` comes from the map,
/// `got` from the store. This is the one place stored bytes are decoded for random access
/// (decryption belongs here too).
pub fn decode_stored(
    dec: &mut BlockDecoder,
    expected: &MapEntry,
    got: &MapEntry,
    stored: &[u8],
) -> Result<Vec<u8>, ImageError> {
    let damaged = |reason: String| ImageError::Damaged {
        block: expected.block.0,
        reason,
    };
    check_same_block(expected, got)?;
    let mut out = Vec::new();
    let (raw, len) = {
        let plain = dec
            .decode(got, stored, &mut out)
            .map_err(|e| damaged(e.to_string()))?;
        (plain.as_ptr() == stored.as_ptr(), plain.len())
    };
    if raw {
        // Stored raw: the plain block is the stored bytes themselves.
        return Ok(stored[..len].to_vec());
    }
    out.truncate(len);
    Ok(out)
}

/// Counters of an image, for tests and the benchmark.
#[derive(Debug, Default)]
pub struct ImageStats {
    /// Blocks fetched from the store and decoded.
    pub decoded: AtomicU64,
    /// Block lookups answered by the cache.
    pub cache_hits: AtomicU64,
    /// Blocks decoded by read-ahead.
    pub prefetched: AtomicU64,
    /// Blocks that failed their checks.
    pub damaged: AtomicU64,
}

struct Cache {
    max_bytes: u64,
    bytes: u64,
    tick: u64,
    blocks: HashMap<u64, (Arc<Vec<u8>>, u64)>,
    /// Last use → block: the least recently used is first.
    lru: BTreeMap<u64, u64>,
    /// Blocks some thread is fetching now; others wait instead of fetching them again.
    loading: HashSet<u64>,
    /// Read-ahead: the highest end of a read, the sequential streak, how far read-ahead has
    /// been asked for (a block number).
    high: u64,
    streak: u32,
    ahead_to: u64,
}

impl Cache {
    fn get(&mut self, block: u64) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let t = self.tick;
        let (data, used) = self.blocks.get_mut(&block)?;
        self.lru.remove(used);
        *used = t;
        self.lru.insert(t, block);
        Some(data.clone())
    }

    fn put(&mut self, block: u64, data: Arc<Vec<u8>>) {
        let n = data.len() as u64;
        if n > self.max_bytes || self.blocks.contains_key(&block) {
            return;
        }
        while self.bytes + n > self.max_bytes {
            let Some((_, old)) = self.lru.pop_first() else {
                break;
            };
            if let Some((d, _)) = self.blocks.remove(&old) {
                self.bytes -= d.len() as u64;
            }
        }
        self.tick += 1;
        self.lru.insert(self.tick, block);
        self.blocks.insert(block, (data, self.tick));
        self.bytes += n;
    }
}

struct Inner<S: ?Sized> {
    cache: Mutex<Cache>,
    loaded: Condvar,
    decoders: Mutex<Vec<BlockDecoder>>,
    stats: ImageStats,
    read_ahead_blocks: u64,
    src: S,
}

/// A restore point as a randomly readable disk image.
pub struct PointImage<S: PointBlocks + 'static> {
    inner: Arc<Inner<S>>,
    ahead: Option<crossbeam_channel::Sender<(usize, usize)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl<S: PointBlocks + 'static> PointImage<S> {
    /// An image of `src` with a cache of at most `cache_bytes` decoded blocks (0: no cache and
    /// no read-ahead: every read decodes the blocks it touches).
    pub fn new(src: S, cache_bytes: u64) -> PointImage<S> {
        let bs = u64::from(src.block_size()).max(1);
        let read_ahead_blocks = MAX_READ_AHEAD.min(cache_bytes / 4) / bs;
        let inner = Arc::new(Inner {
            cache: Mutex::new(Cache {
                max_bytes: cache_bytes,
                bytes: 0,
                tick: 0,
                blocks: HashMap::new(),
                lru: BTreeMap::new(),
                loading: HashSet::new(),
                high: 0,
                streak: 0,
                ahead_to: 0,
            }),
            loaded: Condvar::new(),
            decoders: Mutex::new(Vec::new()),
            stats: ImageStats::default(),
            read_ahead_blocks,
            src,
        });
        let mut threads = Vec::new();
        let ahead = (read_ahead_blocks > 0).then(|| {
            let (tx, rx) = crossbeam_channel::bounded::<(usize, usize)>(4);
            for _ in 0..PREFETCH_THREADS {
                let (inner, rx) = (inner.clone(), rx.clone());
                if let Ok(h) = std::thread::Builder::new()
                    .name("image-readahead".into())
                    .spawn(move || {
                        for (first, count) in rx {
                            inner.prefetch(first, count);
                        }
                    })
                {
                    threads.push(h);
                }
            }
            tx
        });
        PointImage {
            inner,
            ahead,
            threads,
        }
    }

    /// The store behind the image.
    pub fn source(&self) -> &S {
        &self.inner.src
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.src.disk_size()
    }

    /// Block size of the point.
    pub fn block_size(&self) -> u32 {
        self.inner.src.block_size()
    }

    /// Counters since the image was opened.
    pub fn stats(&self) -> &ImageStats {
        &self.inner.stats
    }

    /// Reads `buf.len()` bytes at `offset`, which must lie inside the disk. On error, the
    /// bytes before the failing block are filled; the error names that block.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        let inner = &*self.inner;
        let bs = u64::from(inner.src.block_size());
        let end = offset + buf.len() as u64;
        debug_assert!(end <= inner.src.disk_size());
        self.note_read(offset, end);
        let map = inner.src.map();
        let mut at = offset;
        // The first map entry at or after the first block; later ones follow in order.
        let mut idx = map.partition_point(|e| e.block.0 < offset / bs);
        while at < end {
            let block = at / bs;
            let in_block = (at - block * bs) as usize;
            let n = ((block + 1) * bs).min(end) - at;
            let dst = &mut buf[(at - offset) as usize..(at - offset + n) as usize];
            while idx < map.len() && map[idx].block.0 < block {
                idx += 1;
            }
            if idx < map.len() && map[idx].block.0 == block {
                let plain = inner.block(idx)?;
                dst.copy_from_slice(&plain[in_block..in_block + n as usize]);
            } else {
                dst.fill(0);
            }
            at += n;
        }
        Ok(())
    }

    /// The allocation of `[offset, offset + len)` as runs `(length, zero)`: `true` for zero
    /// blocks (not stored; they read as zeros), `false` for stored data. At most `max_runs`
    /// runs; together they cover at most `len` bytes (less when `max_runs` is reached).
    pub fn extents(&self, offset: u64, len: u64, max_runs: usize) -> Vec<(u64, bool)> {
        let src = &self.inner.src;
        let bs = u64::from(src.block_size());
        let end = (offset + len).min(src.disk_size());
        let map = src.map();
        let mut idx = map.partition_point(|e| e.block.0 < offset / bs);
        let mut out: Vec<(u64, bool)> = Vec::new();
        let mut at = offset;
        while at < end && out.len() <= max_runs {
            let block = at / bs;
            let (zero, run_end) = if idx < map.len() && map[idx].block.0 == block {
                // Consecutive mapped blocks form one data run.
                let mut b = block;
                while idx < map.len() && map[idx].block.0 == b {
                    idx += 1;
                    b += 1;
                }
                (false, b * bs)
            } else {
                let next = map.get(idx).map_or(u64::MAX, |e| e.block.0);
                (true, next.saturating_mul(bs))
            };
            let run_end = run_end.min(end);
            match out.last_mut() {
                Some((l, z)) if *z == zero => *l += run_end - at,
                _ => out.push((run_end - at, zero)),
            }
            at = run_end;
        }
        out.truncate(max_runs.max(1));
        out
    }

    /// Tracks the reads' pattern; a sequential streak asks for read-ahead of what follows.
    fn note_read(&self, offset: u64, end: u64) {
        let Some(tx) = &self.ahead else { return };
        let inner = &*self.inner;
        let bs = u64::from(inner.src.block_size());
        let ahead = inner.read_ahead_blocks;
        let want = {
            let mut c = inner.cache.lock().expect("cache lock");
            // Sequential: it starts where an earlier read ended, give or take the window of
            // reads a client keeps in flight at once.
            let window = ahead * bs;
            if offset <= c.high && offset + 2 * window >= c.high {
                c.streak = c.streak.saturating_add(1);
            } else {
                c.streak = 0;
            }
            c.high = c.high.max(end);
            if c.streak < 2 {
                None
            } else {
                let from = (end.div_ceil(bs)).max(c.ahead_to);
                let to = end.div_ceil(bs) + ahead;
                (from < to).then(|| {
                    c.ahead_to = to;
                    (from, to)
                })
            }
        };
        if let Some((from, to)) = want {
            let map = inner.src.map();
            let first = map.partition_point(|e| e.block.0 < from);
            let last = map.partition_point(|e| e.block.0 < to);
            if last > first {
                // Dropped when the read-ahead threads are busy: a hint, never a wait.
                let _ = tx.try_send((first, last - first));
            }
        }
    }
}

impl<S: PointBlocks + 'static> Drop for PointImage<S> {
    fn drop(&mut self) {
        self.ahead = None;
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl<S: PointBlocks + ?Sized> Inner<S> {
    fn decode(&self, expected: &MapEntry, f: Fetched) -> Result<Arc<Vec<u8>>, ImageError> {
        let (got, stored) = f?;
        let mut dec = match self.decoders.lock().expect("decoders lock").pop() {
            Some(d) => d,
            None => BlockDecoder::new().map_err(|e| ImageError::Unavailable {
                block: expected.block.0,
                reason: e.to_string(),
            })?,
        };
        let r = match self.src.decryptor_for(expected) {
            Some((d, file)) => {
                crate::crypt::decode_encrypted(d, file, &mut dec, expected, &got, &stored)
            }
            None => decode_stored(&mut dec, expected, &got, &stored),
        };
        self.decoders.lock().expect("decoders lock").push(dec);
        self.stats.decoded.fetch_add(1, Ordering::Relaxed);
        if matches!(r, Err(ImageError::Damaged { .. })) {
            self.stats.damaged.fetch_add(1, Ordering::Relaxed);
        }
        r.map(Arc::new)
    }

    /// The plain bytes of map entry `idx`, from the cache or fetched and decoded.
    fn block(&self, idx: usize) -> Result<Arc<Vec<u8>>, ImageError> {
        let e = self.src.map()[idx];
        let b = e.block.0;
        {
            let mut c = self.cache.lock().expect("cache lock");
            loop {
                if let Some(d) = c.get(b) {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(d);
                }
                if !c.loading.contains(&b) {
                    break;
                }
                c = self.loaded.wait(c).expect("cache lock");
            }
            c.loading.insert(b);
        }
        let f = self
            .src
            .fetch(idx, 1)
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                Err(ImageError::Unavailable {
                    block: b,
                    reason: "the store returned nothing".into(),
                })
            });
        let r = self.decode(&e, f);
        let mut c = self.cache.lock().expect("cache lock");
        c.loading.remove(&b);
        if let Ok(d) = &r {
            c.put(b, d.clone());
        }
        drop(c);
        self.loaded.notify_all();
        r
    }

    /// Fetches and decodes map entries `first..first + count` into the cache, skipping those
    /// cached or being fetched.
    fn prefetch(&self, first: usize, count: usize) {
        let map = self.src.map();
        let end = (first + count).min(map.len());
        let mut mine = Vec::new();
        {
            let mut c = self.cache.lock().expect("cache lock");
            for (i, e) in map.iter().enumerate().take(end).skip(first) {
                if !c.blocks.contains_key(&e.block.0) && !c.loading.contains(&e.block.0) {
                    c.loading.insert(e.block.0);
                    mine.push(i);
                }
            }
        }
        // Runs of consecutive entries are fetched with one call (one request over the
        // network).
        let mut k = 0;
        while k < mine.len() {
            let mut j = k + 1;
            while j < mine.len() && mine[j] == mine[j - 1] + 1 {
                j += 1;
            }
            let fetched = self.src.fetch(mine[k], j - k);
            let mut results = Vec::with_capacity(j - k);
            for (n, f) in fetched.into_iter().enumerate() {
                let e = map[mine[k + n]];
                results.push((e.block.0, self.decode(&e, f)));
            }
            let mut c = self.cache.lock().expect("cache lock");
            for &i in &mine[k..j] {
                c.loading.remove(&map[i].block.0);
            }
            for (b, r) in results {
                if let Ok(d) = r {
                    c.put(b, d);
                    self.stats.prefetched.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(c);
            self.loaded.notify_all();
            k = j;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_format::{BlockNo, Digest, ENTRY_FLAG_ZSTD};

    /// A store in memory: blocks of `bs` bytes, some zero (not mapped), one maybe damaged.
    struct Mem {
        bs: u32,
        size: u64,
        map: Vec<MapEntry>,
        stored: Vec<Vec<u8>>,
        fetches: AtomicU64,
    }

    fn mem(plain: &[u8], bs: u32, damage: Option<u64>) -> Mem {
        let mut map = Vec::new();
        let mut stored = Vec::new();
        for (i, chunk) in plain.chunks(bs as usize).enumerate() {
            if chunk.iter().all(|&b| b == 0) {
                continue;
            }
            let mut data = zstd::bulk::compress(chunk, 3).unwrap();
            let (flags, hash) = if data.len() < chunk.len() {
                (ENTRY_FLAG_ZSTD, Digest::of(&data))
            } else {
                data = chunk.to_vec();
                (0, Digest::of(chunk))
            };
            let e = MapEntry {
                block: BlockNo(i as u64),
                file_ref: 0,
                flags,
                offset: 0,
                stored_len: data.len() as u32,
                plain_len: chunk.len() as u32,
                plain_hash: Digest::of(chunk),
                stored_hash: hash,
            };
            if damage == Some(i as u64) {
                data[0] ^= 1;
            }
            map.push(e);
            stored.push(data);
        }
        Mem {
            bs,
            size: plain.len() as u64,
            map,
            stored,
            fetches: AtomicU64::new(0),
        }
    }

    impl PointBlocks for Mem {
        fn disk_size(&self) -> u64 {
            self.size
        }
        fn block_size(&self) -> u32 {
            self.bs
        }
        fn map(&self) -> &[MapEntry] {
            &self.map
        }
        fn fetch(&self, first: usize, count: usize) -> Vec<Fetched> {
            self.fetches.fetch_add(count as u64, Ordering::Relaxed);
            (first..first + count)
                .map(|i| Ok((self.map[i], self.stored[i].clone())))
                .collect()
        }
    }

    fn disk(n: usize, bs: usize) -> Vec<u8> {
        let mut v = vec![0u8; n * bs + 1000];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for (i, b) in v.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Block 2 is zero, block 3 compressible, the rest random.
            *b = match i / bs {
                2 => 0,
                3 => (i % 7) as u8,
                _ => x as u8,
            };
        }
        v
    }

    #[test]
    fn reads_at_any_offset_match_the_disk_including_zero_blocks_and_a_short_last_block() {
        let bs = 4096;
        let d = disk(6, bs);
        let img = PointImage::new(mem(&d, bs as u32, None), 1 << 20);
        for (off, len) in [
            (0, 1),
            (4095, 2),
            (0, d.len()),
            (8000, 9000),
            (d.len() - 7, 7),
            (2 * bs, bs),
        ] {
            let mut b = vec![0xaa; len];
            img.read_at(off as u64, &mut b).unwrap();
            assert_eq!(b, &d[off..off + len], "read at {off} for {len}");
        }
        let ex = img.extents(0, d.len() as u64, 100);
        let bs = bs as u64;
        assert_eq!(
            ex,
            vec![
                (2 * bs, false),
                (bs, true),
                (d.len() as u64 - 3 * bs, false)
            ]
        );
        assert_eq!(img.extents(2 * bs + 5, 10, 100), vec![(10, true)]);
        assert_eq!(img.extents(0, d.len() as u64, 1), vec![(2 * bs, false)]);
    }

    #[test]
    fn a_damaged_block_fails_its_own_range_and_nothing_else() {
        let bs = 4096;
        let d = disk(6, bs);
        let img = PointImage::new(mem(&d, bs as u32, Some(4)), 1 << 20);
        let mut b = vec![0u8; bs];
        img.read_at(3 * bs as u64, &mut b).unwrap();
        img.read_at(5 * bs as u64, &mut b).unwrap();
        let err = img.read_at(4 * bs as u64 + 10, &mut b[..10]).unwrap_err();
        assert!(matches!(err, ImageError::Damaged { block: 4, .. }), "{err}");
        // A read across it fills what precedes the damaged block, then fails.
        let mut big = vec![0u8; 3 * bs];
        let err = img.read_at(2 * bs as u64, &mut big).unwrap_err();
        assert_eq!(err.block(), 4);
        assert_eq!(&big[..2 * bs], &d[2 * bs..4 * bs]);
        assert_eq!(img.stats().damaged.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_cache_serves_small_reads_of_one_block_with_one_decode_and_stays_bounded() {
        let bs = 65536;
        let d = disk(8, bs);
        let img = PointImage::new(mem(&d, bs as u32, None), 2 * bs as u64);
        let mut b = [0u8; 4096];
        for i in 0..16 {
            img.read_at(i * 4096, &mut b).unwrap();
        }
        assert_eq!(img.stats().decoded.load(Ordering::Relaxed), 1);
        for blk in [0u64, 1, 3, 4, 0] {
            img.read_at(blk * bs as u64, &mut b).unwrap();
        }
        let c = img.inner.cache.lock().unwrap();
        assert!(c.bytes <= 2 * bs as u64 && c.blocks.len() <= 2);
        drop(c);
        // Without a cache every read decodes.
        let none = PointImage::new(mem(&d, bs as u32, None), 0);
        for _ in 0..5 {
            none.read_at(0, &mut b).unwrap();
        }
        assert_eq!(none.stats().decoded.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn sequential_reads_start_read_ahead() {
        let bs = 65536;
        let d = disk(64, bs);
        let img = PointImage::new(mem(&d, bs as u32, None), 64 << 20);
        let mut b = vec![0u8; bs];
        for i in 0..4u64 {
            img.read_at(i * bs as u64, &mut b).unwrap();
        }
        let ok = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            img.stats().prefetched.load(Ordering::Relaxed) > 0
        });
        assert!(ok, "no block was read ahead");
        // What was read ahead is served from the cache, and is right.
        for i in 4..40u64 {
            img.read_at(i * bs as u64, &mut b).unwrap();
            assert_eq!(b, &d[i as usize * bs..(i as usize + 1) * bs]);
        }
        assert!(img.stats().cache_hits.load(Ordering::Relaxed) > 0);
    }
}
