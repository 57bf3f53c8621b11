//! `bulwark-immutctl`: a shell client for the immutability service, run as the service user
//! (or root for `status`, `query`, `list` and `time …`). Prints `key=value` lines.
//!
//! Exit codes: 0 ok, 2 operational error, 3 the service refused the request.
//!
//! Standard output never panics, by the rule of every Bulwark program (`bulwark_stdout`):
//! when it is a pipe whose reader has gone (`bulwark-immutctl … status | head -1`), the rest
//! of the answer is dropped and the exit code is the request's own (0 or 3). Any other write
//! error (a full disk) is said once on stderr and the exit code is 2: the answer did not
//! arrive.

use std::path::{Path, PathBuf};

use bulwark_format::PointId;
use bulwark_immut_msg::{ClientError, FileInfo, ImmutClient, Target};

const USAGE: &str = "usage: bulwark-immutctl --socket PATH <command>

commands:
  seal PATH                  seal REPO/incoming/<point>.bwrp
  seal-point REPO POINT      the same, by repository and point id
  query TARGET               show a sealed file (TARGET: a sealed path or a point id)
  extend TARGET UNIX_SECS    raise a file's expiry
  delete TARGET              delete an expired file
  list [REPO]                every ledger entry (of one guarded repository), blank-line separated
  status                     the service's clock and counters
  time preview               (root) what `time accept` would unlock now
  time accept --yes          (root) accept the current wall-clock time (see the preview first)";

use bulwark_stdout::outln;

fn target(s: &str) -> Target {
    match s.parse::<PointId>() {
        Ok(p) if !s.contains('/') => Target::Point(p),
        _ => Target::Path(PathBuf::from(s)),
    }
}

fn print_info(i: &FileInfo) {
    outln!("sealed_path={}", i.sealed_path.display());
    outln!("job={}", i.job);
    outln!("chain={}", i.chain);
    outln!("point={}", i.point);
    outln!("root_digest={}", i.root_digest);
    outln!("size={}", i.size);
    outln!("inode={}", i.inode);
    outln!("sealed_unix={}", i.sealed_unix);
    outln!("expiry_unix={}", i.expiry_unix);
    outln!("requested_expiry_unix={}", i.requested_expiry_unix);
    outln!("state={}", i.state.as_str());
}

fn run(socket: &Path, words: &[&str]) -> Result<(), ClientError> {
    let mut c = ImmutClient::connect(socket)?;
    match words {
        ["seal", p] => print_info(&c.seal_path(Path::new(p))?),
        ["seal-point", repo, point] => {
            let point = point.parse::<PointId>().map_err(|e| ClientError::Refused {
                request: "seal",
                code: bulwark_immut_msg::ErrorCode::BadRequest,
                message: e,
            })?;
            print_info(&c.seal(Path::new(repo), point)?)
        }
        ["query", t] => print_info(&c.query(target(t))?),
        ["extend", t, until] => {
            let until = until.parse::<i64>().unwrap_or(i64::MIN);
            let (i, capped) = c.extend(target(t), until)?;
            print_info(&i);
            outln!("capped={capped}");
        }
        ["delete", t] => outln!("deleted={}", c.delete(target(t))?.display()),
        ["status"] => {
            let s = c.status()?;
            outln!("trusted_unix={}", s.trusted_unix);
            outln!("wall_unix={}", s.wall_unix);
            outln!("unlocks_frozen={}", s.unlocks_frozen);
            outln!("alert={}", s.alert);
            outln!("files_locked={}", s.files_locked);
            outln!("bytes_locked={}", s.bytes_locked);
            outln!("files_unlocked={}", s.files_unlocked);
            outln!("next_expiry_unix={}", s.next_expiry_unix);
            outln!("wall_step_secs={}", s.wall_unix - s.trusted_unix);
            outln!("audit_problem={}", s.audit_problem);
            outln!("connections_open={}", s.connections_open);
            outln!("refused_strangers={}", s.refused_strangers);
            outln!("refused_busy={}", s.refused_busy);
            outln!("requests_timed_out={}", s.requests_timed_out);
            outln!("protection_alerts={}", s.protection_alerts.len());
            for a in &s.protection_alerts {
                outln!("protection_alert={a}");
            }
        }
        ["list"] | ["list", _] => {
            let repo = words.get(1).copied().unwrap_or("");
            for (n, i) in c.list(Path::new(repo))?.iter().enumerate() {
                if n > 0 {
                    outln!();
                }
                print_info(i);
            }
        }
        ["time", "preview"] => {
            let p = c.time_preview()?;
            outln!("trusted_unix={}", p.trusted_unix);
            outln!("wall_unix={}", p.wall_unix);
            outln!("accepted_unix={}", p.accepted_unix);
            outln!("files_unlocking={}", p.files_unlocking);
            outln!("bytes_unlocking={}", p.bytes_unlocking);
            outln!("earliest_expiry_unix={}", p.earliest_expiry_unix);
            outln!("alert={}", p.alert);
        }
        ["time", "accept", "--yes"] => outln!("trusted_unix={}", c.time_accept()?),
        ["time", "accept"] => {
            eprintln!("bulwark-immutctl: `time accept` unlocks what the preview lists; run `time preview` first, then `time accept --yes`");
            std::process::exit(2);
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, rest) = match args.as_slice() {
        [flag, s, rest @ ..] if flag == "--socket" => (PathBuf::from(s), rest),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    match run(&socket, &words) {
        Ok(()) => bulwark_stdout::exit(0),
        Err(ClientError::Refused { code, message, .. }) => {
            outln!("refused={code:?}");
            outln!("message={message}");
            bulwark_stdout::exit(3);
        }
        Err(e) => {
            eprintln!("bulwark-immutctl: {e}");
            std::process::exit(2);
        }
    }
}
