//! Private files of the service: written atomically with mode 0600, read with a size bound.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{Result, ServerError};

/// Writes `path` atomically (temp, fsync, rename, fsync folder) with mode 0600. With
/// `exclusive`, fails with `AlreadyExists` instead of replacing an existing file.
pub fn write_private(path: &Path, data: &[u8], exclusive: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rnd = [0u8; 8];
    getrandom::getrandom(&mut rnd)
        .map_err(|e| ServerError::Config(format!("no randomness: {e}")))?;
    let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(rnd)));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(ServerError::io(&tmp, "creating"))?;
        f.write_all(data)
            .map_err(ServerError::io(&tmp, "writing"))?;
        f.sync_all().map_err(ServerError::io(&tmp, "fsyncing"))?;
        if exclusive {
            // A hard link fails if the name exists: an atomic claim.
            std::fs::hard_link(&tmp, path).map_err(ServerError::io(path, "creating"))?;
            std::fs::remove_file(&tmp).map_err(ServerError::io(&tmp, "removing"))?;
        } else {
            std::fs::rename(&tmp, path).map_err(ServerError::io(path, "renaming into place"))?;
        }
        Ok(bulwark_repository::fsync_dir(dir)?)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Reads a small file, refusing one larger than `max` bytes before reading it.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(ServerError::io(path, "opening"))?;
    let len = f
        .metadata()
        .map_err(ServerError::io(path, "reading size of"))?
        .len();
    if len > max {
        return Err(ServerError::Config(format!(
            "{} is {len} bytes, more than the {max} expected; it is not a file Bulwark wrote",
            path.display()
        )));
    }
    let mut v = Vec::with_capacity(len as usize);
    f.take(max)
        .read_to_end(&mut v)
        .map_err(ServerError::io(path, "reading"))?;
    Ok(v)
}

/// True when the error is a missing file.
pub(crate) fn is_not_found(e: &ServerError) -> bool {
    matches!(e, ServerError::Io(io) if io.source.kind() == std::io::ErrorKind::NotFound)
}
