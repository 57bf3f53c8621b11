//! One module per subcommand.

pub mod backup;
pub mod copy;
pub mod dashboard;
pub mod enroll;
pub mod export;
pub mod job;
pub mod key;
pub mod list;
pub mod live;
pub mod mount;
pub mod restore;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulwark_format::PointId;
use bulwark_repository::Repository;

use crate::repo::Repo;

/// Opens the local repository named by a job file.
pub fn open_repo(path: &Path) -> anyhow::Result<Repository> {
    crate::repo::open_local(path)
}

/// Root backing up a block device into a repository that belongs to a service user (a
/// guarded host, README "Local block devices"): opens the source as root, then gives up root
/// for good and continues as the repository folder's owner, so that every file, lock and
/// seal request is the service user's and nothing root-owned is left in the repository.
/// Returns the opened source, or `None` when nothing needs to change (not root, or the
/// repository is root's own and unguarded). Refuses, before touching anything, root on a
/// guarded repository owned by root (the immutability service seals only for its service
/// user).
pub fn become_repo_owner(
    repo: &Path,
    source: &Path,
) -> anyhow::Result<Option<bulwark_engine::Source>> {
    Ok(become_repo_owner_opening(repo, &[source])?.and_then(|v| v.into_iter().next()))
}

/// [`become_repo_owner`] for several sources (a job of several disks): all are opened as
/// root before root is given up.
pub fn become_repo_owner_opening(
    repo: &Path,
    sources: &[&Path],
) -> anyhow::Result<Option<Vec<bulwark_engine::Source>>> {
    use bulwark_cli_common::owner::{
        continue_as, group_root_refusal, repo_owner_for_root, RepoOwner,
    };
    let (uid, gid) = match repo_owner_for_root(repo)? {
        None => return Ok(None),
        Some(RepoOwner::User { uid, gid }) => (uid, gid),
        Some(RepoOwner::UserWithGroupRoot { uid }) => return Err(group_root_refusal(repo, uid)),
        Some(RepoOwner::Root) => {
            let cfg = bulwark_repository::RepoConfig::load(repo)
                .with_context(|| format!("opening repository {}", repo.display()))?;
            if cfg.immutd_socket.is_some() {
                anyhow::bail!(
                    "{} is guarded by the immutability service but owned by root: the service seals \
                     only for the repository's service user (it refuses uid 0), so this backup \
                     could never be sealed. Give the repository to its service user (it is created \
                     with `sudo -u bulwark bulwark-repo init`), then run this backup as root again: \
                     bulwark opens the device as root and continues as that user. Nothing was written",
                    repo.display()
                );
            }
            return Ok(None);
        }
    };
    let mut src = Vec::with_capacity(sources.len());
    for source in sources {
        src.push(
            bulwark_engine::Source::open(source)
                .with_context(|| format!("opening {} as root", source.display()))?,
        );
    }
    continue_as(uid, gid, repo)?;
    tracing::info!(sources = src.len(), "opened the sources as root");
    Ok(Some(src))
}

/// Advice for a source that could not be opened for lack of permission.
pub fn source_advice(e: &bulwark_engine::EngineError) -> Option<&'static str> {
    match e {
        bulwark_engine::EngineError::SourceIo { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Some(
                "reading a block device needs root: run `bulwark backup` as root (it opens the \
                 device, then continues as the repository's owner), or add the user to group \
                 `disk`",
            )
        }
        _ => None,
    }
}

/// `--repo`, shared by the commands that work on a repository.
#[derive(clap::Args)]
pub struct RepoArg {
    /// The repository: a local folder, or HOST:PORT (or bulwark://HOST:PORT) of an enrolled repository service.
    #[arg(long)]
    pub repo: std::path::PathBuf,
}

impl RepoArg {
    /// The repository `--repo` names, reached with the credentials in `config_dir`.
    pub fn open(&self, config_dir: &Path) -> Repo {
        Repo::parse(&self.repo, config_dir)
    }
}

/// `--repo` and `--job`: the job a command works on. Each command words the help of
/// `--job` itself (`#[command(mut_args(job_help(...)))]`).
#[derive(clap::Args)]
pub struct JobArg {
    #[command(flatten)]
    pub at: RepoArg,
    /// The job.
    #[arg(long)]
    pub job: String,
}

impl JobArg {
    /// See [`RepoArg::open`].
    pub fn open(&self, config_dir: &Path) -> Repo {
        self.at.open(config_dir)
    }
}

/// Gives `--job` a command's own help text; the other arguments stay as and where they are.
pub fn job_help(help: &'static str) -> impl FnMut(clap::Arg) -> clap::Arg {
    move |a| {
        if a.get_id() == "job" {
            a.help(help)
        } else {
            a
        }
    }
}

/// `--repo` and an optional `--job`: the jobs `list` and `verify` look at.
#[derive(clap::Args)]
pub struct JobsArg {
    #[command(flatten)]
    pub at: RepoArg,
    /// Only this job.
    #[arg(long)]
    pub job: Option<String>,
}

impl JobsArg {
    /// See [`RepoArg::open`].
    pub fn open(&self, config_dir: &Path) -> Repo {
        self.at.open(config_dir)
    }
}

/// `--repo`, `--job` and `--point`: the restore point `restore`, `export` and `mount` read.
#[derive(clap::Args)]
pub struct PointArg {
    #[command(flatten)]
    pub of: JobArg,
    /// Restore point id (from `bulwark list`), or `latest`.
    #[arg(long, default_value = "latest")]
    pub point: String,
}

impl PointArg {
    /// See [`RepoArg::open`].
    pub fn open(&self, config_dir: &Path) -> Repo {
        self.of.open(config_dir)
    }

    /// The job.
    pub fn job(&self) -> &str {
        &self.of.job
    }

    /// `--point` parsed: `None` for the latest.
    pub fn id(&self) -> anyhow::Result<Option<PointId>> {
        if self.point == "latest" {
            return Ok(None);
        }
        Ok(Some(
            self.point
                .parse::<PointId>()
                .map_err(anyhow::Error::msg)
                .context("--point")?,
        ))
    }
}

/// The key options of `bulwark restore`, `bulwark export` and `bulwark mount`.
#[derive(clap::Args)]
pub struct KeyArgs {
    /// The symmetric key file an encrypted point was written with.
    #[arg(long, conflicts_with = "restore_key")]
    pub key: Option<PathBuf>,
    /// The private restore key of a write-only client's backups (`bulwark key create
    /// --write-only`); its passphrase from $BULWARK_PASSPHRASE, $BULWARK_PASSPHRASE_FILE,
    /// the systemd credential or the terminal.
    #[arg(long)]
    pub restore_key: Option<PathBuf>,
}

impl KeyArgs {
    /// The key file given, opened with its passphrase; `None` without one.
    pub fn load(&self) -> anyhow::Result<Option<bulwark_crypto::KeyFile>> {
        key::read_key(self.key.as_deref(), self.restore_key.as_deref())
    }
}

/// Parses sizes such as `1M`, `256K`, `65536`.
pub fn parse_size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024u64),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 64K, 1M or 4M"))?;
    u32::try_from(n * mult).map_err(|_| format!("{s} is too large"))
}
