//! Command line and environment, named as upstream's controller flags so the same chart
//! arguments work.

use clap::Parser;
use clap::builder::FalseyValueParser;

use kubewarden_controller::servers::parse_bind_address;
use kubewarden_controller::{Options, OwnPorts, TelemetryOptions};

/// Kubernetes controller for Kubewarden: reconciles PolicyServers into Deployments, Services,
/// Secrets, ConfigMaps and PodDisruptionBudgets, and policies into webhook configurations.
#[derive(Debug, Parser)]
#[command(name = "kubewarden-controller", version)]
pub struct Cli {
    /// Namespace of the controller and of every policy-server it deploys.
    #[arg(
        long,
        env = "KUBEWARDEN_DEPLOYMENTS_NAMESPACE",
        default_value = "kubewarden"
    )]
    pub deployments_namespace: String,

    /// Elect a leader through a Lease so only one replica reconciles.
    #[arg(long, env = "KUBEWARDEN_LEADER_ELECT", value_parser = FalseyValueParser::new())]
    pub leader_elect: bool,

    /// Address of /healthz and /readyz (`:port` or `host:port`).
    #[arg(
        long,
        env = "KUBEWARDEN_HEALTH_PROBE_BIND_ADDRESS",
        default_value = ":8081"
    )]
    pub health_probe_bind_address: String,

    /// Address of the controller's /metrics (`0` disables it).
    #[arg(long, env = "KUBEWARDEN_METRICS_BIND_ADDRESS", default_value = ":8088")]
    pub metrics_bind_address: String,

    /// Port of the CRD admission webhook server. Accepted for compatibility with upstream's
    /// chart arguments; this controller validates custom resources through CRD validation rules
    /// and status conditions and binds no webhook port.
    #[arg(long, env = "KUBEWARDEN_WEBHOOK_SERVER_PORT", default_value_t = 9443)]
    pub webhook_server_port: u16,

    /// Service name of the CRD webhook server; accepted for compatibility (see
    /// --webhook-server-port).
    #[arg(long, default_value = "kubewarden-controller-webhook-service")]
    pub webhook_service_name: String,

    /// Policy-servers accept every request for objects in the deployments namespace.
    #[arg(long, env = "KUBEWARDEN_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_DEPLOYMENTS_NAMESPACE", value_parser = FalseyValueParser::new())]
    pub always_accept_admission_reviews_on_deployments_namespace: bool,

    /// Image pull secrets added to every policy-server pod (comma separated).
    #[arg(long, env = "KUBEWARDEN_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub image_pull_secrets: Vec<String>,

    /// Run policy-server pods in the node's network namespace (hostNetwork, with dnsPolicy
    /// ClusterFirstWithHostNet).
    #[arg(long, env = "KUBEWARDEN_HOST_NETWORK", value_parser = FalseyValueParser::new())]
    pub host_network: bool,

    /// Port policy-servers serve metrics on; target port of their Services' `metrics` port.
    #[arg(long, env = "KUBEWARDEN_POLICY_SERVER_METRICS_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub policy_server_metrics_port: Option<u16>,

    /// Turn on policy-server metrics (and the `metrics` port of their Services).
    #[arg(long, env = "KUBEWARDEN_ENABLE_METRICS", value_parser = FalseyValueParser::new())]
    pub enable_metrics: bool,

    /// Export traces over OTLP: the controller's reconciliations, and the policy-servers'
    /// admission requests (`KUBEWARDEN_LOG_FMT=otlp` in their pods). Where to is the standard
    /// `OTEL_EXPORTER_OTLP_*` environment.
    #[arg(long, value_parser = FalseyValueParser::new())]
    pub enable_tracing: bool,

    /// Policy-server pods get an OpenTelemetry Collector sidecar from the OpenTelemetry
    /// Operator (`sidecar.opentelemetry.io/inject`) and export to it on localhost:4317.
    /// Refused together with --host-network, as upstream does.
    #[arg(long, value_parser = FalseyValueParser::new())]
    pub enable_otel_sidecar: bool,

    /// Secret (key `ca.crt`) with the CA of the OpenTelemetry collector, mounted at
    /// /otel-certificate in policy-server pods (custom telemetry mode).
    #[arg(long)]
    pub opentelemetry_certificate_secret: Option<String>,

    /// Secret (keys `tls.crt`, `tls.key`) with the client certificate presented to the
    /// OpenTelemetry collector, mounted at /otel-client-certificate in policy-server pods.
    #[arg(long)]
    pub opentelemetry_client_certificate_secret: Option<String>,

    /// ConfigMap (key client-ca.crt) with the CA of clients allowed to call policy-servers:
    /// turns on mutual TLS.
    #[arg(long, env = "KUBEWARDEN_CLIENT_CA_CONFIGMAP_NAME")]
    pub client_ca_configmap_name: Option<String>,

    /// Log level (trace, debug, info, warn, error); also accepted as --zap-log-level.
    #[arg(
        long,
        alias = "zap-log-level",
        env = "KUBEWARDEN_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "KUBEWARDEN_LOG_FMT", value_enum, default_value = "text")]
    pub log_fmt: LogFormat,

    /// Clean up instead of reconciling (the chart's pre-delete hook): delete every
    /// PolicyServer, wait until the running controller has finalized them and removed their
    /// policies' webhooks, then exit.
    #[arg(long)]
    pub cleanup: bool,

    /// How long --cleanup waits before it fails, naming what is left.
    #[arg(long, default_value_t = 240, requires = "cleanup")]
    pub cleanup_timeout_seconds: u64,
}

