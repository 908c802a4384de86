//! TLS for the gossip transport. QUIC always encrypts; what varies is authentication:
//!
//! - `[gossip.tls]` with `ca_file`: servers present `cert_file`/`key_file`, clients verify
//!   them against the CA (server name = the peer's IP); with `[gossip.tls.client]` servers
//!   also require client certificates signed by the CA (mutual TLS).
//! - `[gossip.tls]` with `insecure = true` and no CA: certificates are presented but not
//!   verified.
//! - `gossip.plaintext = true` (local clusters, tests): an ephemeral self-signed certificate,
//!   no verification. Traffic is encrypted but peers are not authenticated.
//!
//! Also generates the certificates an operator needs (`verdigris tls ...`).

use crate::config::{GossipConfig, TlsConfig};
use anyhow::{bail, Context, Result};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

const ALPN: &[u8] = b"verdigris-gossip/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate, but still checks handshake signatures.
#[derive(Debug)]
struct NoServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoServerVerification {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The hint every TLS file error ends with.
fn file_fix(setting: &str) -> String {
    format!("check {setting}: the file must exist, be readable by this user and hold PEM (or DER, named *.der); `verdigris tls` generates them")
}

fn load_certs(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>> {
    let fail = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "cannot load {setting} {}: {e}; {}",
            path.display(),
            file_fix(setting)
        )
    };
    let certs: Vec<_> = if path.extension().is_some_and(|e| e == "der") {
        vec![CertificateDer::from(
            std::fs::read(path).map_err(|e| fail(&e))?,
        )]
    } else {
        CertificateDer::pem_file_iter(path)
            .map_err(|e| fail(&e))?
            .collect::<Result<_, _>>()
            .map_err(|e| fail(&e))?
    };
    if certs.is_empty() {
        return Err(fail(&"it holds no certificate"));
    }
    Ok(certs)
}

fn load_key(path: &Path, setting: &str) -> Result<PrivateKeyDer<'static>> {
    let fail = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "cannot load {setting} {}: {e}; {}",
            path.display(),
            file_fix(setting)
        )
    };
    if path.extension().is_some_and(|e| e == "der") {
        let bytes = std::fs::read(path).map_err(|e| fail(&e))?;
        return PrivateKeyDer::try_from(bytes).map_err(|e| fail(&e));
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| fail(&e))
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca, "gossip.tls.ca_file")? {
        roots.add(c).context("adding the CA certificate")?;
    }
    Ok(roots)
}

/// The server and client configurations of this node's endpoint.
pub fn endpoint_configs(g: &GossipConfig) -> Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    let p = provider();
    let tls: Option<&TlsConfig> = g.tls.as_ref();
    let (chain, key) = match tls {
        Some(t) => (
            load_certs(&t.cert_file, "gossip.tls.cert_file")?,
            load_key(&t.key_file, "gossip.tls.key_file")?,
        ),
        None => {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
            (
                vec![ck.cert.der().clone()],
                PrivateKeyDer::try_from(ck.signing_key.serialize_der())
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            )
        }
    };
    let server_builder = rustls::ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut server = match tls {
        Some(TlsConfig {
            ca_file: Some(ca),
            client: Some(_),
            ..
        }) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                p.clone(),
            )
            .build()?;
            server_builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)?
        }
        _ => server_builder
            .with_no_client_auth()
            .with_single_cert(chain, key)?,
    };
    server.alpn_protocols = vec![ALPN.to_vec()];
    let client_builder = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let client_builder = match tls {
        Some(TlsConfig {
            ca_file: Some(ca), ..
        }) => client_builder.with_root_certificates(roots(ca)?),
        Some(TlsConfig { insecure: true, .. }) | None => client_builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification(p.clone()))),
        Some(_) => bail!(
            "[gossip.tls] has no ca_file: set ca_file to verify peers, or `insecure = true` to skip verification"
        ),
    };
    let mut client = match tls.and_then(|t| t.client.as_ref()) {
        Some(c) => client_builder.with_client_auth_cert(
            load_certs(&c.cert_file, "gossip.tls.client.cert_file")?,
            load_key(&c.key_file, "gossip.tls.client.key_file")?,
        )?,
        None => client_builder.with_no_client_auth(),
    };
    client.alpn_protocols = vec![ALPN.to_vec()];
    let server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server)?));
    let client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client)?));
    Ok((server, client))
}

/// Whether peers are verified against a CA (then the TLS server name must be the peer's IP).
pub fn verifies_servers(g: &GossipConfig) -> bool {
    g.tls.as_ref().is_some_and(|t| t.ca_file.is_some())
}

fn ca_params() -> Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Verdigris gossip CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 5, 1, 1);
    Ok(params)
}

/// The current year (UTC, approximately: certificates start a year back to absorb skew).
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    1970 + (secs / 31_556_952) as i32
}

/// Writes a new CA certificate and key (PEM) into `dir`: `ca_cert.pem`, `ca_key.pem`.
pub fn generate_ca(dir: &Path) -> Result<()> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let cert = ca_params()?.self_signed(&key)?;
    write_pair(dir, "ca", &cert.pem(), &key.serialize_pem())
}

/// Writes a server (`ip` SAN) or client certificate signed by the CA whose key is `ca_key`
/// (as written by [`generate_ca`]).
pub fn generate_leaf(ca_key: &Path, out: &Path, server_ip: Option<&str>) -> Result<()> {
    let ca_key_pem = std::fs::read_to_string(ca_key)
        .with_context(|| format!("reading the CA key {}", ca_key.display()))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)?;
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let sans = match server_ip {
        Some(ip) => vec![ip.to_string()],
        None => vec![],
    };
    let mut params = rcgen::CertificateParams::new(sans)?;
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 1, 12, 31);
    let name = if server_ip.is_some() {
        "server"
    } else {
        "client"
    };
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("Verdigris gossip {name}"),
    );
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let cert = params.signed_by(&key, &issuer)?;
    write_pair(out, name, &cert.pem(), &key.serialize_pem())
}

fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let c = dir.join(format!("{name}_cert.pem"));
    let k = dir.join(format!("{name}_key.pem"));
    std::fs::write(&c, cert).with_context(|| format!("writing {}", c.display()))?;
    std::fs::write(&k, key).with_context(|| format!("writing {}", k.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600))?;
    }
    println!("wrote {} and {}", c.display(), k.display());
    Ok(())
}
