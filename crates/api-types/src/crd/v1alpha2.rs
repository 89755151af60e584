//! `policies.kubewarden.io/v1alpha2`: the older API still served so that manifests written for
//! it keep applying. Objects are stored as v1; there is no conversion webhook, so these types
//! only carry the fields v1alpha2 had.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    FailurePolicy, MatchPolicy, PolicyMode, PolicyRule, PolicyStatus, SideEffectClass,
    default_policy_server, deserialize_present, settings_schema,
};
use super::policy_server::PolicyServerStatus;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "policies.kubewarden.io",
    version = "v1alpha2",
    kind = "PolicyServer",
    plural = "policyservers",
    shortname = "ps",
    status = "PolicyServerStatus",
    served = true,
    storage = false,
    printcolumn(
        name = "Replicas",
        type_ = "string",
        json_path = ".spec.replicas",
        description = "Policy Server replicas"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        description = "Policy Server image"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PolicyServerSpec {
    pub image: String,
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_sources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_authorities: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_config: Option<String>,
}

/// Fields of a v1alpha2 policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyFields {
    #[serde(default = "default_policy_server")]
    pub policy_server: String,
    #[schemars(length(min = 1))]
    pub module: String,
    #[serde(default)]
    pub mode: PolicyMode,
    #[serde(
        default,
        deserialize_with = "deserialize_present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "settings_schema")]
    pub settings: Option<serde_json::Value>,
    #[schemars(length(min = 1))]
    pub rules: Vec<PolicyRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    pub mutating: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_policy: Option<MatchPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_effects: Option<SideEffectClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 30))]
    pub timeout_seconds: Option<i32>,
}

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "policies.kubewarden.io",
    version = "v1alpha2",
    kind = "AdmissionPolicy",
    plural = "admissionpolicies",
    shortname = "ap",
    namespaced,
    status = "PolicyStatus",
    served = true,
    storage = false
)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionPolicySpec {
    #[serde(flatten)]
    pub fields: PolicyFields,
}

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "policies.kubewarden.io",
    version = "v1alpha2",
    kind = "ClusterAdmissionPolicy",
    plural = "clusteradmissionpolicies",
    shortname = "cap",
    status = "PolicyStatus",
    served = true,
    storage = false,
    deprecated = "policies.kubewarden.io/v1alpha2 ClusterAdmissionPolicy is deprecated; use policies.kubewarden.io/v1"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAdmissionPolicySpec {
    #[serde(flatten)]
    pub fields: PolicyFields,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}
