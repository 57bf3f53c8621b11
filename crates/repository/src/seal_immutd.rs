//! Sealing through the immutability service.

use std::path::{Path, PathBuf};

use bulwark_format::PointMeta;

use crate::{RepoError, Result};

/// Asks the immutability service at `socket` to seal `done` and returns where it now lives.
pub(crate) fn seal(
    _repo: &Path,
    socket: &Path,
    done: &Path,
    _meta: &PointMeta,
) -> Result<(PathBuf, bool, Option<i64>)> {
    Err(RepoError::Seal {
        path: done.to_path_buf(),
        why: format!(
            "this build cannot talk to the immutability service at {} yet; the file stays in incoming/",
            socket.display()
        ),
    })
}
