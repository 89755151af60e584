//! The Sigstore trust root keyless signatures are checked against: Fulcio's certificate
//! authorities and Rekor's keys.
//!
//! With `--sigstore-trust-config` it is read from that file (a `ClientTrustConfig` JSON, what
//! a PolicyServer's `sigstoreTrustConfig` ConfigMap holds), at start-up. Without it, it is
//! fetched from the Sigstore public-good TUF repository as upstream does, but only when a
//! keyless signature must first be checked: a policy-server that only checks key signatures
//! (or none) never reaches out to the internet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sigstore::trust::sigstore::SigstoreTrustRoot;
use tokio::sync::Mutex;

/// Longest a TUF fetch may take.
const TUF_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failed TUF fetch is remembered before it is tried again.
const TUF_RETRY_AFTER: Duration = Duration::from_secs(60);

/// When the public-good trust root was last fetched, and what came of it.
type Fetched = Option<(Instant, Result<Arc<SigstoreTrustRoot>, String>)>;

#[derive(Debug)]
enum Source {
    /// Read at start-up from `--sigstore-trust-config`.
    File(Arc<SigstoreTrustRoot>),
    /// Sigstore's public-good TUF repository, cached in `--sigstore-cache-dir`.
    Tuf {
        cache_dir: PathBuf,
        fetched: Mutex<Fetched>,
    },
}

#[derive(Debug, Clone)]
pub struct TrustRoot(Arc<Source>);

impl TrustRoot {
    /// Reads `path` (a `ClientTrustConfig` JSON).
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let root =
            SigstoreTrustRoot::from_client_trust_config(&path.to_path_buf()).map_err(|e| {
                format!(
                    "cannot read the Sigstore trust config {}: {e}",
                    path.display()
                )
            })?;
        // A trust config without Fulcio authorities cannot check any keyless signature; say so
        // now rather than at the first verification.
        sigstore::trust::TrustRoot::fulcio_certs(&root).map_err(|e| {
            format!(
                "the Sigstore trust config {} has no usable certificate authority: {e}",
                path.display()
            )
        })?;
        Ok(TrustRoot(Arc::new(Source::File(Arc::new(root)))))
    }

    /// Sigstore's public-good instance, fetched through TUF when first needed.
    pub fn public_good(cache_dir: PathBuf) -> Self {
        TrustRoot(Arc::new(Source::Tuf {
            cache_dir,
            fetched: Mutex::new(None),
        }))
    }

    /// The trust root, fetching it first when it comes from TUF.
    pub async fn get(&self) -> Result<Arc<SigstoreTrustRoot>, String> {
        match self.0.as_ref() {
            Source::File(root) => Ok(root.clone()),
            Source::Tuf { cache_dir, fetched } => {
                let mut fetched = fetched.lock().await;
                if let Some((at, result)) = fetched.as_ref()
                    && (result.is_ok() || at.elapsed() < TUF_RETRY_AFTER)
                {
                    return result.clone();
                }
                let result = fetch_public_good(cache_dir).await;
                match &result {
                    Ok(_) => tracing::info!(
                        "Sigstore trust root fetched from the public-good TUF repository"
                    ),
                    Err(reason) => tracing::warn!(%reason, "keyless signatures cannot be verified"),
                }
                *fetched = Some((Instant::now(), result.clone()));
                result
            }
        }
    }
}

async fn fetch_public_good(cache_dir: &std::path::Path) -> Result<Arc<SigstoreTrustRoot>, String> {
    let advice = "pass --sigstore-trust-config (a PolicyServer's spec.sigstoreTrustConfig) where the internet cannot be reached";
    if let Err(err) = tokio::fs::create_dir_all(cache_dir).await {
        return Err(format!(
            "cannot create the Sigstore cache directory {}: {err}",
            cache_dir.display()
        ));
    }
    match tokio::time::timeout(TUF_TIMEOUT, SigstoreTrustRoot::new(Some(cache_dir))).await {
        Ok(Ok(root)) => Ok(Arc::new(root)),
        Ok(Err(err)) => Err(format!(
            "cannot fetch the Sigstore trust root from its TUF repository: {err}; {advice}"
        )),
        Err(_) => Err(format!(
            "the Sigstore TUF repository did not answer within {TUF_TIMEOUT:?}; {advice}"
        )),
    }
}
