//! `ClusterAdmissionPolicyGroup` and `AdmissionPolicyGroup`: several policies combined by a
//! boolean expression into one verdict.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    ContextAwareResource, PolicySpecCommon, PolicyStatus, deserialize_present, settings_schema,
};
use super::policy::ClusterWideFields;

/// One member of an AdmissionPolicyGroup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGroupMember {
    /// Where the module comes from (`registry://`, `https://`, `file://`).
    #[schemars(length(min = 1))]
    pub module: String,
    /// Settings given to the member.
    #[serde(
        default,
        deserialize_with = "deserialize_present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "settings_schema")]
    pub settings: Option<serde_json::Value>,
    /// Longest time, in seconds, one evaluation of the member may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 30))]
    pub timeout_eval_seconds: Option<i32>,
}

/// One member of a ClusterAdmissionPolicyGroup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPolicyGroupMember {
    #[serde(flatten)]
    pub member: PolicyGroupMember,
    /// Kinds the member may read from the cluster through host capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_aware_resources: Option<Vec<ContextAwareResource>>,
}

/// How the members' verdicts combine.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupVerdict {
    /// Boolean expression over the members, each called as `name()`, with `&&`, `||`, `!`,
    /// `==`, `!=` and parentheses. The request is accepted when it is true.
    #[schemars(length(min = 1))]
    pub expression: String,
    /// Message returned when the expression rejects a request; each failing member's own
    /// message is listed in `status.details.causes`.
    #[schemars(length(min = 1))]
    pub message: String,
}

policy_kind! {
    kind = "AdmissionPolicyGroup", plural = "admissionpolicygroups", shortname = "apg",
    doc = "An AdmissionPolicyGroup combines several policies with a boolean expression, for resources of its own namespace.",
    extra = [namespaced,],
    mutating_column = [],
/// What an AdmissionPolicyGroup declares.
pub struct AdmissionPolicyGroupSpec {
    #[serde(flatten)]
    pub common: PolicySpecCommon,
    #[serde(flatten)]
    pub verdict: GroupVerdict,
    /// The members, by the name the expression calls them with.
    #[schemars(extend("minProperties" = 1))]
    pub policies: BTreeMap<String, PolicyGroupMember>,
}
}

policy_kind! {
    kind = "ClusterAdmissionPolicyGroup", plural = "clusteradmissionpolicygroups", shortname = "capg",
    doc = "A ClusterAdmissionPolicyGroup combines several policies with a boolean expression, for resources anywhere in the cluster.",
    extra = [validation = Rule::new("size(self.metadata.name) <= 214").message("name must be at most 214 characters: the webhook name clusterwide-group-<name>.kubewarden.admission must fit in 253"),],
    mutating_column = [],
/// What a ClusterAdmissionPolicyGroup declares.
pub struct ClusterAdmissionPolicyGroupSpec {
    #[serde(flatten)]
    pub common: PolicySpecCommon,
    #[serde(flatten)]
    pub verdict: GroupVerdict,
    #[serde(flatten)]
    pub cluster: ClusterWideFields,
    /// The members, by the name the expression calls them with.
    #[schemars(extend("minProperties" = 1))]
    pub policies: BTreeMap<String, ClusterPolicyGroupMember>,
}
}
