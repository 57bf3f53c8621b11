//! `bulwark enroll`: get a client certificate from a repository with a single-use token.

use anyhow::Context;
use bulwark_protocol::Fingerprint;
use bulwark_remote::RemoteAddr;
use serde_json::json;

use crate::output::{Output, EXIT_OK};

/// Arguments of `bulwark enroll`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository service: HOST[:PORT] (port 6162 by default).
    address: String,
    /// The token printed by `bulwark-repo enroll` (works once).
    token: String,
    /// The repository CA fingerprint printed by `bulwark-repo init` (SHA256:…), verified
    /// before anything is sent, like an SSH host key.
    #[arg(long)]
    fingerprint: String,
}

/// Runs `bulwark enroll`: the key is generated here and never leaves this machine.
pub fn run(a: Args, config_dir: &std::path::Path, out: &Output) -> anyhow::Result<i32> {
    let addr = RemoteAddr::parse(&a.address)?;
    let fp: Fingerprint = a
        .fingerprint
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--fingerprint")?;
    let before = bulwark_remote::enrolled_as(config_dir, &addr);
    let e = bulwark_remote::enroll(config_dir, &addr, &a.token, fp)
        .with_context(|| format!("enrolling with {addr}"))?;
    if let Some(old) = &before {
        eprintln!(
            "warning: this machine was enrolled with {addr} as client {old:?}; that identity is replaced by {:?} (its files are kept in {}/previous-*). Its certificate stays valid on the repository until revoked there by fingerprint (`bulwark-repo clients REPO` lists them; `--revoke NAME` would also revoke a new certificate of the same name)",
            e.client,
            e.dir.display()
        );
    }
    if out.json {
        out.json(
            &json!({"address": addr.to_string(), "client": e.client, "credentials": e.dir,
                         "fingerprint": e.fingerprint.to_string()}),
        );
    } else {
        outln!("enrolled with {addr} as client {:?}", e.client);
        outln!(
            "  key, certificate and pinned CA stored in {} (mode 0600)",
            e.dir.display()
        );
        outln!("  use --repo {addr} with backup, restore, list and verify");
    }
    Ok(EXIT_OK)
}
