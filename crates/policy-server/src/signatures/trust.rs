//! The Sigstore trust root keyless signatures are checked against: Fulcio's certificate
//! authorities and Rekor's keys.
//!
//! With `--sigstore-trust-config` it is read from that file (a `ClientTrustConfig` JSON, what
//! a PolicyServer's `sigstoreTrustConfig` ConfigMap holds), at start-up; kwctl can also name
//! Fulcio certificates and a Rekor key directly (`--fulcio-cert-path`,
//! `--rekor-public-key-path`). Without either, it is
//! fetched from the Sigstore public-good TUF repository as upstream does, but only when a
//! keyless signature must first be checked: a policy-server that only checks key signatures
//! (or none) never reaches out to the internet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_types::error_text::with_causes;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use sha2::{Digest as _, Sha256};
use sigstore::trust::ManualTrustRoot;
use sigstore::trust::sigstore::SigstoreTrustRoot;
use tokio::sync::Mutex;

/// Trust material, whichever its source.
pub type Root = dyn sigstore::trust::TrustRoot + Send + Sync;

/// Longest a TUF fetch may take.
const TUF_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failed TUF fetch is remembered before it is tried again.
const TUF_RETRY_AFTER: Duration = Duration::from_secs(60);

/// When the public-good trust root was last fetched, and what came of it.
type Fetched = Option<(Instant, Result<Arc<Root>, Arc<TrustError>>)>;

const TUF_ADVICE: &str = "pass --sigstore-trust-config (a PolicyServer's spec.sigstoreTrustConfig) where the internet cannot be reached";

/// A Sigstore trust root cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the Sigstore trust config {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: sigstore::errors::SigstoreError,
    },
    #[error("the Sigstore trust config {} has no usable certificate authority", path.display())]
    NoAuthority {
        path: PathBuf,
        #[source]
        source: sigstore::errors::SigstoreError,
    },
    #[error("both a Fulcio certificate and a Rekor public key are required")]
    IncompleteManualRoot,
    #[error("a Fulcio certificate is not a PEM certificate")]
    FulcioCertificate(#[source] rustls_pki_types::pem::Error),
    #[error("the Rekor public key is not a PEM public key")]
    RekorKey(#[source] rustls_pki_types::pem::Error),
    #[error("cannot create the Sigstore cache directory {}", dir.display())]
    CacheDirectory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fetch the Sigstore trust root from its TUF repository ({TUF_ADVICE})")]
    Tuf(#[source] sigstore::errors::SigstoreError),
    #[error("the Sigstore TUF repository did not answer within {TUF_TIMEOUT:?}; {TUF_ADVICE}")]
    TufTimeout,
}

enum Source {
    /// Read at start-up from `--sigstore-trust-config`, or given as certificates and keys.
    Given(Arc<Root>),
    /// Sigstore's public-good TUF repository, cached in `--sigstore-cache-dir`.
    Tuf {
        cache_dir: PathBuf,
        fetched: Mutex<Fetched>,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Given(_) => f.write_str("Given"),
            Source::Tuf { cache_dir, .. } => {
                f.debug_struct("Tuf").field("cache_dir", cache_dir).finish()
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrustRoot(Arc<Source>);

impl TrustRoot {
    /// Reads `path` (a `ClientTrustConfig` JSON).
    pub fn from_file(path: &std::path::Path) -> Result<Self, TrustError> {
        let root =
            SigstoreTrustRoot::from_client_trust_config(&path.to_path_buf()).map_err(|source| {
                TrustError::ReadConfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        // A trust config without Fulcio authorities cannot check any keyless signature; say so
        // now rather than at the first verification.
        sigstore::trust::TrustRoot::fulcio_certs(&root).map_err(|source| {
            TrustError::NoAuthority {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(TrustRoot(Arc::new(Source::Given(Arc::new(root)))))
    }

    /// Fulcio's certificate authorities and Rekor's public key, PEM: upstream kwctl's
    /// `--fulcio-cert-path` and `--rekor-public-key-path`.
    pub fn manual(
        fulcio_certificates: &[Vec<u8>],
        rekor_public_key: &[u8],
    ) -> Result<Self, TrustError> {
        if fulcio_certificates.is_empty() {
            return Err(TrustError::IncompleteManualRoot);
        }
        let fulcio_certs = fulcio_certificates
            .iter()
            .map(|pem| {
                CertificateDer::from_pem_slice(pem)
                    .map(CertificateDer::into_owned)
                    .map_err(TrustError::FulcioCertificate)
            })
            .collect::<Result<Vec<_>, TrustError>>()?;
        let rekor = SubjectPublicKeyInfoDer::from_pem_slice(rekor_public_key)
            .map_err(TrustError::RekorKey)?;
        // Rekor bundles name their log by the SHA-256 of its key.
        let log_id: String = Sha256::digest(rekor.as_ref())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let root = ManualTrustRoot {
            fulcio_certs,
            rekor_keys: [(log_id, rekor.as_ref().to_vec())].into(),
            ctfe_keys: Default::default(),
        };
        Ok(TrustRoot(Arc::new(Source::Given(Arc::new(root)))))
    }

    /// Sigstore's public-good instance, fetched through TUF when first needed.
    pub fn public_good(cache_dir: PathBuf) -> Self {
        TrustRoot(Arc::new(Source::Tuf {
            cache_dir,
            fetched: Mutex::new(None),
        }))
    }

    /// The trust root, fetching it first when it comes from TUF.
    /// The trust root; an error is shared by the verifications that wait for the same
    /// attempt.
    pub async fn get(&self) -> Result<Arc<Root>, Arc<TrustError>> {
        match self.0.as_ref() {
            Source::Given(root) => Ok(root.clone()),
            Source::Tuf { cache_dir, fetched } => {
                let mut fetched = fetched.lock().await;
                if let Some((at, result)) = fetched.as_ref()
                    && (result.is_ok() || at.elapsed() < TUF_RETRY_AFTER)
                {
                    return result.clone();
                }
                let result = fetch_public_good(cache_dir).await.map_err(Arc::new);
                match &result {
                    Ok(_) => tracing::info!(
                        "Sigstore trust root fetched from the public-good TUF repository"
                    ),
                    Err(error) => {
                        let reason = with_causes(error.as_ref());
                        tracing::warn!(%reason, "keyless signatures cannot be verified")
                    }
                }
                *fetched = Some((Instant::now(), result.clone()));
                result
            }
        }
    }
}

async fn fetch_public_good(cache_dir: &std::path::Path) -> Result<Arc<Root>, TrustError> {
    tokio::fs::create_dir_all(cache_dir)
        .await
        .map_err(|source| TrustError::CacheDirectory {
            dir: cache_dir.to_path_buf(),
            source,
        })?;
    match tokio::time::timeout(TUF_TIMEOUT, SigstoreTrustRoot::new(Some(cache_dir))).await {
        Ok(Ok(root)) => Ok(Arc::new(root) as Arc<Root>),
        Ok(Err(err)) => Err(TrustError::Tuf(err)),
        Err(_) => Err(TrustError::TufTimeout),
    }
}
