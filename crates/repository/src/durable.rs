//! Durable file updates: temp, fsync, rename, fsync the folder.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{RepoError, Result};

/// Fsyncs a folder so that renames and creations in it survive a power cut.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(RepoError::io(dir, "opening folder"))?;
    f.sync_all().map_err(RepoError::io(dir, "fsyncing folder"))
}

/// The folder holding `path`: its parent, or the current folder for a bare file name (whose
/// parent is the empty path, which cannot be opened to fsync).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `data` atomically: a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, 0o666)
}

/// [`write_atomic`] with the new file created with `mode` (less the umask), e.g. `0o600` for
/// a key file, so that it is never readable to others, not even for a moment.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = folder_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(RepoError::io(&tmp, "creating"))?;
        f.write_all(data).map_err(RepoError::io(&tmp, "writing"))?;
        f.sync_all().map_err(RepoError::io(&tmp, "fsyncing"))?;
        std::fs::rename(&tmp, path).map_err(RepoError::io(path, "renaming into place"))?;
        fsync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_is_written_in_the_current_folder() {
        assert_eq!(folder_of(Path::new("metrics.prom")), Path::new("."));
        assert_eq!(
            folder_of(Path::new("/var/lib/x/metrics.prom")),
            Path::new("/var/lib/x")
        );
        assert_eq!(folder_of(Path::new("sub/metrics.prom")), Path::new("sub"));
    }
}
