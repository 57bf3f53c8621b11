//! The disk being backed up: a raw image file or a block device.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{EngineError, Result};

/// An opened source and its size.
pub struct Source {
    pub path: PathBuf,
    pub file: File,
    pub size: u64,
    pub is_block_device: bool,
}

impl Source {
    /// Opens a raw image or block device for reading.
    pub fn open(path: &Path) -> Result<Source> {
        let err = |action| {
            let path = path.to_path_buf();
            move |source| EngineError::SourceIo {
                path,
                action,
                source,
            }
        };
        // Non-blocking, so that a FIFO given by mistake is refused below instead of waiting
        // for a writer forever; reads of files and block devices do not change with it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(bulwark_sys::open::NONBLOCK)
            .open(path)
            .map_err(err("opening"))?;
        let ft = file
            .metadata()
            .map_err(err("reading metadata"))?
            .file_type();
        let is_block_device = ft.is_block_device();
        if !ft.is_file() && !is_block_device {
            return Err(EngineError::SourceKind {
                path: path.to_path_buf(),
            });
        }
        let size = current_size(&file).map_err(err("reading size"))?;
        let _ = bulwark_sys::fadvise(&file, 0, 0, bulwark_sys::Advice::Sequential);
        Ok(Source {
            path: path.to_path_buf(),
            file,
            size,
            is_block_device,
        })
    }

    /// The size now (to detect a source that changes size during a backup).
    pub fn size_now(&self) -> Result<u64> {
        current_size(&self.file).map_err(|source| EngineError::SourceIo {
            path: self.path.clone(),
            action: "reading size",
            source,
        })
    }
}

fn current_size(file: &File) -> std::io::Result<u64> {
    // Seeking to the end works for regular files and block devices alike.
    let mut file = file;
    let end = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    Ok(end)
}

/// The byte ranges of `file` that hold data, from `SEEK_DATA`/`SEEK_HOLE`. Where the
/// filesystem cannot say (or for a block device), the whole range is data.
pub fn data_ranges(file: &File, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match bulwark_sys::seek_data(file, pos) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(_) => return vec![(0, size)],
        };
        if start >= size {
            break;
        }
        let end = match bulwark_sys::seek_hole(file, start) {
            Ok(e) => e.min(size),
            Err(_) => return vec![(0, size)],
        };
        if end <= start {
            return vec![(0, size)];
        }
        // Holes smaller than 64 KiB are merged: reading them costs less than a seek.
        match out.last_mut() {
            Some((_, last_end)) if start - *last_end < 64 * 1024 => *last_end = end,
            _ => out.push((start, end)),
        }
        pos = end;
    }
    let mut file = file;
    let _ = file.seek(SeekFrom::Start(0));
    out
}
