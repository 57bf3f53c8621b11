//! `bulwark-repo enroll`: a single-use token for a new client.
//!
//! A client is its name: the machine that enrolls with a token becomes that client and owns
//! its jobs (`net/owners/<job>`). So a token for a name that already has an active
//! certificate is refused unless `--replace` says it is meant (a replacement machine).

use std::path::PathBuf;

use anyhow::{bail, Context};
use bulwark_server::{ClientRecord, Registry};

use super::clients::utc;

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
    /// Issue the token even though the client is enrolled already: the new machine becomes
    /// the same client and reads and writes its jobs. The old certificate stays valid until
    /// revoked with `bulwark-repo clients DIR --revoke FINGERPRINT`.
    #[arg(long)]
    replace: bool,
}

/// `c1 is enrolled since 2026-12-01 (certificate sha256 …)`, for each active certificate.
fn enrolled(client: &str, active: &[ClientRecord]) -> String {
    let certs: Vec<String> = active
        .iter()
        .map(|r| {
            format!(
                "since {}, certificate sha256 {}",
                utc(r.issued_unix),
                r.fingerprint
            )
        })
        .collect();
    format!("client {client:?} is enrolled ({})", certs.join("; "))
}

/// How to revoke the old certificates of `active` in `dir`, by fingerprint: revoking by
/// name would also revoke the replacement's.
fn revoke_hint(dir: &std::path::Path, active: &[ClientRecord]) -> String {
    let cmds: Vec<String> = active
        .iter()
        .map(|r| {
            format!(
                "`bulwark-repo clients {} --revoke {}`",
                dir.display(),
                r.fingerprint
            )
        })
        .collect();
    format!(
        "the old certificate stays valid until you revoke it with {} (by fingerprint: revoking by name would revoke the new machine's too)",
        cmds.join(" and ")
    )
}

/// Runs `bulwark-repo enroll`: prints the token once; only its hash is stored.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    super::as_repo_owner(&a.dir)?;
    let fp = bulwark_server::ca_fingerprint(&a.dir)?;
    let active = Registry::new(&a.dir)
        .active(&a.client, bulwark_server::now_unix())
        .with_context(|| format!("reading the enrolled clients of {}", a.dir.display()))?;
    if !active.is_empty() {
        let what = enrolled(&a.client, &active);
        if !a.replace {
            bail!(
                "{what}; a machine enrolling with a new token for this name becomes {c:?} and reads and writes {c}'s backups. \
                 To enroll a new machine, choose another --client name. To replace {c}'s machine on purpose, run again with --replace; {}",
                revoke_hint(&a.dir, &active),
                c = a.client,
            );
        }
        eprintln!(
            "warning: {what}; --replace: the machine enrolling with this token becomes {c:?} too and reads and writes {c}'s jobs; {}",
            revoke_hint(&a.dir, &active),
            c = a.client,
        );
    }
    let (token, info) = bulwark_server::create_token(&a.dir, &a.client, a.expires, a.replace)
        .with_context(|| format!("creating an enrollment token in {}", a.dir.display()))?;
    if json {
        let replaces: Vec<&str> = active.iter().map(|r| r.fingerprint.as_str()).collect();
        outln!(
            "{}",
            serde_json::json!({"client": a.client, "token": token, "fingerprint": fp.to_string(),
                               "expires_unix": info.expires_unix, "replaces": replaces})
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
