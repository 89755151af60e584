//! Fields and types every policy kind shares.

use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::defaults;

/// What happens to requests a policy rejects.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Rejections are enforced.
    #[default]
    Protect,
    /// Every request is accepted; the policy's verdict is only logged and measured.
    Monitor,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Protect => "protect",
            PolicyMode::Monitor => "monitor",
        }
    }
}

/// How the apiserver treats a request when calling the webhook fails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    Ignore,
    Fail,
}

/// How the apiserver matches requests against the rules.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchPolicy {
    Exact,
    Equivalent,
}

/// Side effects of calling the webhook (the values admissionregistration.k8s.io/v1 accepts).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideEffectClass {
    None,
    NoneOnDryRun,
}

/// Operation a rule matches.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    #[serde(rename = "CREATE")]
    Create,
    #[serde(rename = "UPDATE")]
    Update,
    #[serde(rename = "DELETE")]
    Delete,
    #[serde(rename = "CONNECT")]
    Connect,
    #[serde(rename = "*")]
    All,
}

impl Operation {
    /// The operation as Kubernetes spells it in webhook rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
            Operation::All => "*",
        }
    }
}

/// Scope of the resources a rule matches.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleScope {
    Cluster,
    Namespaced,
    #[serde(rename = "*")]
    All,
}

/// The requests a policy is called for; the wire format of admissionregistration's
/// RuleWithOperations, with the emptiness checks the apiserver would otherwise only make when
/// the webhook is registered.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// API groups of the resources; `""` is the core group, `*` all groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_groups: Option<Vec<String>>,
    /// API versions of the resources; `*` all versions.
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub api_versions: Vec<String>,
    /// Operations matched; `*` all of them.
    #[schemars(length(min = 1))]
    pub operations: Vec<Operation>,
    /// Resources (`pods`, `pods/exec`, `*`, `*/status`).
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub resources: Vec<String>,
    /// Whether cluster-scoped, namespaced or all resources match (default `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RuleScope>,
}

/// A Kubernetes kind a context-aware policy may read through host capabilities.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub struct ContextAwareResource {
    /// API version, such as `v1` or `apps/v1`.
    pub api_version: String,
    /// Kind, such as `Namespace`.
    pub kind: String,
}

/// Webhook registration fields every policy and policy group has.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpecCommon {
    /// PolicyServer the policy runs on. Cannot change once set.
    #[serde(default = "default_policy_server")]
    pub policy_server: String,

    /// `protect` enforces rejections, `monitor` only reports them. A policy can move from
    /// monitor to protect, never back.
    #[serde(default)]
    pub mode: PolicyMode,

    /// Requests the policy is called for.
    #[schemars(length(min = 1))]
    pub rules: Vec<PolicyRule>,

    /// What the apiserver does when the webhook cannot be called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,

    /// Whether the audit-scanner evaluates existing resources against the policy.
    #[serde(default = "default_true")]
    pub background_audit: bool,

    /// How requests are matched against the rules (default Equivalent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_policy: Option<MatchPolicy>,

    /// CEL conditions a request must satisfy for the webhook to be called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub match_conditions: Option<Vec<MatchCondition>>,

    /// Only objects with these labels are sent to the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<LabelSelector>,

    /// Side effects of the webhook (default None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_effects: Option<SideEffectClass>,

    /// How long the apiserver waits for the webhook, in seconds.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 2, max = 30))]
    pub timeout_seconds: i32,
}

impl PolicySpecCommon {
    /// Common fields with their defaults, matching the given requests.
    pub fn new(rules: Vec<PolicyRule>) -> Self {
        PolicySpecCommon {
            policy_server: default_policy_server(),
            mode: PolicyMode::default(),
            rules,
            failure_policy: None,
            background_audit: true,
            match_policy: None,
            match_conditions: None,
            object_selector: None,
            side_effects: None,
            timeout_seconds: defaults::WEBHOOK_TIMEOUT_SECONDS,
        }
    }
}

pub(crate) fn default_policy_server() -> String {
    defaults::POLICY_SERVER_NAME.to_string()
}

pub(crate) fn default_true() -> bool {
    true
}

pub(crate) fn default_timeout_seconds() -> i32 {
    defaults::WEBHOOK_TIMEOUT_SECONDS
}

/// Lifecycle of a policy, as the controller reports it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PolicyStatusPhase {
    /// No PolicyServer is named.
    Unscheduled,
    /// The named PolicyServer does not exist (yet) or is being deleted.
    Scheduled,
    /// The PolicyServer is rolling out the policy.
    Pending,
    /// Every policy-server replica serves the policy and its webhook is registered.
    Active,
    /// Its webhook is registered but the policy-servers could not load it (the module is
    /// unavailable or the settings are invalid): every matching request is rejected with code
    /// 500. The `PolicyLoaded` condition says why. (Not in upstream, whose policy stays
    /// `active`.)
    Error,
    /// The policy targets resources namespaced policies may not target.
    Rejected,
}

/// Mode the policy-servers actually run the policy in.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObservedPolicyMode {
    Protect,
    Monitor,
    Unknown,
}

/// Observed state of a policy or policy group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// Where the policy is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_status: Option<PolicyStatusPhase>,
    /// Mode the policy-servers run the policy in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ObservedPolicyMode>,
    /// PolicyActive, PolicyServerConfigurationUpToDate, PolicyUniquelyReachable, PolicyLoaded.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Settings are free-form JSON; the policy validates them.
///
/// Keeps the difference between an absent field (`None`) and an explicit `null`
/// (`Some(Value::Null)`) so that documents round-trip unchanged.
pub(crate) fn deserialize_present<'de, D>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error>
where
    D: Deserializer<'de>,
{
    serde_json::Value::deserialize(deserializer).map(Some)
}

/// Schema of policy settings: any JSON object, kept as is by the apiserver.
pub(crate) fn settings_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "Settings passed to the policy; the policy validates them.",
    })
}
