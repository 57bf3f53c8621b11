//! What the backup pipeline reads: a raw file or block device, or an NBD export (a live
//! disk, an image file served by qemu-nbd), as runs of blocks to read and runs of blocks
//! that changed-block tracking says are unchanged (referenced from the parent unread).

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use bulwark_format::{plain_len_of, BlockNo};
use crossbeam_channel::{Receiver, Sender};

use crate::source::{data_ranges, Source};
use crate::{EngineError, Result};

/// How far ahead of the reader a file is requested from the device.
const PREFETCH: u64 = 32 << 20;
/// NBD reads kept in flight on the connection.
pub const NBD_DEPTH: usize = 8;

/// A run of blocks `[first, end)`: read them, or reference the parent's copies unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub first: u64,
    pub end: u64,
    pub read: bool,
}

/// Where the bytes come from.
pub enum InputReader<'a> {
    File(&'a Source),
    Nbd(&'a bulwark_nbd::Client),
}

/// The pipeline's input: a reader and the runs of blocks, in block order.
pub struct Input<'a> {
    pub size: u64,
    /// The source as the user named it (for errors).
    pub name: PathBuf,
    pub reader: InputReader<'a>,
    /// Byte ranges that hold data (the rest is holes or zeroes and is never read).
    ranges: Vec<(u64, u64)>,
    /// When set, the blocks to read and to reference; otherwise every block of `ranges`.
    runs: Option<Vec<Run>>,
}

/// One unit of work for the pipeline: a block read (its bytes), or referenced (`None`).
pub(crate) type Work = (u64, u64, Option<Vec<u8>>);

impl<'a> Input<'a> {
    /// A raw file or block device: every data range (SEEK_DATA/SEEK_HOLE) is read.
    pub fn file(src: &'a Source) -> Input<'a> {
        Input {
            size: src.size,
            name: src.path.clone(),
            reader: InputReader::File(src),
            ranges: data_ranges(&src.file, src.size),
            runs: None,
        }
    }

    /// An NBD export whose data ranges (from `base:allocation`) are `ranges`.
    pub fn nbd(
        client: &'a bulwark_nbd::Client,
        name: PathBuf,
        ranges: Vec<(u64, u64)>,
    ) -> Input<'a> {
        Input {
            size: client.size,
            name,
            reader: InputReader::Nbd(client),
            ranges,
            runs: None,
        }
    }