/// The controller's `OTEL_EXPORTER_OTLP_*` settings (where and how to export), sorted by
/// name, that policy-servers get too, as upstream copies them in custom telemetry mode. Not
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`: those say who the controller is.
fn otlp_environment() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with("OTEL_EXPORTER_OTLP_"))
        .collect();
    vars.sort();
    vars
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The environment variable upstream used before `--policy-server-metrics-port` existed.
const DEPRECATED_METRICS_PORT_ENV: &str = "KUBEWARDEN_POLICY_SERVER_SERVICES_METRICS_PORT";

impl Cli {
    /// Checks the combination of flags and turns them into controller options.
    pub fn options(&self) -> Result<Options, String> {
        if self.host_network && self.enable_otel_sidecar {
            return Err(
                "--host-network and --enable-otel-sidecar are incompatible: a sidecar collector \
                 would bind its ports on the node; send telemetry to a custom collector instead"
                    .to_string(),
            );
        }
        let metrics_port = match self.policy_server_metrics_port {
            Some(port) => i32::from(port),
            None => match std::env::var(DEPRECATED_METRICS_PORT_ENV) {
                Ok(text) => text
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .map(i32::from)
                    .ok_or_else(|| {
                        format!("{DEPRECATED_METRICS_PORT_ENV}={text:?} is not a port")
                    })?,
                Err(_) => api_types::defaults::METRICS_PORT,
            },
        };
        let port_of = |address: &str| -> Result<Option<u16>, String> {
            Ok(parse_bind_address(address)?.map(|a| a.port()))
        };
        Ok(Options {
            telemetry: TelemetryOptions {
                tracing: self.enable_tracing,
                sidecar: self.enable_otel_sidecar,
                otlp_env: if self.enable_otel_sidecar {
                    Vec::new()
                } else {
                    otlp_environment()
                },
                certificate_secret: self.opentelemetry_certificate_secret.clone(),
                client_certificate_secret: self.opentelemetry_client_certificate_secret.clone(),
            },
            deployments_namespace: self.deployments_namespace.clone(),
            always_accept_admission_reviews_on_deployments_namespace: self
                .always_accept_admission_reviews_on_deployments_namespace,
            image_pull_secrets: self
                .image_pull_secrets
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            host_network: self.host_network,
            policy_server_metrics_port: metrics_port,
            enable_metrics: self.enable_metrics,
            client_ca_configmap_name: self.client_ca_configmap_name.clone(),
            own_ports: OwnPorts {
                health_probe: port_of(&self.health_probe_bind_address)?,
                metrics: port_of(&self.metrics_bind_address)?,
                webhook: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("controller").chain(args.iter().copied()))
            .expect("arguments parse")
    }

    #[test]
    fn upstream_chart_arguments_parse() {
        let cli = parse(&[
            "--leader-elect",
            "--deployments-namespace=kubewarden",
            "--webhook-service-name=kubewarden-controller-webhook-service",
            "--webhook-server-port=9443",
            "--health-probe-bind-address=:8081",
            "--metrics-bind-address=:8088",
            "--zap-log-level=debug",
            "--always-accept-admission-reviews-on-deployments-namespace",
            "--image-pull-secrets=a,b",
            "--host-network",
        ]);
        let options = cli.options().expect("options");
        assert!(options.host_network);
        assert_eq!(options.image_pull_secrets, ["a", "b"]);
        assert_eq!(options.own_ports.health_probe, Some(8081));
        assert_eq!(options.own_ports.metrics, Some(8088));
        assert_eq!(options.policy_server_metrics_port, 8080);
        assert_eq!(cli.log_level, "debug");
    }

    #[test]
    fn cleanup_mode() {
        let cli = parse(&["--cleanup"]);
        assert!(cli.cleanup);
        assert_eq!(cli.cleanup_timeout_seconds, 240);
        assert!(!parse(&[]).cleanup);
        let args = ["controller", "--cleanup-timeout-seconds=5"];
        assert!(Cli::try_parse_from(args).is_err(), "only with --cleanup");
    }

    #[test]
    fn host_network_refuses_the_otel_sidecar() {
        let cli = parse(&["--host-network", "--enable-otel-sidecar"]);
        let err = cli.options().expect_err("incompatible");
        assert!(err.contains("incompatible"), "{err}");
    }

    #[test]
    fn ports_out_of_range_are_refused() {
        let args = ["controller", "--policy-server-metrics-port=70000"];
        assert!(Cli::try_parse_from(args).is_err());
        let cli = parse(&["--health-probe-bind-address=:70000"]);
        assert!(cli.options().is_err());
    }
}
