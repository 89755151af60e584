//! rustls configuration of the webhook server: TLS 1.2 and 1.3 only, optional client
//! certificates (mutual TLS), and reloading of the certificate and key when they change on
//! disk (the controller rotates them) without dropping connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Files the TLS configuration is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cas: Vec<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

impl TlsFiles {
    /// Builds the server configuration from the files as they are now.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let certs = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading the private key in {}", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?;
        let builder = if self.client_cas.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for path in &self.client_cas {
                for cert in read_certs(path)? {
                    roots
                        .add(cert)
                        .with_context(|| format!("adding a client CA from {}", path.display()))?;
                }
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .context("building the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .context("the certificate and key do not form a usable pair")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        std::iter::once(&self.cert)
            .chain(std::iter::once(&self.key))
            .chain(self.client_cas.iter())
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Watches the files and swaps the configuration when they change. A change that does not
    /// form a valid configuration (for example the certificate written before the key) is
    /// logged and retried at the next poll; the previous configuration keeps serving.
    pub fn watch(self, config: RustlsConfig, every: Duration) {
        tokio::spawn(async move {
            let mut seen = self.modified();
            let mut interval = tokio::time::interval(every);
            loop {
                interval.tick().await;
                let now = self.modified();
                if now == seen {
                    continue;
                }
                match self.server_config() {
                    Ok(new) => {
                        config.reload_from_config(new);
                        seen = now;
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    Err(err) => {
                        tracing::warn!(error = %format!("{err:#}"), "TLS files changed but cannot be used yet; keeping the previous certificate")
                    }
                }
            }
        });
    }
}
