//! The repository's certificate authority: created at `bulwark-repo init`, its keys never leave
//! the repository host. It signs one server certificate and one certificate per enrolled client.

use std::path::{Path, PathBuf};

use bulwark_protocol::{Fingerprint, SERVER_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};

use crate::files::{read_bounded, write_private};
use crate::{Result, ServerError};

const MAX_PEM: u64 = 64 * 1024;
const CA_YEARS: i64 = 30;
const SERVER_YEARS: i64 = 10;
/// Client certificates live this long; revocation covers a lost client before that.
pub(crate) const CLIENT_DAYS: i64 = 5 * 365;

/// Where the service keeps its network state, under `REPO/net/` (mode 0700, files 0600).
#[derive(Clone, Debug)]
pub struct NetPaths {
    pub dir: PathBuf,
}

impl NetPaths {
    /// The network folder of a repository.
    pub fn new(repo: &Path) -> Self {
        NetPaths {
            dir: repo.join("net"),
        }
    }
    /// CA private key (PEM).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// Server private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// Server certificate (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    /// One record per issued client certificate.
    pub fn clients(&self) -> PathBuf {
        self.dir.join("clients")
    }
    /// Enrollment tokens (hashes only).
    pub fn tokens(&self) -> PathBuf {
        self.dir.join("tokens")
    }
    /// Which client owns which job.
    pub fn owners(&self) -> PathBuf {
        self.dir.join("owners")
    }
}

fn offset(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> Result<SerialNumber> {
    let mut s = [0u8; 16];
    getrandom::getrandom(&mut s).map_err(|e| ServerError::Config(format!("no randomness: {e}")))?;
    s[0] &= 0x7f; // positive
    s[0] |= 0x01; // no leading zero byte
    Ok(SerialNumber::from_slice(&s))
}

fn mkdir_private(d: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(d)
        .map_err(ServerError::io(d, "creating"))
}

/// Creates the CA and the server certificate in `REPO/net/` and returns the CA fingerprint.
/// `names` are extra DNS names or IP addresses for the server certificate.
pub fn init_pki(repo: &Path, repo_id: &str, names: &[String]) -> Result<Fingerprint> {
    let p = NetPaths::new(repo);
    mkdir_private(&p.dir)?;
    for d in [p.clients(), p.tokens(), p.owners()] {
        mkdir_private(&d)?;
    }
    let now = crate::now_unix();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("Bulwark repository CA {repo_id}"),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = offset(now - 3600);
    ca.not_after = offset(now + CA_YEARS * 365 * 86_400);
    ca.serial_number = Some(random_serial()?);
    let ca_cert = ca.self_signed(&ca_key)?;

    let srv_key = KeyPair::generate()?;
    let mut sans = vec![SERVER_NAME.to_string()];
    sans.extend(names.iter().cloned());
    let mut srv = CertificateParams::new(sans)?;
    srv.distinguished_name = rcgen::DistinguishedName::new();
    srv.distinguished_name
        .push(DnType::CommonName, format!("Bulwark repository {repo_id}"));
    srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    srv.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    srv.use_authority_key_identifier_extension = true;
    srv.not_before = offset(now - 3600);
    srv.not_after = offset(now + SERVER_YEARS * 365 * 86_400);
    srv.serial_number = Some(random_serial()?);
    let srv_cert = srv.signed_by(&srv_key, &ca_cert, &ca_key)?;

    write_private(&p.ca_key(), ca_key.serialize_pem().as_bytes(), true)?;
    write_private(&p.ca_cert(), ca_cert.pem().as_bytes(), true)?;
    write_private(&p.server_key(), srv_key.serialize_pem().as_bytes(), true)?;
    write_private(&p.server_cert(), srv_cert.pem().as_bytes(), true)?;
    Ok(Fingerprint::of(ca_cert.der()))
}

/// Reads one PEM certificate.
pub(crate) fn load_cert(path: &Path) -> Result<CertificateDer<'static>> {
    let pem = read_bounded(path, MAX_PEM)?;
    CertificateDer::from_pem_slice(&pem)
        .map_err(|e| ServerError::Config(format!("{}: not a PEM certificate: {e}", path.display())))
}

/// Reads one PEM private key.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read_bounded(path, MAX_PEM)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| ServerError::Config(format!("{}: not a PEM private key: {e}", path.display())))
}

/// The fingerprint clients pin, from the repository's CA certificate.
pub fn ca_fingerprint(repo: &Path) -> Result<Fingerprint> {
    let p = NetPaths::new(repo);
    let ca = load_cert(&p.ca_cert()).map_err(|e| match e {
        ServerError::Io(io) if io.source.kind() == std::io::ErrorKind::NotFound => {
            ServerError::Config(format!(
                "{} has no network identity ({} missing): it was created without one; give it one with `bulwark-repo init {} --add-network`",
                repo.display(),
                p.ca_cert().display(),
                repo.display()
            ))
        }
        e => e,
    })?;
    Ok(Fingerprint::of(&ca))
}

/// A certificate issued to a client.
pub(crate) struct Issued {
    pub der: Vec<u8>,
    pub serial: String,
    pub not_after: i64,
}

/// Signs a client certificate for `client` over the public key of `csr_der` (whose own
/// signature is checked). Nothing else of the request is used: the name comes from the token.
pub(crate) fn issue_client_cert(p: &NetPaths, csr_der: &[u8], client: &str) -> Result<Issued> {
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
        csr_der.to_vec(),
    ))?;
    let ca_der = load_cert(&p.ca_cert())?;
    let ca_key_pem = String::from_utf8(read_bounded(&p.ca_key(), MAX_PEM)?)
        .map_err(|_| ServerError::Config("CA key is not PEM text".into()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let ca = CertificateParams::from_ca_cert_der(&ca_der)?.self_signed(&ca_key)?;
    let now = crate::now_unix();
    let not_after = now + CLIENT_DAYS * 86_400;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, client);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(now - 3600);
    params.not_after = offset(not_after);
    let serial = random_serial()?;
    params.serial_number = Some(serial.clone());
    let cert = params.signed_by(&csr.public_key, &ca, &ca_key)?;
    Ok(Issued {
        der: cert.der().to_vec(),
        serial: hex::encode(serial.to_bytes()),
        not_after,
    })
}
