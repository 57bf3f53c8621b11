//! Root working on a repository that belongs to its service user: the one rule of who owns a
//! repository folder and how root continues as that owner, shared by `bulwark` (backups of
//! block devices, `copy`) and `bulwark-repo` (verify, policy, retention, enrollment, …).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;

/// Who owns a local repository a command runs on as root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoOwner {
    /// Root owns the folder: nothing to give up.
    Root,
    /// A service user owns it (with its own group, never group root).
    User { uid: u32, gid: u32 },
    /// A user owns it but with group root: root cannot continue as that owner (every file it
    /// wrote would keep root's group); see [`group_root_refusal`].
    UserWithGroupRoot { uid: u32 },
}

/// The owner of the repository at `dir` when this process runs as root; `None` when it does
/// not, or when `dir` is not a repository (no `repository.toml`: the command's own error
/// follows).
pub fn repo_owner_for_root(dir: &Path) -> anyhow::Result<Option<RepoOwner>> {
    if bulwark_sys::effective_uid() != 0 || !dir.join("repository.toml").is_file() {
        return Ok(None);
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("reading the owner of {}", dir.display()))?;
    Ok(Some(match (meta.uid(), meta.gid()) {
        (0, _) => RepoOwner::Root,
        (uid, 0) => RepoOwner::UserWithGroupRoot { uid },
        (uid, gid) => RepoOwner::User { uid, gid },
    }))
}

/// Why root cannot continue as the owner of `dir`, a folder of user `uid` but group root.
pub fn group_root_refusal(dir: &Path, uid: u32) -> anyhow::Error {
    anyhow::anyhow!(
        "{} belongs to user {uid} but group root: give it the service user's own group \
         (`chown {uid}:GROUP {}`) so that root's commands can continue as that user, or run \
         this as the service user; nothing was changed",
        dir.display(),
        dir.display()
    )
}

/// Gives up root for good (`setgroups`, `setresgid`, `setresuid`, checked irreversible) and
/// continues as `uid`:`gid`, the owner of `dir`.
pub fn continue_as(uid: u32, gid: u32, dir: &Path) -> anyhow::Result<()> {
    bulwark_sys::drop_privileges(uid, gid).with_context(|| {
        format!(
            "giving up root for uid {uid}, gid {gid} (the owner of {})",
            dir.display()
        )
    })?;
    tracing::info!(uid, gid, "continuing as the repository's owner");
    Ok(())
}

/// Root working on a repository that belongs to its service user continues as that user,
/// before anything is opened; a repository owned by root (or not a repository) is left as
/// it is.
pub fn as_repo_owner(dir: &Path) -> anyhow::Result<()> {
    match repo_owner_for_root(dir)? {
        Some(RepoOwner::User { uid, gid }) => continue_as(uid, gid, dir),
        Some(RepoOwner::UserWithGroupRoot { uid }) => Err(group_root_refusal(dir, uid)),
        Some(RepoOwner::Root) | None => Ok(()),
    }
}
