//! `bulwark-repo init`.

use std::path::PathBuf;

use anyhow::Context;
use bulwark_repository::{Repository, DEFAULT_IMMUTABLE_DAYS};

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
}

/// Runs `bulwark-repo init`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let repo = Repository::init(&a.dir, a.immutable_days)
        .with_context(|| format!("creating a repository in {}", a.dir.display()))?;
    let fp = bulwark_server::init_pki(&a.dir, &repo.config().id, &a.server_name)
        .with_context(|| format!("creating the repository CA in {}", a.dir.display()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"repository": a.dir, "id": repo.config().id, "immutable_days": a.immutable_days,
                "fingerprint": fp.to_string()})
        );
    } else {
        println!(
            "created repository {} (id {})",
            a.dir.display(),
            repo.config().id
        );
        println!("immutability period: {} days", a.immutable_days);
        println!("repository CA fingerprint (clients pin it at enrollment): {fp}");
        println!(
            "files are NOT immutable until an immutability service (bulwark-immutd, run as root) guards this folder"
        );
    }
    Ok(0)
}
