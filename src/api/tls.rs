//! TLS for chargers (OCPP security profiles 2 and 3): the rustls server configuration,
//! and what each TLS connection tells the WebSocket endpoint (the client certificate).

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use actix_web::dev::Extensions;
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsSettings;

/// Attached to every request that came over TLS.
#[derive(Clone, Debug)]
pub struct TlsConnection {
    /// The leaf certificate the client presented (DER), if any.
    pub client_certificate: Option<Vec<u8>>,
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// The server configuration: our certificate chain and key and, when a client CA is
/// configured, client certificates checked against it. A client without a
/// certificate may still connect (profile 2 uses Basic auth over TLS); profile 3
/// chargers are refused without one by the endpoint.
pub fn server_config(tls: &TlsSettings) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert_file = tls
        .cert_file
        .as_deref()
        .context("tls.cert_file is needed to serve TLS")?;
    let key_file = tls
        .key_file
        .as_deref()
        .context("tls.key_file is needed to serve TLS")?;
    let chain = certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading the key in {}", key_file.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match tls.client_ca_file.as_deref() {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca_file)? {
                roots
                    .add(cert)
                    .with_context(|| format!("adding a client CA from {}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("building the client-certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain, key)
        .context("our certificate and key do not match")
}

/// Connect hook of the TLS listener (`api::server::serve`): records that a connection is TLS and its client certificate.
pub fn on_connect(connection: &dyn Any, extensions: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(stream) = connection.downcast_ref::<Tls>() {
        let (_, session) = stream.get_ref();
        let client_certificate = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        extensions.insert(TlsConnection { client_certificate });
    }
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}
