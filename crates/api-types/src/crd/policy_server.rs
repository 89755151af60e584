//! `PolicyServer`: a Deployment of policy-servers that policies are bound to.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PodSecurityContext, SecurityContext, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::defaults;

/// Desired state of a PolicyServer.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "policies.kubewarden.io",
    version = "v1",
    kind = "PolicyServer",
    plural = "policyservers",
    shortname = "ps",
    status = "PolicyServerStatus",
    derive = "PartialEq",
    validation = Rule::new("size(self.metadata.name) <= 63").message("name must be at most 63 characters: it is used in label values"),
    doc = "A PolicyServer runs a Deployment of policy-servers that evaluate the policies bound to it.",
    annotation("helm.sh/resource-policy", "keep"),
    printcolumn(name = "Replicas", type_ = "string", json_path = ".spec.replicas", description = "Policy Server replicas"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image", description = "Policy Server image")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minAvailable) || !has(self.maxUnavailable)").message("minAvailable and maxUnavailable are mutually exclusive: set at most one of them"))]
#[x_kube(validation = Rule::new("self.readinessProbePort != self.webhookPort").message("readinessProbePort must differ from webhookPort: both are bound by the same pod"))]
pub struct PolicyServerSpec {
    /// Container image of the policy-server.
    pub image: String,

    /// Number of policy-server replicas. Leave it unset when a HorizontalPodAutoscaler (or
    /// anything else) scales the Deployment: the controller then never sets the Deployment's
    /// replicas, so it does not fight the autoscaler (a new Deployment starts with one).
    /// Upstream requires it; a value here works as there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Smallest number of available replicas during voluntary disruptions. Creates a
    /// PodDisruptionBudget. Mutually exclusive with maxUnavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,

    /// Largest number of unavailable replicas during voluntary disruptions. Creates a
    /// PodDisruptionBudget. Mutually exclusive with minAvailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,

    /// Annotations added to the Deployment and its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,

    /// Labels added to the Deployment and its pods. Labels the controller sets itself win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,

    /// Environment variables of the policy-server container, added after the ones the controller sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,

    /// Service account the policy-server pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Name of a `kubernetes.io/dockerconfigjson` Secret, in the controller namespace, used to
    /// pull policies from registries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,

    /// Registries and HTTP hosts policies may be fetched from without TLS verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_sources: Option<Vec<String>>,

    /// PEM certificates, by `host[:port]`, trusted when fetching policies from that source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_authorities: Option<BTreeMap<String, Vec<String>>>,

    /// Name of a ConfigMap (key `verification-config`) with the signature verification
    /// rules policies must satisfy before they run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_config: Option<String>,

    /// Name of a ConfigMap (key `sigstore-trust-config`) holding a Sigstore ClientTrustConfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigstore_trust_config: Option<String>,

    /// Security contexts replacing the defaults of the policy-server pod and container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_contexts: Option<PolicyServerSecurity>,

    /// Affinity of the policy-server pods. Use pod anti-affinity to keep replicas that bind
    /// the same host ports (host network mode) off the same node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Tolerations of the policy-server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Priority class of the policy-server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// Resource limits of the policy-server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,

    /// Resource requests of the policy-server container. Defaults to the limits when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,

    /// Host capabilities namespaced policies may use (`*`, `oci/*`, `oci/v1/*`, an exact path
    /// such as `kubernetes/can_i`). When unset, every capability is granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaced_policies_capabilities: Option<Vec<String>>,

    /// Port the policy-server serves webhook requests on (a host port in host network mode).
    #[serde(default = "default_webhook_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub webhook_port: i32,

    /// Port of the plain-HTTP readiness endpoint (a host port in host network mode).
    #[serde(default = "default_readiness_probe_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub readiness_probe_port: i32,

    /// Port of the metrics entry of the policy-server Service. Only changes the Service port,
    /// never what the pod binds. Defaults to the controller's policy-server metrics port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: Option<i32>,

    /// How a policy change reaches the running policy-servers. `rollout` (the default, as
    /// upstream): every change rolls the pods. `inPlace`: the pods read the new configuration
    /// from their mounted ConfigMap and switch to it without a restart, keeping the previous
    /// version of a policy whose new one cannot be loaded; webhooks follow once every pod
    /// serves the new version. Not in upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_reload_mode: Option<PolicyReloadMode>,
}

// How a policy change reaches the running policy-servers: `spec.policyReloadMode`, whose
// documentation is the CRD field's (a doc comment here would replace it in the schema).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum PolicyReloadMode {
    /// The pods are replaced by a rollout of the Deployment.
    #[default]
    #[serde(rename = "rollout")]
    Rollout,
    /// The pods load the new configuration beside the old one and switch atomically.
    #[serde(rename = "inPlace")]
    InPlace,
}

fn default_webhook_port() -> i32 {
    defaults::WEBHOOK_PORT
}

fn default_readiness_probe_port() -> i32 {
    defaults::READINESS_PROBE_PORT
}

/// Security contexts of the policy-server pod and container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyServerSecurity {
    /// Replaces the default container security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<SecurityContext>,
    /// Replaces the default pod security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSecurityContext>,
}

/// Observed state of a PolicyServer: one condition per reconciled child object.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyServerStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl PolicyServerSpec {
    /// A spec with the required fields and every default applied.
    pub fn new(image: impl Into<String>, replicas: i32) -> Self {
        PolicyServerSpec {
            image: image.into(),
            replicas: Some(replicas),
            min_available: None,
            max_unavailable: None,
            annotations: None,
            labels: None,
            env: None,
            service_account_name: None,
            image_pull_secret: None,
            insecure_sources: None,
            source_authorities: None,
            verification_config: None,
            sigstore_trust_config: None,
            security_contexts: None,
            affinity: None,
            tolerations: None,
            priority_class_name: None,
            limits: None,
            requests: None,
            namespaced_policies_capabilities: None,
            webhook_port: defaults::WEBHOOK_PORT,
            readiness_probe_port: defaults::READINESS_PROBE_PORT,
            metrics_port: None,
            policy_reload_mode: None,
        }
    }

    /// `spec.policyReloadMode`, `rollout` when unset.
    pub fn effective_policy_reload_mode(&self) -> PolicyReloadMode {
        self.policy_reload_mode.unwrap_or_default()
    }

    /// Port of the metrics entry of the Service, given the controller-wide default.
    pub fn effective_metrics_port(&self, controller_default: i32) -> i32 {
        self.metrics_port.unwrap_or(controller_default)
    }

    /// Capabilities granted to namespaced policies (upstream: unset means all).
    pub fn effective_namespaced_policies_capabilities(&self) -> Vec<String> {
        match &self.namespaced_policies_capabilities {
            Some(list) => list.clone(),
            None => defaults::NAMESPACED_POLICIES_CAPABILITIES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}
