//! `bulwark-repo enroll`: a single-use token for a new client.

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `bulwark-repo enroll`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
    /// Name of the client (its identity; owner of the jobs it creates).
    #[arg(long)]
    client: String,
    /// How long the token stays valid: 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = bulwark_server::parse_duration)]
    expires: i64,
}

/// Runs `bulwark-repo enroll`: prints the token once; only its hash is stored.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    let fp = bulwark_server::ca_fingerprint(&a.dir)?;
    let (token, info) = bulwark_server::create_token(&a.dir, &a.client, a.expires)
        .with_context(|| format!("creating an enrollment token in {}", a.dir.display()))?;
    if json {
        outln!(
            "{}",
            serde_json::json!({"client": a.client, "token": token, "fingerprint": fp.to_string(),
                               "expires_unix": info.expires_unix})
        );
    } else {
        outln!(
            "enrollment token for client {:?} (works once, expires in {}s):",
            a.client,
            a.expires
        );
        outln!("  {token}");
        outln!("on the client, run:");
        outln!("  bulwark enroll HOST:6162 {token} --fingerprint {fp}");
    }
    Ok(0)
}
