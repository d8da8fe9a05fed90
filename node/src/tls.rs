//! TLS with rustls: the HTTPS listener's config (certificates chosen by SNI, ALPN `http/1.1`,
//! TLS 1.2 and 1.3 with rustls' defaults) and the client config for `https` origins.
//!
//! The I/O side, a rustls connection driven over monoio's owned-buffer reads and writes, is
//! [`crate::stream::TlsStream`].
//!
//! Origin certificates are verified against the webpki root set plus `origin.ca_file`; SNI is
//! the origin's host name. `origin.insecure_skip_verify` turns verification off, only when
//! named explicitly, and is logged loudly at start.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// A certificate chain and its key, as loaded.
struct ServedCert {
    key: Arc<CertifiedKey>,
}

/// Picks the certificate whose names cover the client's SNI; the first configured one otherwise
/// (no SNI, an IP address, or no match).
#[derive(Debug)]
struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ServedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().and_then(|n| ServerName::try_from(n.to_string()).ok());
        if let Some(name) = name {
            for ck in &self.certs {
                let Some(leaf) = ck.cert.first() else { continue };
                let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else { continue };
                if ee.verify_is_valid_for_subject_name(&name).is_ok() {
                    return Some(ck.clone());
                }
            }
        }
        self.certs.first().cloned()
    }
}

/// Loads one chain and key; errors name the file.
fn load_cert(cert: &Path, key: &Path) -> Result<ServedCert> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{}: cannot read certificates", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!("{}: no certificate found", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{}: not a PEM private key (PKCS#8, PKCS#1 or SEC1)", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .with_context(|| format!("{}: unsupported private key type", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().with_context(|| format!("{}: the key does not match {}", key.display(), cert.display()))?;
    Ok(ServedCert { key: Arc::new(ck) })
}

/// The HTTPS listener's config from `[[tls.certs]]` (the first is the default certificate).
pub fn server_config(certs: &[(std::path::PathBuf, std::path::PathBuf)]) -> Result<Arc<ServerConfig>> {
    let loaded = certs.iter().map(|(c, k)| load_cert(c, k).map(|s| s.key)).collect::<Result<Vec<_>>>()?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs: loaded }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The config for `https` origins: webpki roots plus `ca_file`, or no verification at all when
/// `insecure` is set.
pub fn client_config(ca_file: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification { provider }))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(path) = ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("origin.ca_file {}: cannot read", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("origin.ca_file {}: not PEM certificates", path.display()))?;
            if certs.is_empty() {
                return Err(anyhow!("origin.ca_file {}: no certificate found", path.display()));
            }
            for c in certs {
                roots.add(c).with_context(|| format!("origin.ca_file {}: unusable certificate", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `origin.insecure_skip_verify`: accepts any certificate (signatures are still checked so the
/// handshake is well-formed). For test origins only; the end-to-end suite's HTTPS client uses it
/// too.
#[derive(Debug)]
pub struct NoVerification {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl NoVerification {
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> NoVerification {
        NoVerification { provider }
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The SNI name for an origin host (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("'{host}' is not a valid TLS server name: {e}"))
}
