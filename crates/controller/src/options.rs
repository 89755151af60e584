//! What the controller was told at start-up, as plain values the pure builders take.

use api_types::defaults;

/// Controller-wide settings that shape every object the controller generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Namespace of the controller and of every policy-server Deployment, Service, Secret and
    /// ConfigMap.
    pub deployments_namespace: String,
    /// Policy-servers accept every request for objects in the deployments namespace, so a
    /// broken policy cannot lock the stack out of repairing itself.
    pub always_accept_admission_reviews_on_deployments_namespace: bool,
    /// Secrets added to `imagePullSecrets` of every policy-server pod.
    pub image_pull_secrets: Vec<String>,
    /// Run every policy-server pod in the node's network namespace.
    pub host_network: bool,
    /// Port policy-servers serve Prometheus metrics on inside their pod; the target port of the
    /// Service's `metrics` port.
    pub policy_server_metrics_port: i32,
    /// Whether policy-servers expose metrics (and their Service a `metrics` port).
    pub enable_metrics: bool,
    /// ConfigMap (key `client-ca.crt`) with the CA of clients allowed to call policy-servers;
    /// turns on mutual TLS between the apiserver and the policy-servers.
    pub client_ca_configmap_name: Option<String>,
    /// Ports the controller itself binds; in host network mode they are bound on the node and
    /// a policy-server on the same node must not use them.
    pub own_ports: OwnPorts,
    /// How policy-servers export OpenTelemetry.
    pub telemetry: TelemetryOptions,
}

/// OpenTelemetry export of the policy-servers (upstream's `telemetry.*` chart values, as
/// controller flags and environment).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TelemetryOptions {
    /// Export traces of admission requests (`KUBEWARDEN_LOG_FMT=otlp`).
    pub tracing: bool,
    /// Sidecar mode: the OpenTelemetry Operator injects a collector into each pod, which the
    /// policy-server exports to on localhost.
    pub sidecar: bool,
    /// Custom mode: the controller's own `OTEL_EXPORTER_OTLP_*` variables, passed on.
    pub otlp_env: Vec<(String, String)>,
    /// Secret with the collector's CA (`ca.crt`).
    pub certificate_secret: Option<String>,
    /// Secret with the client certificate for the collector (`tls.crt`, `tls.key`).
    pub client_certificate_secret: Option<String>,
}

impl TelemetryOptions {
    /// Whether the policy-servers export anything over OTLP, given whether metrics are on.
    pub fn exports(&self, metrics: bool) -> bool {
        self.tracing || metrics
    }
}

/// Ports bound by the controller process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnPorts {
    pub health_probe: Option<u16>,
    pub metrics: Option<u16>,
    pub webhook: Option<u16>,
}

impl OwnPorts {
    /// Each bound port with what binds it, for messages.
    pub fn named(&self) -> Vec<(u16, &'static str)> {
        [
            (self.health_probe, "health probe"),
            (self.metrics, "metrics"),
            (self.webhook, "webhook server"),
        ]
        .into_iter()
        .filter_map(|(port, what)| port.map(|p| (p, what)))
        .collect()
    }
}

impl Options {
    /// The settings a default installation runs with, in `namespace`.
    pub fn new(deployments_namespace: impl Into<String>) -> Self {
        Options {
            deployments_namespace: deployments_namespace.into(),
            always_accept_admission_reviews_on_deployments_namespace: false,
            image_pull_secrets: Vec::new(),
            host_network: false,
            policy_server_metrics_port: defaults::METRICS_PORT,
            enable_metrics: false,
            client_ca_configmap_name: None,
            own_ports: OwnPorts::default(),
            telemetry: TelemetryOptions::default(),
        }
    }
}
