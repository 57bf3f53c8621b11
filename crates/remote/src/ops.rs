//! Listing and verifying the client's own jobs on the repository.

use std::path::Path;

use bulwark_protocol::{Msg, PointSummary, VerifyReport};

use crate::{Conn, RemoteAddr, RemoteError, Result};

/// Most restore points accepted for one job (a bound on a misbehaving server).
const MAX_POINTS: usize = 1 << 20;

/// The jobs this client owns in the repository.
pub fn list_jobs(config_dir: &Path, addr: &RemoteAddr) -> Result<Vec<String>> {
    let mut c = Conn::session(config_dir, addr)?;
    c.send(&Msg::ListJobs)?;
    let jobs = match c.recv()? {
        Msg::Jobs { jobs } => jobs,
        m => return Err(m.unexpected("Jobs").into()),
    };
    c.close();
    Ok(jobs)
}

/// The restore points of one of this client's jobs, oldest first.
pub fn list_points(config_dir: &Path, addr: &RemoteAddr, job: &str) -> Result<Vec<PointSummary>> {
    let mut c = Conn::session(config_dir, addr)?;
    let out = points_on(&mut c, job)?;
    c.close();
    Ok(out)
}

/// The restore points of one of this client's jobs, oldest first, asked on the open session `c`.
pub fn points_on(c: &mut Conn, job: &str) -> Result<Vec<PointSummary>> {
    c.send(&Msg::ListPoints {
        job: job.to_string(),
    })?;
    let mut out = Vec::new();
    loop {
        match c.recv()? {
            Msg::Points { last, points } => {
                out.extend(points);
                if out.len() > MAX_POINTS {
                    return Err(RemoteError::Usage(
                        "server sent too many restore points".into(),
                    ));
                }
                if last {
                    return Ok(out);
                }
            }
            m => return Err(m.unexpected("Points").into()),
        }
    }
}

/// Has the server re-read every stored block of this client's jobs (or one of them).
pub fn verify_remote(
    config_dir: &Path,
    addr: &RemoteAddr,
    job: Option<&str>,
) -> Result<VerifyReport> {
    let mut c = Conn::session(config_dir, addr)?;
    c.send(&Msg::Verify {
        job: job.map(str::to_string),
    })?;
    let r = match c.recv()? {
        Msg::VerifyReport(r) => r,
        m => return Err(m.unexpected("VerifyReport").into()),
    };
    c.close();
    Ok(r)
}
