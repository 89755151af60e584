//! `policies.yml`: every policy a policy-server serves, by the id it is served under.
//!
//! The controller writes it as JSON (a subset of YAML); people write it as YAML when running a
//! policy-server by hand. Keys the format does not know are ignored, as upstream does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::crd::common::deserialize_present;
use crate::crd::{ContextAwareResource, PolicyMode};

/// Namespace and name of the Kubernetes object a policy came from. The capitalised keys are
/// those of Go's `types.NamespacedName`, which upstream serialises without JSON tags.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespacedName {
    #[serde(rename = "Namespace", default)]
    pub namespace: String,
    #[serde(rename = "Name", default)]
    pub name: String,
}

/// One policy: a module and how to run it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaced_name: Option<NamespacedName>,
    /// `registry://`, `https://`, `http://` or `file://` URL of the module.
    pub module: String,
    #[serde(default)]
    pub policy_mode: PolicyMode,
    #[serde(default)]
    pub allowed_to_mutate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_aware_resources: Option<Vec<ContextAwareResource>>,
    /// Settings object, `null`, or absent; the policy sees `{}` for the latter two.
    #[serde(
        default,
        deserialize_with = "deserialize_present",
        skip_serializing_if = "Option::is_none"
    )]
    pub settings: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_eval_seconds: Option<u32>,
    /// Host capability patterns the policy may call; absent or empty grants none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_capabilities: Option<Vec<String>>,
}

/// One member of a policy group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGroupMemberEntry {
    pub module: String,
    #[serde(
        default,
        deserialize_with = "deserialize_present",
        skip_serializing_if = "Option::is_none"
    )]
    pub settings: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_aware_resources: Option<Vec<ContextAwareResource>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_eval_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_capabilities: Option<Vec<String>>,
}

/// A group of policies whose verdicts an expression combines.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGroupEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaced_name: Option<NamespacedName>,
    #[serde(default)]
    pub policy_mode: PolicyMode,
    pub policies: BTreeMap<String, PolicyGroupMemberEntry>,
    pub expression: String,
    pub message: String,
}

/// An entry of `policies.yml`: a group has `policies` and `expression`, a policy a `module`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum PolicyOrGroup {
    Group(PolicyGroupEntry),
    Policy(PolicyEntry),
}

impl PolicyOrGroup {
    pub fn policy_mode(&self) -> PolicyMode {
        match self {
            PolicyOrGroup::Group(group) => group.policy_mode,
            PolicyOrGroup::Policy(policy) => policy.policy_mode,
        }
    }

    /// A digest of the entry (hex SHA-256 of its JSON form): what a policy-server reports it
    /// serves of a policy, and what the controller compares with the entry it wants served,
    /// so the two agree on a version without sharing a counter.
    pub fn digest(&self) -> String {
        // Serializing a tree of strings, numbers and maps cannot fail.
        super::sha256_hex(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The whole `policies.yml`, ordered by id so that the file the controller writes is stable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(transparent)]
pub struct PoliciesConfig(pub BTreeMap<String, PolicyOrGroup>);

const FILE: &str = "policies.yml";

impl PoliciesConfig {
    /// Parses YAML or JSON and checks that every id can be used in a URL path.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: PoliciesConfig = serde_yaml_ng::from_str(text)
            .map_err(|source| ConfigError::Parse { file: FILE, source })?;
        for id in config.0.keys() {
            check_policy_id(id)?;
        }
        Ok(config)
    }

    /// The JSON the controller stores in the ConfigMap.
    pub fn to_json(&self) -> String {
        // Every value in the map is plain data (strings, numbers, JSON values), which always
        // serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn check_policy_id(id: &str) -> Result<(), ConfigError> {
    let reason = if id.is_empty() {
        "it is empty"
    } else if id.contains('/') {
        "it contains '/', which cannot be part of the /validate/<id> path"
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains white space or control characters"
    } else {
        return Ok(());
    };
    Err(ConfigError::InvalidPolicyId {
        file: FILE,
        id: id.to_string(),
        reason,
    })
}
