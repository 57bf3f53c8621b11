//! Client TLS: TLS 1.3 only, the repository CA pinned. During enrollment the CA is not yet
//! stored: the server's chain must contain a CA whose SHA-256 is the fingerprint the
//! administrator gave, and the server certificate must chain to it.

use std::sync::{Arc, Mutex};

use bulwark_protocol::{Fingerprint, ALPN_ENROLL, ALPN_SESSION};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::{Credentials, Result};

/// The ring provider with AES-128-GCM first: the fastest suite with AES-NI.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| u8::from(s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    Arc::new(p)
}

/// Configuration of an authenticated session.
pub(crate) fn session_config(c: &Credentials) -> Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.ca.clone())?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![c.cert.clone()], c.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN_SESSION.to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts the server when its chain holds the CA with the pinned fingerprint.
#[derive(Debug)]
pub(crate) struct PinnedCa {
    pub fp: Fingerprint,
    provider: Arc<CryptoProvider>,
    pub seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| Fingerprint::of(c) == self.fp) else {
            return Err(rustls::Error::General(format!(
                "the repository's CA is not the one with fingerprint {}: wrong address, wrong fingerprint, or someone in between",
                self.fp
            )));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        v.verify_server_cert(end_entity, &[], server_name, ocsp, now)?;
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(ca.clone().into_owned());
        }
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Configuration of an enrollment session, and the verifier that remembers the CA it saw.
pub(crate) fn enroll_config(fp: Fingerprint) -> Result<(Arc<ClientConfig>, Arc<PinnedCa>)> {
    let provider = provider();
    let pin = Arc::new(PinnedCa {
        fp,
        provider: provider.clone(),
        seen: Mutex::new(None),
    });
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(pin.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_ENROLL.to_vec()];
    Ok((Arc::new(cfg), pin))
}
