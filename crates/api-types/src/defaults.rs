//! Default values shared by the CRDs, the controller and the policy-server.

/// Port the policy-server serves `/validate/<id>` on, inside the pod (or on the node in host
/// network mode), when `PolicyServer.spec.webhookPort` is not set.
pub const WEBHOOK_PORT: i32 = 8443;

/// Port of the policy-server's plain-HTTP `/readiness` endpoint when
/// `PolicyServer.spec.readinessProbePort` is not set.
pub const READINESS_PROBE_PORT: i32 = 8081;

/// Controller-wide default of the policy-server metrics port. `PolicyServer.spec.metricsPort`
/// only overrides the port of the Service, never what the pod binds.
pub const METRICS_PORT: i32 = 8080;

/// The port every policy-server Service exposes the webhook on; the apiserver dials it.
pub const SERVICE_WEBHOOK_PORT: i32 = 443;

/// Name of the PolicyServer a policy binds to when `spec.policyServer` is empty.
pub const POLICY_SERVER_NAME: &str = "default";

/// Namespace the controller and the policy-servers run in unless told otherwise.
pub const DEPLOYMENTS_NAMESPACE: &str = "kubewarden";

/// Webhook call timeout (seconds) when a policy does not set `timeoutSeconds`.
pub const WEBHOOK_TIMEOUT_SECONDS: i32 = 10;

/// Bounds Kubernetes puts on admission webhook timeouts, which Kubewarden narrows to start at 2.
pub const MIN_TIMEOUT_SECONDS: i32 = 2;
pub const MAX_TIMEOUT_SECONDS: i32 = 30;

/// Largest number of `matchConditions` a webhook may carry (Kubernetes' own limit).
pub const MAX_MATCH_CONDITIONS: usize = 64;

/// Host capabilities granted to namespaced policies when a PolicyServer does not list any
/// (upstream controller behaviour: a missing list means "everything").
pub const NAMESPACED_POLICIES_CAPABILITIES: &[&str] = &["*"];
