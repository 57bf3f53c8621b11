//! One module per subcommand.

pub mod audit;
pub mod clients;
pub mod enroll;
pub mod init;
pub mod install;
pub mod policy;
pub mod report;
pub mod retention;
pub mod serve;
pub mod space;
pub mod status;
pub mod synthesize;
pub mod verify;

/// Root working on a repository that belongs to its service user continues as that user,
/// before anything is opened: a file root created there (a verify record, a policy, an
/// enrollment token, a synthetic full, a lock) would belong to root, and the service would
/// then fail to read or replace it, or the immutability service refuse to seal it. A
/// repository owned by root (or not a repository) is left as it is.
pub fn as_repo_owner(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::MetadataExt;
    if bulwark_sys::effective_uid() != 0 || !dir.join("repository.toml").is_file() {
        return Ok(());
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("reading the owner of {}", dir.display()))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        return Ok(());
    }
    if gid == 0 {
        anyhow::bail!(
            "{} belongs to user {uid} but group root: give it the service user's own group (`chown {uid}:GROUP {}`), or run this as the service user; nothing was changed",
            dir.display(),
            dir.display()
        );
    }
    bulwark_sys::drop_privileges(uid, gid).with_context(|| {
        format!(
            "giving up root for uid {uid}, gid {gid} (the owner of {})",
            dir.display()
        )
    })?;
    tracing::info!(uid, gid, "continuing as the repository's owner");
    Ok(())
}
