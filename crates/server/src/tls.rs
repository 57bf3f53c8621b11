//! TLS 1.3 configurations of the service and the client-certificate check: the chain must lead
//! to the repository CA, and the certificate must be one this repository issued and has not
//! revoked. A revoked client is refused during the handshake.

use std::sync::Arc;

use bulwark_protocol::{Fingerprint, ALPN_ENROLL, ALPN_SESSION};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use crate::pki::{load_cert, load_key, NetPaths};
use crate::{Registry, Result};

/// The ring provider with AES-128-GCM first: the fastest suite with AES-NI.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| u8::from(s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    Arc::new(p)
}

#[derive(Debug)]
struct RegistryVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    registry: Registry,
}

impl ClientCertVerifier for RegistryVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| tracing::warn!("refused client certificate: {e}"))?;
        let fp = Fingerprint::of(end_entity);
        match self.registry.lookup(&fp) {
            Ok(Some(r)) if r.revoked_unix.is_none() => Ok(ClientCertVerified::assertion()),
            Ok(Some(r)) => {
                tracing::warn!(client = %r.name, fingerprint = %fp, "refused revoked client certificate");
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            Ok(None) => {
                tracing::warn!(fingerprint = %fp, "refused a certificate this repository has no record of");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            Err(e) => {
                tracing::error!("client registry unreadable: {e}");
                Err(rustls::Error::General("client registry unreadable".into()))
            }
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The two server configurations: authenticated sessions (client certificate mandatory) and
/// enrollment (no client certificate; only `Enroll` is served).
pub(crate) struct Configs {
    pub session: Arc<ServerConfig>,
    pub enroll: Arc<ServerConfig>,
}

pub(crate) fn configs(repo: &std::path::Path) -> Result<Configs> {
    let p = NetPaths::new(repo);
    let ca = load_cert(&p.ca_cert())?;
    let chain = vec![load_cert(&p.server_cert())?, ca.clone()];
    let provider = provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| crate::ServerError::Config(format!("client verifier: {e}")))?;
    let verifier = Arc::new(RegistryVerifier {
        inner,
        registry: Registry::new(repo),
    });
    let mut session = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), load_key(&p.server_key())?)?;
    session.alpn_protocols = vec![ALPN_SESSION.to_vec()];
    session.ignore_client_order = true;
    let mut enroll = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, load_key(&p.server_key())?)?;
    enroll.alpn_protocols = vec![ALPN_ENROLL.to_vec()];
    Ok(Configs {
        session: Arc::new(session),
        enroll: Arc::new(enroll),
    })
}