    /// Reads only `runs` (changed-block tracking); blocks in no run are zero.
    pub fn with_runs(mut self, runs: Vec<Run>) -> Input<'a> {
        self.runs = Some(runs);
        self
    }

    /// The data ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Blocks to read or reference, in order.
    fn runs(&self, bs: u64) -> Vec<Run> {
        if let Some(r) = &self.runs {
            return r.clone();
        }
        let mut out: Vec<Run> = Vec::new();
        for &(start, end) in &self.ranges {
            let first = start / bs;
            let last = end.div_ceil(bs);
            match out.last_mut() {
                Some(l) if l.end >= first => l.end = l.end.max(last),
                _ => out.push(Run {
                    first,
                    end: last,
                    read: true,
                }),
            }
        }
        out
    }

    fn read_error(&self, e: std::io::Error) -> EngineError {
        match self.reader {
            InputReader::File(src) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                EngineError::SourceChanged {
                    path: src.path.clone(),
                    before: self.size,
                    after: src.size_now().unwrap_or(0),
                }
            }
            _ => EngineError::SourceIo {
                path: self.name.clone(),
                action: "reading",
                source: e,
            },
        }
    }

    /// The reader thread's work: feeds `work` in block order, taking buffers from `free`.
    /// Returns early (Ok) when the pipeline stopped listening.
    pub(crate) fn read_into(
        &self,
        block_size: u32,
        free: &Receiver<Vec<u8>>,
        work: &Sender<Work>,
    ) -> Result<()> {
        let bs = u64::from(block_size);
        let mut seq = 0u64;
        let mut prefetched = 0u64;
        let mut inflight: VecDeque<(u64, u64, bulwark_nbd::Ticket)> = VecDeque::new();
        let nbd_wait = |c: &bulwark_nbd::Client, t| {
            c.wait(t).map_err(|e| EngineError::SourceIo {
                path: self.name.clone(),
                action: "reading",
                source: std::io::Error::other(e.to_string()),
            })
        };
        let runs = self.runs(bs);
        // What a file source reads of its blocks: the data ranges only. A hole read or asked
        // for through the page cache is filled with zeroed pages that nobody needs, so holes
        // inside a block are zeroed in the buffer instead, and the prefetch asks for the data
        // ranges alone.
        let mut next_read = 0usize;
        let mut next_data = 0usize;
        for run in runs {
            for block in run.first..run.end {
                if bulwark_sys::interrupted() {
                    return Err(EngineError::Usage(
                        "interrupted: the backup stopped and made no restore point".into(),
                    ));
                }
                if !run.read {
                    // Referenced blocks wait behind reads in flight: order is kept.
                    if let InputReader::Nbd(c) = self.reader {
                        while let Some((s, b, t)) = inflight.pop_front() {
                            if work.send((s, b, Some(nbd_wait(c, t)?))).is_err() {
                                return Ok(());
                            }
                        }
                    }
                    if work.send((seq, block, None)).is_err() {
                        return Ok(());
                    }
                    seq += 1;
                    continue;
                }
                let Ok(mut buf) = free.recv() else {
                    return Ok(());
                };
                let len = plain_len_of(BlockNo(block), self.size, block_size) as usize;
                let at = block * bs;
                match self.reader {
                    InputReader::File(src) => {
                        // Keep the device busy: ask for the data ahead of the reader.
                        if at + PREFETCH / 2 >= prefetched {
                            let from = prefetched.max(at);
                            let to = (at + PREFETCH).min(self.size);
                            bulwark_sys::will_need_within(
                                &src.file,
                                &self.ranges,
                                &mut next_read,
                                from,
                                to,
                            );
                            prefetched = to.max(prefetched);
                        }
                        buf.resize(len, 0);
                        read_data_within(&src.file, &self.ranges, &mut next_data, at, &mut buf)
                            .map_err(|e| self.read_error(e))?;
                        if work.send((seq, block, Some(buf))).is_err() {
                            return Ok(());
                        }
                    }
                    InputReader::Nbd(c) => {
                        buf.resize(len, 0);
                        let t = c
                            .submit_read_into(at, buf)
                            .map_err(|e| EngineError::SourceIo {
                                path: self.name.clone(),
                                action: "reading",
                                source: std::io::Error::other(e.to_string()),
                            })?;
                        inflight.push_back((seq, block, t));
                        if inflight.len() >= NBD_DEPTH {
                            let (s, b, t) = inflight.pop_front().expect("not empty");
                            if work.send((s, b, Some(nbd_wait(c, t)?))).is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
                seq += 1;
            }
        }
        if let InputReader::Nbd(c) = self.reader {
            while let Some((s, b, t)) = inflight.pop_front() {
                if work.send((s, b, Some(nbd_wait(c, t)?))).is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Reads the block at `at` into `buf`: the bytes of `ranges` (sorted, disjoint data ranges)
/// within it, and zeroes where the block has a hole. `next` is as in
/// [`bulwark_sys::parts_within`]: blocks read in order look at each range about once. A block
/// inside one range is one read.
fn read_data_within(
    file: &std::fs::File,
    ranges: &[(u64, u64)],
    next: &mut usize,
    at: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    let end = at + buf.len() as u64;
    let mut parts = bulwark_sys::parts_within(ranges, next, at, end).peekable();
    if parts.peek() == Some(&(at, end)) {
        return file.read_exact_at(buf, at);
    }
    buf.fill(0);
    for (a, b) in parts {
        file.read_exact_at(&mut buf[(a - at) as usize..(b - at) as usize], a)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::read_data_within;

    /// A file of bytes 1..=255 repeating; `ranges` call parts of it holes, which must come
    /// back as zeroes (not read, and not left over from the buffer's last block).
    #[test]
    fn a_block_reads_its_data_ranges_and_zeroes_its_holes() {
        let content: Vec<u8> = (0..4096u32).map(|i| (i % 255 + 1) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&content).unwrap();
        let ranges = [(0, 1024), (1536, 2048), (2560, 4096)];
        let mut next = 0;
        let mut buf = vec![0xAAu8; 1024];
        // Block 0 lies inside the first range: one read, all of it data.
        read_data_within(&f, &ranges, &mut next, 0, &mut buf).unwrap();
        assert_eq!(buf, content[..1024]);
        // Block 1: a hole, then data; the stale bytes of block 0 must not survive.
        read_data_within(&f, &ranges, &mut next, 1024, &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 0), "hole 1024..1536 zeroed");
        assert_eq!(buf[512..], content[1536..2048]);
        assert_eq!(next, 1, "the range left behind is skipped from now on");
        // Block 2: data, a hole, data.
        read_data_within(&f, &ranges, &mut next, 2048, &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 0), "hole 2048..2560 zeroed");
        assert_eq!(buf[512..], content[2560..3072]);
        // A short last block inside the last range.
        let mut tail = vec![0xAAu8; 1000];
        read_data_within(&f, &ranges, &mut next, 3096, &mut tail).unwrap();
        assert_eq!(tail, content[3096..]);
        // Past the end of the file inside a range: the read fails (the source shrank).
        let mut past = vec![0u8; 1024];
        assert!(read_data_within(&f, &[(0, 8192)], &mut 0, 4096, &mut past).is_err());
    }
}
