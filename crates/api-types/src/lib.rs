//! Types every part of the stack shares: the `policies.kubewarden.io` custom resources, the
//! policy report resources, the policy-server configuration files, and the names, labels and
//! defaults they agree on.
//!
//! Pure data and pure functions: no IO, no async. CRD YAML in `crds/` is generated from these
//! types (`cargo xtask gen-crds`).

pub mod capabilities;
pub mod config;
pub mod crd;
pub mod defaults;
pub mod error_text;
pub mod group_expression;
pub mod load_status;
pub mod metadata;
pub mod naming;
pub mod reports;
pub mod validation;

pub use crd::{STORAGE_VERSION, kubewarden_crds};
