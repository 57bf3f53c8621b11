//! The registry of issued client certificates, revocations, and which client owns which job.
//!
//! One small file per certificate (`net/clients/<sha256>.toml`) and one per job
//! (`net/owners/<job>`); every handshake reads the certificate's record, so a revocation takes
//! effect on the next connection without restarting the service.

use std::path::{Path, PathBuf};

use bulwark_protocol::Fingerprint;
use serde::{Deserialize, Serialize};

use crate::files::{is_not_found, read_bounded, write_private};
use crate::pki::NetPaths;
use crate::{Result, ServerError};

/// One issued client certificate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientRecord {
    /// The client's name: its identity in logs and restore-point metadata.
    pub name: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    pub serial: String,
    pub issued_unix: i64,
    pub not_after_unix: i64,
    /// Set when revoked; a revoked certificate is refused at the TLS handshake.
    #[serde(default)]
    pub revoked_unix: Option<i64>,
}

/// Access to the registry of a repository.
#[derive(Clone, Debug)]
pub struct Registry {
    paths: NetPaths,
}

impl Registry {
    /// The registry of the repository at `repo`.
    pub fn new(repo: &Path) -> Self {
        Registry {
            paths: NetPaths::new(repo),
        }
    }

    fn record_path(&self, fp: &Fingerprint) -> PathBuf {
        self.paths.clients().join(format!("{}.toml", fp.to_hex()))
    }

