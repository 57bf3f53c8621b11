//! Writing state files so that a power cut leaves either the old or the new content.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{ImmutdError, Result};

/// Writes `data` to `path` by temp file, fsync, rename, fsync of the folder. The file gets
/// mode `mode` and the temp name is fixed per target, so a crash leaves at most one stray.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| ImmutdError::Other(format!("{} has no folder", path.display())))?;
    let name = path
        .file_name()
        .ok_or_else(|| ImmutdError::Other(format!("{} has no file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".tmp-");
    tmp_name.push(name);
    let tmp = dir.join(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(bulwark_sys::open::NOFOLLOW)
        .open(&tmp)
        .map_err(ImmutdError::io("creating temporary file", &tmp))?;
    f.write_all(data)
        .map_err(ImmutdError::io("writing", &tmp))?;
    f.sync_all().map_err(ImmutdError::io("fsyncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(ImmutdError::io("renaming into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ImmutdError::io("fsyncing folder", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
