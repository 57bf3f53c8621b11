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

fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    // Civil-from-days, as in the client's output.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Runs `bulwark-repo clients`.
pub fn run(a: Args, json: bool) -> anyhow::Result<i32> {
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
            println!("revoked {n} certificate(s) of {who}");
        }
    }
    let list = reg.list()?;
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|r| serde_json::json!({"client": r.name, "fingerprint": r.fingerprint, "serial": r.serial,
                "issued_unix": r.issued_unix, "not_after_unix": r.not_after_unix, "revoked_unix": r.revoked_unix}))
            .collect();
        println!("{}", serde_json::json!({ "clients": v }));
    } else if list.is_empty() {
        println!(
            "no clients enrolled; create a token with `bulwark-repo enroll {} --client NAME`",
            a.dir.display()
        );
    } else {
        for r in &list {
            println!(
                "{:20} issued {}  expires {}  {}  sha256 {}",
                r.name,
                utc(r.issued_unix),
                utc(r.not_after_unix),
                match r.revoked_unix {
                    Some(t) => format!("REVOKED {}", utc(t)),
                    None => "active".into(),
                },
                r.fingerprint
            );
        }
    }
    Ok(0)
}
