//! `bulwark-repo init`.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_repository::{ReflinkSupport, Repository, DEFAULT_IMMUTABLE_DAYS, REFLINK_ADVICE};

/// Arguments of `bulwark-repo init`.
#[derive(clap::Args)]
pub struct Args {
    /// Folder of the new repository (created, or empty).
    dir: PathBuf,
    /// Immutability period in days (7 to 9999).
    #[arg(long, default_value_t = DEFAULT_IMMUTABLE_DAYS)]
    immutable_days: u32,
    /// Extra DNS name or IP address for the server certificate (repeatable); clients verify the
    /// pinned CA, so this is informational.
    #[arg(long)]
    server_name: Vec<String>,
    /// Socket of the immutability service that will guard this repository (its
    /// configuration lists this folder). Set it here: once guarded, the folder's top level is
    /// append-only and repository.toml can no longer change.
    #[arg(long)]
    immutd_socket: Option<PathBuf>,
    /// Give an existing repository, created without one, its network identity (CA and server
    /// certificate) so that `bulwark-repo serve` can serve it; nothing else changes.
    #[arg(long, conflicts_with_all = ["immutable_days", "immutd_socket"])]
    add_network: bool,
}

/// `bulwark-repo init DIR --add-network`.
fn add_network(a: &Args, json: bool) -> anyhow::Result<i32> {
    let repo = Repository::open(&a.dir)
        .with_context(|| format!("opening the repository {}", a.dir.display()))?;
    // The keys are written 0600 for whoever runs this: it must be the service user, who owns
    // the repository and reads them when serving.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(repo.root())?);
    let euid = bulwark_sys::effective_uid();
    if euid != owner {
        anyhow::bail!(
            "{} belongs to uid {owner}, and this runs as uid {euid}: run it as the repository's owner (the service user), e.g. `sudo -u bulwark bulwark-repo init {} --add-network`",
            a.dir.display(),
            a.dir.display()
        );
    }
    let net = bulwark_server::NetPaths::new(&a.dir);
    if net.dir.exists() {
        anyhow::bail!(
            "{} already has a network identity ({} exists); `bulwark-repo enroll` prints its CA fingerprint",
            a.dir.display(),
            net.dir.display()
        );
    }
    let fp = bulwark_server::init_pki(&a.dir, &repo.config().id, &a.server_name)
        .with_context(|| format!("creating the repository CA in {}", a.dir.display()))?;
    if json {
        outln!(
            "{}",
            serde_json::json!({"repository": a.dir, "id": repo.config().id, "fingerprint": fp.to_string()})
        );
    } else {
        outln!("gave repository {} a network identity", a.dir.display());
        outln!("repository CA fingerprint (clients pin it at enrollment): {fp}");
    }
    Ok(0)
}

/// Runs `bulwark-repo init`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    if a.add_network {
        return add_network(&a, json);
    }
    let repo = Repository::init_with(&a.dir, a.immutable_days, a.immutd_socket.as_deref())
        .with_context(|| format!("creating a repository in {}", a.dir.display()))?;
    let fp = bulwark_server::init_pki(&a.dir, &repo.config().id, &a.server_name)
        .with_context(|| format!("creating the repository CA in {}", a.dir.display()))?;
    // Warn now, while moving the repository elsewhere is still cheap.
    let reflink = repo.reflink_support()?;
    let no_reflink = match &reflink {
        ReflinkSupport::Supported => None,
        ReflinkSupport::Unsupported(why) => Some(format!("{why}: {REFLINK_ADVICE}")),
    };
    if json {
        outln!(
            "{}",
            serde_json::json!({"repository": a.dir, "id": repo.config().id, "immutable_days": a.immutable_days,
                "fingerprint": fp.to_string(),
                               "reflink": reflink.is_supported(), "reflink_warning": no_reflink})
        );
    } else {
        outln!(
            "created repository {} (id {})",
            a.dir.display(),
            repo.config().id
        );
        outln!("immutability period: {} days", a.immutable_days);
        outln!("repository CA fingerprint (clients pin it at enrollment): {fp}");
        match &no_reflink {
            None => outln!("block cloning: supported (synthetic fulls share blocks)"),
            Some(w) => eprintln!("WARNING: {w}"),
        }
        match &a.immutd_socket {
            Some(sock) => outln!(
                "restore points will be sealed by the immutability service at {}; list {} in its configuration",
                sock.display(),
                repo.root().display()
            ),
            None => outln!(
                "files are NOT immutable: no immutability service is configured (see --immutd-socket)"
            ),
        }
    }
    Ok(0)
}