    /// The record of a certificate, if this repository issued it.
    pub fn lookup(&self, fp: &Fingerprint) -> Result<Option<ClientRecord>> {
        let path = self.record_path(fp);
        match read_bounded(&path, 4096) {
            Ok(b) => Ok(Some(toml::from_str(&String::from_utf8_lossy(&b)).map_err(
                |e| ServerError::Config(format!("{}: {e}", path.display())),
            )?)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records a newly issued certificate.
    pub fn add(&self, rec: &ClientRecord) -> Result<()> {
        let fp: Fingerprint = rec.fingerprint.parse().map_err(ServerError::Config)?;
        let text = toml::to_string(rec).map_err(|e| ServerError::Config(e.to_string()))?;
        write_private(&self.record_path(&fp), text.as_bytes(), true)
    }

    /// Every issued certificate, sorted by name then issue time.
    pub fn list(&self) -> Result<Vec<ClientRecord>> {
        let dir = self.paths.clients();
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&dir).map_err(ServerError::io(&dir, "listing"))? {
            let ent = ent.map_err(ServerError::io(&dir, "listing"))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".toml") else {
                continue;
            };
            let Ok(fp) = hex.parse::<Fingerprint>() else {
                continue;
            };
            if let Some(r) = self.lookup(&fp)? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (&a.name, a.issued_unix).cmp(&(&b.name, b.issued_unix)));
        Ok(out)
    }

    /// The certificates of `name` that a handshake would accept at `now`: not revoked and
    /// not expired. A name with none (never enrolled, only revoked or expired certificates,
    /// or tokens not used yet) is free to enroll.
    pub fn active(&self, name: &str, now: i64) -> Result<Vec<ClientRecord>> {
        if !self.paths.clients().is_dir() {
            return Ok(Vec::new());
        }
        let mut out = self.list()?;
        out.retain(|r| r.name == name && r.revoked_unix.is_none() && r.not_after_unix > now);
        Ok(out)
    }

    /// Revokes every certificate of `name` (or the one whose fingerprint is `name`); returns
    /// how many were newly revoked.
    pub fn revoke(&self, name_or_fp: &str, now: i64) -> Result<usize> {
        let fp = name_or_fp.parse::<Fingerprint>().ok();
        let mut n = 0;
        for mut r in self.list()? {
            let hit = r.name == name_or_fp || fp.is_some_and(|f| f.to_hex() == r.fingerprint);
            if hit && r.revoked_unix.is_none() {
                r.revoked_unix = Some(now);
                let text = toml::to_string(&r).map_err(|e| ServerError::Config(e.to_string()))?;
                let f: Fingerprint = r.fingerprint.parse().map_err(ServerError::Config)?;
                write_private(&self.record_path(&f), text.as_bytes(), false)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn owner_path(&self, job: &str) -> PathBuf {
        self.paths.owners().join(job)
    }

    /// The client that owns `job`: the owner file, or else the client recorded in the job's
    /// newest restore point (the files are the truth). `None` for a job no client owns.
    pub fn owner(
        &self,
        repo: &bulwark_repository::Repository,
        job: &str,
    ) -> Result<Option<String>> {
        match read_bounded(&self.owner_path(job), 256) {
            Ok(b) => return Ok(Some(String::from_utf8_lossy(&b).trim().to_string())),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(repo
            .latest_point(job)?
            .map(|p| p.meta.client)
            .filter(|c| !c.is_empty()))
    }

    /// Makes `client` the owner of `job` unless another client owns it; returns whether
    /// `client` owns it now. The claim is an exclusive create, so two clients racing for a
    /// new job cannot both win.
    pub fn claim(
        &self,
        repo: &bulwark_repository::Repository,
        job: &str,
        client: &str,
    ) -> Result<bool> {
        Ok(self.claim_job(repo, job, client)? != Claim::Refused)
    }

    /// [`Registry::claim`], saying whether the name was newly claimed.
    pub fn claim_job(
        &self,
        repo: &bulwark_repository::Repository,
        job: &str,
        client: &str,
    ) -> Result<Claim> {
        let mine = |o: Option<String>| match o.as_deref() == Some(client) {
            true => Claim::Owned,
            false => Claim::Refused,
        };
        if let Some(o) = self.owner(repo, job)? {
            return Ok(mine(Some(o)));
        }
        if !repo.scan_job(job)?.points.is_empty() {
            // Points written locally (no client): not any network client's to extend.
            return Ok(Claim::Refused);
        }
        match write_private(
            &self.owner_path(job),
            format!("{client}\n").as_bytes(),
            true,
        ) {
            Ok(()) => Ok(Claim::New),
            Err(ServerError::Io(io)) if io.source.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(mine(self.owner(repo, job)?))
            }
            Err(e) => Err(e),
        }
    }

    /// Gives up `client`'s claim on `job` if the job has no file at all (a backup that
    /// claimed the name and never finished a restore point); returns whether it did.
    pub fn release_unused(
        &self,
        repo: &bulwark_repository::Repository,
        job: &str,
        client: &str,
    ) -> Result<bool> {
        let path = self.owner_path(job);
        match read_bounded(&path, 256) {
            Ok(b) if String::from_utf8_lossy(&b).trim() == client => {}
            Ok(_) => return Ok(false),
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        if !repo.job_is_unused(job)? {
            return Ok(false);
        }
        std::fs::remove_file(&path).map_err(ServerError::io(&path, "removing"))?;
        bulwark_repository::fsync_dir(&self.paths.owners())?;
        Ok(true)
    }

    /// Every job claim: (job, client, when the claim was made, unix seconds).
    pub fn claims(&self) -> Result<Vec<(String, String, i64)>> {
        let dir = self.paths.owners();
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(ServerError::io(&dir, "listing")(e)),
        };
        for ent in rd {
            let ent = ent.map_err(ServerError::io(&dir, "listing"))?;
            let job = ent.file_name().to_string_lossy().into_owned();
            if bulwark_format::validate_name("job", &job).is_err() {
                continue; // temporary files of write_private
            }
            let path = ent.path();
            let b = match read_bounded(&path, 256) {
                Ok(b) => b,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e),
            };
            let when = ent
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .map_or(0, |t| bulwark_time::UnixTime::from_system(t).secs());
            out.push((job, String::from_utf8_lossy(&b).trim().to_string(), when));
        }
        Ok(out)
    }
}

/// The outcome of claiming a job name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The client already owned the job.
    Owned,
    /// The name was free and is now the client's.
    New,
    /// Another client (or a local backup) owns it.
    Refused,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, fp: u8, not_after: i64, revoked: Option<i64>) -> ClientRecord {
        ClientRecord {
            name: name.into(),
            fingerprint: hex::encode([fp; 32]),
            serial: "01".into(),
            issued_unix: 100,
            not_after_unix: not_after,
            revoked_unix: revoked,
        }
    }

    #[test]
    fn only_unrevoked_unexpired_certificates_of_the_name_are_active() {
        let d = tempfile::tempdir().unwrap();
        let reg = Registry::new(d.path());
        assert!(reg.active("c1", 1000).unwrap().is_empty(), "no net/ at all");
        std::fs::create_dir_all(NetPaths::new(d.path()).clients()).unwrap();
        reg.add(&record("c1", 1, 2000, Some(500))).unwrap();
        reg.add(&record("c1", 2, 900, None)).unwrap();
        reg.add(&record("c2", 3, 2000, None)).unwrap();
        assert!(reg.active("c1", 1000).unwrap().is_empty());
        reg.add(&record("c1", 4, 2000, None)).unwrap();
        let a = reg.active("c1", 1000).unwrap();
        assert_eq!(a, vec![record("c1", 4, 2000, None)]);
        assert!(
            reg.active("c1", 2000).unwrap().is_empty(),
            "expired at not_after"
        );
    }
}
