//! Files the controller writes into the policy-server ConfigMap and the policy-server reads:
//! `policies.yml` and `sources.yml`, in the upstream format so either side can be swapped for
//! the upstream component; and `verification.yml`, which users write.

pub mod policies;
pub mod sources;
pub mod verification;

pub use policies::{
    NamespacedName, PoliciesConfig, PolicyEntry, PolicyGroupEntry, PolicyGroupMemberEntry,
    PolicyOrGroup,
};
pub use sources::{SourceAuthority, SourcesConfig};
pub use verification::VerificationConfig;

/// A configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot parse {file}: {source}")]
    Parse {
        file: &'static str,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{file} is invalid: {reason}")]
    Invalid { file: &'static str, reason: String },
    #[error("{file}: policy id {id:?} is invalid: {reason}")]
    InvalidPolicyId {
        file: &'static str,
        id: String,
        reason: &'static str,
    },
}
