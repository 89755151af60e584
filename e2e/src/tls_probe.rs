//! One HTTPS request over a fresh TLS connection, with or without a client certificate: what
//! the mTLS scenario needs to see a policy-server let a client in or turn it away.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A client certificate and its key, both PEM.
pub struct ClientIdentity<'a> {
    pub cert_pem: &'a [u8],
    pub key_pem: &'a [u8],
}

impl std::fmt::Debug for ClientIdentity<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

/// Sends `GET /` to `address`, verifying the server as `server_name` against `ca_pem`, and
/// returns the response's status line. A server that refuses the client fails the handshake or
/// the first read (TLS 1.3 sends the refusal after the handshake), which is returned as an
/// error with rustls' reason.
pub fn get_status_line(
    address: SocketAddr,
    server_name: &str,
    ca_pem: &[u8],
    client: Option<ClientIdentity<'_>>,
) -> Result<String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.context("the CA PEM")?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some(identity) => {
            let chain = CertificateDer::pem_slice_iter(identity.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .context("the client certificate PEM")?;
            let key =
                PrivateKeyDer::from_pem_slice(identity.key_pem).context("the client key PEM")?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(server_name.to_string())?;
    let connection = rustls::ClientConnection::new(Arc::new(config), name)?;
    let socket = TcpStream::connect_timeout(&address, Duration::from_secs(10))
        .with_context(|| format!("connecting to {address}"))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .context("TLS handshake and request")?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .context("reading the response")?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().to_string())
}
