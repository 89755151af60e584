//! Reconciliation errors: each says what the controller was doing when it failed.

use crate::certs::CertError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("certificates: {0}")]
    Cert(#[from] CertError),
    #[error("{0}")]
    Invalid(String),
    /// A shared watch ended before its first list (the controller is shutting down).
    #[error("the shared watch of {0} stopped before its first list")]
    WatchStopped(String),
    /// A shared watch has not listed its kind in time (its errors are in the log).
    #[error(
        "the shared watch of {kind} has not listed in {wait:?} (the controller's log has its errors: RBAC, a missing CRD, an unreachable API server)"
    )]
    NotListed {
        kind: String,
        wait: std::time::Duration,
    },
}

impl Error {
    /// A short machine-friendly reason for events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubernetesApiError",
            Error::Cert(_) => "CertificateError",
            Error::Invalid(_) => "InvalidObject",
            Error::WatchStopped(_) => "WatchStopped",
            Error::NotListed { .. } => "WatchNotListed",
        }
    }
}

/// Adds what was being done to a kube error.
pub trait KubeResultExt<T> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> KubeResultExt<T> for Result<T, kube::Error> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Kube {
            action: action(),
            source,
        })
    }
}
