//! `bulwark-repo clients`: list enrolled client certificates, revoke them.

use std::path::PathBuf;

use anyhow::bail;
use bulwark_server::Registry;

/// Arguments of `bulwark-repo clients`.
#[derive(clap::Args)]
pub struct Args {
    /// The repository folder.
    dir: PathBuf,
    /// Revoke every certificate of this client name (or the one with this fingerprint);
    /// it is refused at the TLS handshake from its next connection on.
    #[arg(long)]
    revoke: Option<String>,
}

/// Unix seconds as the date `YYYY-MM-DD`.
pub(crate) fn utc(secs: i64) -> String {
    bulwark_time::UnixTime(secs).date().to_string()
}

/// Runs `bulwark-repo clients`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
    super::as_repo_owner(&a.dir)?;
    bulwark_server::ca_fingerprint(&a.dir)?;
    let reg = Registry::new(&a.dir);
    if let Some(who) = &a.revoke {
        let n = reg.revoke(who, bulwark_server::now_unix())?;
        if n == 0 {
            bail!(
                "no unrevoked certificate of {who:?}; `bulwark-repo clients {}` lists them",
                a.dir.display()
            );
        }
        if !json {
            outln!("revoked {n} certificate(s) of {who}");
        }
    }
    let list = reg.list()?;
    let now = bulwark_server::now_unix();
    // What the service does with the certificate now: it refuses a revoked or expired one.
    let status = |r: &bulwark_server::ClientRecord| match r.revoked_unix {
        Some(t) => format!("REVOKED {}", utc(t)),
        None if r.not_after_unix <= now => "EXPIRED (enroll it again)".into(),
        None => "active".into(),
    };
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|r| serde_json::json!({"client": r.name, "fingerprint": r.fingerprint, "serial": r.serial,
                "issued_unix": r.issued_unix, "not_after_unix": r.not_after_unix, "revoked_unix": r.revoked_unix,
                "status": if r.revoked_unix.is_some() { "revoked" } else if r.not_after_unix <= now { "expired" } else { "active" }}))
            .collect();
        outln!("{}", serde_json::json!({ "clients": v }));
    } else if list.is_empty() {
        outln!(
            "no clients enrolled; create a token with `bulwark-repo enroll {} --client NAME`",
            a.dir.display()
        );
    } else {
        for r in &list {
            outln!(
                "{:20} issued {}  expires {}  {}  sha256 {}",
                r.name,
                utc(r.issued_unix),
                utc(r.not_after_unix),
                status(r),
                r.fingerprint
            );
        }
    }
    Ok(0)
}
