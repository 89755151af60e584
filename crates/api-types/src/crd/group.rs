//! `ClusterAdmissionPolicyGroup` and `AdmissionPolicyGroup`: several policies combined by a
//! boolean expression into one verdict.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
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

/// What an AdmissionPolicyGroup declares.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "policies.kubewarden.io",
    version = "v1",
    kind = "AdmissionPolicyGroup",
    plural = "admissionpolicygroups",
    shortname = "apg",
    namespaced,
    status = "PolicyStatus",
    derive = "PartialEq",
    doc = "An AdmissionPolicyGroup combines several policies with a boolean expression, for resources of its own namespace.",
    annotation("helm.sh/resource-policy", "keep"),
    printcolumn(
        name = "Policy Server",
        type_ = "string",
        json_path = ".spec.policyServer",
        description = "Bound to Policy Server"
    ),
    printcolumn(
        name = "BackgroundAudit",
        type_ = "boolean",
        json_path = ".spec.backgroundAudit",
        description = "Whether the policy is used in audit checks"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "Policy deployment mode"
    ),
    printcolumn(
        name = "Observed mode",
        type_ = "string",
        json_path = ".status.mode",
        description = "Policy deployment mode observed on the assigned Policy Server"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.policyStatus",
        description = "Status of the policy"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Severity",
        type_ = "string",
        json_path = ".metadata.annotations.io\\.kubewarden\\.policy\\.severity",
        description = "Severity of the policy",
        priority = 1
    ),
    printcolumn(
        name = "Category",
        type_ = "string",
        json_path = ".metadata.annotations.io\\.kubewarden\\.policy\\.category",
        description = "Category of the policy",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.policyServer == oldSelf.policyServer").message("policyServer is immutable"))]
#[x_kube(validation = Rule::new("!(oldSelf.mode == 'protect' && self.mode == 'monitor')").message("mode cannot change from protect to monitor"))]
pub struct AdmissionPolicyGroupSpec {
    #[serde(flatten)]
    pub common: PolicySpecCommon,
    #[serde(flatten)]
    pub verdict: GroupVerdict,
    /// The members, by the name the expression calls them with.
    #[schemars(extend("minProperties" = 1))]
    pub policies: BTreeMap<String, PolicyGroupMember>,
}

/// What a ClusterAdmissionPolicyGroup declares.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "policies.kubewarden.io",
    version = "v1",
    kind = "ClusterAdmissionPolicyGroup",
    plural = "clusteradmissionpolicygroups",
    shortname = "capg",
    validation = Rule::new("size(self.metadata.name) <= 214").message("name must be at most 214 characters: the webhook name clusterwide-group-<name>.kubewarden.admission must fit in 253"),
    status = "PolicyStatus",
    derive = "PartialEq",
    doc = "A ClusterAdmissionPolicyGroup combines several policies with a boolean expression, for resources anywhere in the cluster.",
    annotation("helm.sh/resource-policy", "keep"),
    printcolumn(name = "Policy Server", type_ = "string", json_path = ".spec.policyServer", description = "Bound to Policy Server"),
    printcolumn(name = "BackgroundAudit", type_ = "boolean", json_path = ".spec.backgroundAudit", description = "Whether the policy is used in audit checks"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode", description = "Policy deployment mode"),
    printcolumn(name = "Observed mode", type_ = "string", json_path = ".status.mode", description = "Policy deployment mode observed on the assigned Policy Server"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.policyStatus", description = "Status of the policy"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Severity", type_ = "string", json_path = ".metadata.annotations.io\\.kubewarden\\.policy\\.severity", description = "Severity of the policy", priority = 1),
    printcolumn(name = "Category", type_ = "string", json_path = ".metadata.annotations.io\\.kubewarden\\.policy\\.category", description = "Category of the policy", priority = 1)
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.policyServer == oldSelf.policyServer").message("policyServer is immutable"))]
#[x_kube(validation = Rule::new("!(oldSelf.mode == 'protect' && self.mode == 'monitor')").message("mode cannot change from protect to monitor"))]
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
