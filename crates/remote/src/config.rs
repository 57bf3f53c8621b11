//! Where the client keeps its credentials, and how `--repo` names a remote repository.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bulwark_protocol::{Fingerprint, DEFAULT_PORT};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::{RemoteError, Result};

/// A repository service's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteAddr {
    pub host: String,
    pub port: u16,
}

impl RemoteAddr {
    /// Parses `bulwark://HOST[:PORT]`, `HOST:PORT`, `[V6]:PORT` or `HOST` (port 6162).
    pub fn parse(s: &str) -> Result<RemoteAddr> {
        let bad =
            || RemoteError::Usage(format!("{s:?} is not a repository address like host:6162"));
        let rest = s
            .strip_prefix("bulwark://")
            .unwrap_or(s)
            .trim_end_matches('/');
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or_else(bad)?;
            (h, p.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => DEFAULT_PORT,
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
        if host.is_empty() || host.len() > 253 || !host.chars().all(ok) {
            return Err(bad());
        }
        Ok(RemoteAddr {
            host: host.to_string(),
            port,
        })
    }
    /// A folder name for this address.
    fn dir_name(&self) -> String {
        format!("{}_{}", self.host.replace(':', "_"), self.port)
    }
}

impl std::fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What `--repo` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoTarget {
    Local(PathBuf),
    Remote(RemoteAddr),
}

/// Interprets `--repo`: `bulwark://…` is remote; an existing path is local; `HOST:PORT` (a
/// colon followed by a port number, no `/`) is remote; anything else is a local path.
pub fn parse_repo_arg(s: &Path) -> RepoTarget {
    let text = s.to_string_lossy();
    if text.starts_with("bulwark://") {
        if let Ok(a) = RemoteAddr::parse(&text) {
            return RepoTarget::Remote(a);
        }
    }
    if s.exists() || text.contains('/') {
        return RepoTarget::Local(s.to_path_buf());
    }
    match text.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => match RemoteAddr::parse(&text)
        {
            Ok(a) => RepoTarget::Remote(a),
            Err(_) => RepoTarget::Local(s.to_path_buf()),
        },
        _ => RepoTarget::Local(s.to_path_buf()),
    }
}

/// The client's configuration folder: `explicit`, else `$BULWARK_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/bulwark`, else `~/.config/bulwark`.
pub fn config_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("BULWARK_CONFIG_DIR") {
        return p;
    }
    if let Some(p) = var("XDG_CONFIG_HOME") {
        return p.join("bulwark");
    }
    var("HOME")
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".config")
        .join("bulwark")
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoFile {
    address: String,
    client: String,
    fingerprint: String,
    enrolled_unix: i64,
}

/// A client's credentials for one repository: its key and certificate, the pinned CA.
pub struct Credentials {
    pub dir: PathBuf,
    pub addr: RemoteAddr,
    pub client: String,
    pub fingerprint: Fingerprint,
    pub key: PrivateKeyDer<'static>,
    pub cert: CertificateDer<'static>,
    pub ca: CertificateDer<'static>,
}

fn creds_dir(config: &Path, addr: &RemoteAddr) -> PathBuf {
    config.join("repositories").join(addr.dir_name())
}

/// The client name this machine is enrolled as with `addr` in `config`, if it is.
pub fn enrolled_as(config: &Path, addr: &RemoteAddr) -> Option<String> {
    let text = read_small(&creds_dir(config, addr).join("repository.toml")).ok()?;
    toml::from_str::<RepoFile>(&String::from_utf8_lossy(&text))
        .ok()
        .map(|r| r.client)
}

