//! `ClusterAdmissionPolicy` and `AdmissionPolicy`: one WebAssembly module, its settings and the
//! requests it is called for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    ContextAwareResource, PolicySpecCommon, PolicyStatus, deserialize_present, settings_schema,
};

policy_kind! {
    kind = "AdmissionPolicy", plural = "admissionpolicies", shortname = "ap",
    doc = "An AdmissionPolicy evaluates requests for resources of its own namespace with a WebAssembly module.",
    extra = [namespaced,],
    mutating_column = [printcolumn(name = "Mutating", type_ = "boolean", json_path = ".spec.mutating", description = "Whether the policy is mutating"),],
/// What an AdmissionPolicy declares; a ClusterAdmissionPolicy declares the same and more.
#[x_kube(validation = Rule::new("!has(self.timeoutEvalSeconds) || self.timeoutEvalSeconds <= self.timeoutSeconds").message("timeoutEvalSeconds must not exceed timeoutSeconds"))]
pub struct AdmissionPolicySpec {
    #[serde(flatten)]
    pub common: PolicySpecCommon,
    #[serde(flatten)]
    pub module: PolicyModule,
}
}

/// The WebAssembly module of a policy and how it is run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyModule {
    /// Where the module comes from: `registry://`, `https://`, `http://` or `file://`
    /// (no scheme means a registry reference).
    #[schemars(length(min = 1))]
    pub module: String,

    /// Settings given to the policy.
    #[serde(
        default,
        deserialize_with = "deserialize_present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "settings_schema")]
    pub settings: Option<serde_json::Value>,

    /// Whether the policy may change the objects it is sent.
    pub mutating: bool,

    /// Longest time, in seconds, one evaluation may take on the policy-server. Defaults to
    /// the policy-server's `--policy-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 30))]
    pub timeout_eval_seconds: Option<i32>,

    /// Message returned instead of the policy's own when a request is rejected; the policy's
    /// message is kept in `status.details.causes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

policy_kind! {
    kind = "ClusterAdmissionPolicy", plural = "clusteradmissionpolicies", shortname = "cap",
    doc = "A ClusterAdmissionPolicy evaluates requests for resources anywhere in the cluster with a WebAssembly module.",
    extra = [validation = Rule::new("size(self.metadata.name) <= 220").message("name must be at most 220 characters: the webhook name clusterwide-<name>.kubewarden.admission must fit in 253"),],
    mutating_column = [printcolumn(name = "Mutating", type_ = "boolean", json_path = ".spec.mutating", description = "Whether the policy is mutating"),],
/// What a ClusterAdmissionPolicy declares.
#[x_kube(validation = Rule::new("!has(self.timeoutEvalSeconds) || self.timeoutEvalSeconds <= self.timeoutSeconds").message("timeoutEvalSeconds must not exceed timeoutSeconds"))]
pub struct ClusterAdmissionPolicySpec {
    #[serde(flatten)]
    pub common: PolicySpecCommon,
    #[serde(flatten)]
    pub module: PolicyModule,
    #[serde(flatten)]
    pub cluster: ClusterWideFields,
    /// Kinds the policy may read from the cluster through host capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_aware_resources: Option<Vec<ContextAwareResource>>,
}
}

/// Fields only cluster-wide policies and groups have.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterWideFields {
    /// Only requests for objects in namespaces with these labels are sent to the policy. The
    /// controller's own namespace is excluded unless allowInsideAdmissionControllerNamespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Also evaluate requests in the namespace Kubewarden itself runs in.
    #[serde(default)]
    #[schemars(extend("default" = false))]
    pub allow_inside_admission_controller_namespace: bool,
}
