//! Files the controller writes into the policy-server ConfigMap and the policy-server reads:
//! `policies.yml` and `sources.yml`, in the upstream format so either side can be swapped for
//! the upstream component; and `verification.yml`, which users write.

pub mod launch;
pub mod policies;
pub mod sources;
pub mod verification;

pub use policies::{
    NamespacedName, PoliciesConfig, PolicyEntry, PolicyGroupEntry, PolicyGroupMemberEntry,
    PolicyOrGroup,
};
pub use sources::{SourceAuthority, SourcesConfig};
pub use verification::VerificationConfig;

/// Hex SHA-256 of `bytes`: how configuration versions are named without a shared counter.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The first 16 hex digits of [`sha256_hex`]: short enough for a label value.
pub fn short_digest(text: &str) -> String {
    let mut digest = sha256_hex(text.as_bytes());
    digest.truncate(16);
    digest
}

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