/// Enrolling again with the same repository replaces this machine's identity there: the
/// files of the previous one are moved into `previous-<unix time>/` beside them (0700), not
/// overwritten, so a mistaken enrollment loses no key whose certificate is still valid.
fn keep_previous(dir: &Path) -> Result<()> {
    const FILES: [&str; 4] = ["repository.toml", "client.key", "client.crt", "ca.crt"];
    if !dir.join("repository.toml").exists() {
        return Ok(());
    }
    let keep = dir.join(format!(
        "previous-{}-{}",
        bulwark_time::UnixTime::now().secs(),
        std::process::id()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&keep)
        .map_err(RemoteError::io(&keep, "creating"))?;
    for f in FILES {
        let from = dir.join(f);
        if from.exists() {
            std::fs::rename(&from, keep.join(f))
                .map_err(RemoteError::io(&from, "keeping the previous identity"))?;
        }
    }
    let d = std::fs::File::open(dir).map_err(RemoteError::io(dir, "opening folder"))?;
    d.sync_all()
        .map_err(RemoteError::io(dir, "fsyncing folder"))
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(RemoteError::io(path, "reading"))?;
    if meta.len() > 64 * 1024 {
        return Err(RemoteError::Usage(format!(
            "{} is too large to be a credential file",
            path.display()
        )));
    }
    std::fs::read(path).map_err(RemoteError::io(path, "reading"))
}

/// Writes a private file atomically with mode 0600 (temp, fsync, rename, fsync folder).
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(RemoteError::io(&tmp, "creating"))?;
        f.write_all(data)
            .map_err(RemoteError::io(&tmp, "writing"))?;
        f.sync_all().map_err(RemoteError::io(&tmp, "fsyncing"))?;
        std::fs::rename(&tmp, path).map_err(RemoteError::io(path, "renaming into place"))?;
        let d = std::fs::File::open(dir).map_err(RemoteError::io(dir, "opening folder"))?;
        d.sync_all()
            .map_err(RemoteError::io(dir, "fsyncing folder"))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

impl Credentials {
    /// Stores credentials for `addr` in `config` (folder 0700, files 0600).
    pub fn save(
        config: &Path,
        addr: &RemoteAddr,
        client: &str,
        fingerprint: Fingerprint,
        key_pem: &str,
        cert_der: &[u8],
        ca_der: &[u8],
    ) -> Result<PathBuf> {
        let dir = creds_dir(config, addr);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(RemoteError::io(&dir, "creating"))?;
        keep_previous(&dir)?;
        write_private(&dir.join("client.key"), key_pem.as_bytes())?;
        write_private(
            &dir.join("client.crt"),
            pem("CERTIFICATE", cert_der).as_bytes(),
        )?;
        write_private(&dir.join("ca.crt"), pem("CERTIFICATE", ca_der).as_bytes())?;
        let rf = RepoFile {
            address: addr.to_string(),
            client: client.to_string(),
            fingerprint: fingerprint.to_string(),
            enrolled_unix: bulwark_time::UnixTime::now().secs(),
        };
        let text = toml::to_string(&rf).map_err(|e| RemoteError::Usage(e.to_string()))?;
        write_private(&dir.join("repository.toml"), text.as_bytes())?;
        Ok(dir)
    }

    /// Loads the credentials for `addr` from `config`.
    pub fn load(config: &Path, addr: &RemoteAddr) -> Result<Credentials> {
        let dir = creds_dir(config, addr);
        if !dir.join("repository.toml").exists() {
            return Err(RemoteError::NotEnrolled {
                addr: addr.to_string(),
                dir,
            });
        }
        let rf: RepoFile = toml::from_str(&String::from_utf8_lossy(&read_small(
            &dir.join("repository.toml"),
        )?))
        .map_err(|e| {
            RemoteError::Usage(format!("{}: {e}", dir.join("repository.toml").display()))
        })?;
        let bad = |what: &str, e: String| {
            RemoteError::Usage(format!("{} in {}: {e}", what, dir.display()))
        };
        let key = PrivateKeyDer::from_pem_slice(&read_small(&dir.join("client.key"))?)
            .map_err(|e| bad("client.key", e.to_string()))?;
        let cert = CertificateDer::from_pem_slice(&read_small(&dir.join("client.crt"))?)
            .map_err(|e| bad("client.crt", e.to_string()))?;
        let ca = CertificateDer::from_pem_slice(&read_small(&dir.join("ca.crt"))?)
            .map_err(|e| bad("ca.crt", e.to_string()))?;
        let fingerprint: Fingerprint = rf
            .fingerprint
            .parse()
            .map_err(|e: String| bad("repository.toml", e))?;
        if Fingerprint::of(&ca) != fingerprint {
            return Err(bad(
                "ca.crt",
                "does not match the pinned fingerprint".into(),
            ));
        }
        Ok(Credentials {
            dir,
            addr: addr.clone(),
            client: rf.client,
            fingerprint,
            key,
            cert,
            ca,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_argument_dispatch() {
        let remote = |s: &str| match parse_repo_arg(Path::new(s)) {
            RepoTarget::Remote(a) => Some(a.to_string()),
            RepoTarget::Local(_) => None,
        };
        assert_eq!(
            remote("bulwark://backup.example:7000").as_deref(),
            Some("backup.example:7000")
        );
        assert_eq!(
            remote("bulwark://10.0.0.5").as_deref(),
            Some("10.0.0.5:6162")
        );
        assert_eq!(remote("127.0.0.1:6162").as_deref(), Some("127.0.0.1:6162"));
        assert_eq!(remote("repo"), None);
        assert_eq!(remote("./a:1"), None);
        assert_eq!(remote("/srv/repo"), None);
        assert_eq!(remote("host:notaport"), None);
    }

    #[test]
    fn pem_encoding_round_trips() {
        let der: Vec<u8> = (0..=255u8).collect();
        let text = pem("CERTIFICATE", &der);
        assert_eq!(
            CertificateDer::from_pem_slice(text.as_bytes())
                .unwrap()
                .as_ref(),
            &der[..]
        );
    }
}
