//! Enrollment: generate a key here, send a CSR with the single-use token, store the issued
//! certificate, the key and the pinned CA (mode 0600).

use std::path::{Path, PathBuf};

use bulwark_protocol::{Fingerprint, Msg};
use rcgen::{CertificateParams, KeyPair};

use crate::{Conn, Credentials, RemoteAddr, RemoteError, Result};

/// What enrollment produced.
#[derive(Debug)]
pub struct Enrolled {
    pub client: String,
    pub dir: PathBuf,
    pub fingerprint: Fingerprint,
}

/// Enrolls with the repository at `addr` whose CA has fingerprint `fp`, using `token`.
pub fn enroll(
    config_dir: &Path,
    addr: &RemoteAddr,
    token: &str,
    fp: Fingerprint,
) -> Result<Enrolled> {
    let key =
        KeyPair::generate().map_err(|e| RemoteError::Usage(format!("key generation: {e}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bulwark client");
    let csr = params
        .serialize_request(&key)
        .map_err(|e| RemoteError::Usage(format!("certificate request: {e}")))?;
    let (cfg, pin) = crate::tls::enroll_config(fp)?;
    let mut conn = Conn::open(addr, cfg)?;
    conn.send(&Msg::Enroll {
        token: token.to_string(),
        csr_der: csr.der().to_vec(),
    })?;
    let (client, cert_der, ca_der) = match conn.recv()? {
        Msg::Enrolled {
            client,
            cert_der,
            ca_der,
        } => (client, cert_der, ca_der),
        m => return Err(m.unexpected("Enrolled").into()),
    };
    conn.close();
    let seen = pin.seen.lock().ok().and_then(|s| s.clone());
    if Fingerprint::of(&ca_der) != fp || seen.as_deref() != Some(&ca_der[..]) {
        return Err(RemoteError::Usage(
            "the repository sent a CA that does not match the pinned fingerprint; nothing was stored".into(),
        ));
    }
    let dir = Credentials::save(
        config_dir,
        addr,
        &client,
        fp,
        &key.serialize_pem(),
        &cert_der,
        &ca_der,
    )?;
    Ok(Enrolled {
        client,
        dir,
        fingerprint: fp,
    })
}
