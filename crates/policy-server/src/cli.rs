//! Command line and environment, as upstream's policy-server reads them, so the Deployment the
//! controller writes runs either binary unchanged.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::builder::FalseyValueParser;
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
    /// JSON logs, and a trace span per request exported over OTLP (`OTEL_EXPORTER_OTLP_*`).
    Otlp,
}

/// HTTPS admission webhook server that evaluates Kubewarden WebAssembly policies.
///
/// Reads the policies from `--policies` (policies.yml), fetches and compiles each module,
/// validates every policy's settings, then answers `POST /validate/<id>`,
/// `/validate_raw/<id>` and `/audit/<id>` on `--port`, `GET /readiness` on
/// `--readiness-probe-port` and, with `--enable-metrics`, Prometheus `GET /metrics` on
/// `--metrics-port`.
#[derive(Debug, Clone, Parser)]
#[command(name = "policy-server", version)]
pub struct Cli {
    /// Log level (trace, debug, info, warn, error).
    #[arg(long, env = "KUBEWARDEN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "KUBEWARDEN_LOG_FMT", value_enum, default_value = "text")]
    pub log_fmt: LogFormat,

    /// Disable colours in text logs.
    #[arg(long, env = "NO_COLOR", value_parser = FalseyValueParser::new())]
    pub log_no_color: bool,

    /// Address to bind every server to.
    #[arg(long, env = "KUBEWARDEN_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub addr: IpAddr,

    /// Port of the webhook server (HTTPS when a certificate is given).
    #[arg(long, env = "KUBEWARDEN_PORT", default_value_t = 3000)]
    pub port: u16,

    /// Port of the plain-HTTP readiness endpoint.
    #[arg(long, env = "KUBEWARDEN_READINESS_PROBE_PORT", default_value_t = 8081)]
    pub readiness_probe_port: u16,

    /// Port of the Prometheus endpoint (with --enable-metrics).
    #[arg(long, env = "KUBEWARDEN_METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,

    /// Serve the Prometheus endpoint with --enable-metrics (`false`: OTLP push only, as
    /// upstream; the controller sets it when an OpenTelemetry sidecar serves that port).
    #[arg(
        long,
        env = "KUBEWARDEN_PROMETHEUS_METRICS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub prometheus_metrics: bool,

    /// Evaluations run at once; defaults to the number of CPUs.
    #[arg(long, env = "KUBEWARDEN_WORKERS")]
    pub workers: Option<usize>,

    /// PEM certificate (chain) of the webhook server. Needs --key-file.
    #[arg(long, env = "KUBEWARDEN_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,

    /// PEM private key of the webhook server. Needs --cert-file.
    #[arg(long, env = "KUBEWARDEN_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,

    /// PEM files of CAs whose client certificates are accepted (mutual TLS); comma separated.
    #[arg(
        long,
        env = "KUBEWARDEN_CLIENT_CA_FILE",
        value_delimiter = ',',
        requires = "cert_file"
    )]
    pub client_ca_file: Vec<PathBuf>,

    /// The policies to serve (policies.yml).
    #[arg(long, env = "KUBEWARDEN_POLICIES", default_value = "policies.yml")]
    pub policies: PathBuf,

    /// Where downloaded policies and the compile cache are kept.
    #[arg(long, env = "KUBEWARDEN_POLICIES_DOWNLOAD_DIR", default_value = ".")]
    pub policies_download_dir: PathBuf,

    /// sources.yml: insecure sources and extra certificate authorities.
    #[arg(long, env = "KUBEWARDEN_SOURCES_PATH")]
    pub sources_path: Option<PathBuf>,

    /// Directory of a Docker config.json with registry credentials.
    #[arg(long, env = "KUBEWARDEN_DOCKER_CONFIG_JSON_PATH")]
    pub docker_config_json_path: Option<PathBuf>,

    /// Signature verification configuration policies must satisfy.
    #[arg(long, env = "KUBEWARDEN_VERIFICATION_CONFIG_PATH")]
    pub verification_path: Option<PathBuf>,

    /// Sigstore cache directory.
    #[arg(
        long,
        env = "KUBEWARDEN_SIGSTORE_CACHE_DIR",
        default_value = "sigstore-data"
    )]
    pub sigstore_cache_dir: PathBuf,

    /// Sigstore ClientTrustConfig JSON.
    #[arg(long, env = "KUBEWARDEN_SIGSTORE_TRUST_CONFIG_PATH")]
    pub sigstore_trust_config: Option<PathBuf>,

    /// Serve Prometheus metrics on --metrics-port, and push them over OTLP when an OTLP
    /// endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[arg(long, env = "KUBEWARDEN_ENABLE_METRICS", value_parser = FalseyValueParser::new())]
    pub enable_metrics: bool,

    /// Accept every request from this namespace without evaluating it.
    #[arg(long, env = "KUBEWARDEN_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE")]
    pub always_accept_admission_reviews_on_namespace: Option<String>,

    /// Let policies run without a deadline.
    #[arg(long, env = "KUBEWARDEN_DISABLE_TIMEOUT_PROTECTION", value_parser = FalseyValueParser::new())]
    pub disable_timeout_protection: bool,

    /// Seconds an evaluation may take unless the policy sets timeoutEvalSeconds.
    #[arg(long, env = "KUBEWARDEN_POLICY_TIMEOUT", default_value_t = 2)]
    pub policy_timeout: u64,

    /// Start even when the Kubernetes API cannot be reached.
    #[arg(long, env = "KUBEWARDEN_IGNORE_KUBERNETES_CONNECTION_FAILURE", value_parser = FalseyValueParser::new())]
    pub ignore_kubernetes_connection_failure: bool,

    /// Exit at start-up when a policy cannot be loaded or has invalid settings (upstream's
    /// behaviour). By default such a policy answers every request with allowed=false, code
    /// 500 and the reason, while the other policies keep serving.
    #[arg(long, env = "KUBEWARDEN_EXIT_ON_POLICY_ERRORS", value_parser = FalseyValueParser::new())]
    pub exit_on_policy_errors: bool,

    /// Reload policies in place (not in upstream): watch the --policies file and, when it
    /// changes, load the new configuration beside the served one and switch to it without
    /// dropping a request. A policy whose new version cannot be loaded keeps serving its
    /// previous version (`GET /status` on the readiness port says why). Changes of the other
    /// files (sources, verification) still need a restart.
    #[arg(long, env = "KUBEWARDEN_RELOAD_POLICIES", value_parser = FalseyValueParser::new())]
    pub reload_policies: bool,

    /// Give every evaluation a fresh WebAssembly instance instead of reusing the instance of an
    /// earlier successful evaluation (stronger isolation between requests, about 5x more
    /// evaluation time for small policies).
    #[arg(long, env = "KUBEWARDEN_FRESH_INSTANCES", value_parser = FalseyValueParser::new())]
    pub fresh_instances: bool,

    /// Run in the background, as upstream's `--daemon`: fork, detach from the terminal, write
    /// the child's pid to --daemon-pid-file and its output to the --daemon-*-file files.
    #[arg(long, env = "KUBEWARDEN_DAEMON", value_parser = FalseyValueParser::new())]
    pub daemon: bool,

    /// Pid file of the daemon (with --daemon).
    #[arg(
        long,
        env = "KUBEWARDEN_DAEMON_PID_FILE",
        default_value = "policy-server.pid"
    )]
    pub daemon_pid_file: PathBuf,

    /// Where the daemon's standard output goes (with --daemon; default: discarded).
    #[arg(long, env = "KUBEWARDEN_DAEMON_STDOUT_FILE")]
    pub daemon_stdout_file: Option<PathBuf>,

    /// Where the daemon's standard error, and so its logs, go (with --daemon; default:
    /// discarded).
    #[arg(long, env = "KUBEWARDEN_DAEMON_STDERR_FILE")]
    pub daemon_stderr_file: Option<PathBuf>,

    /// Upstream's CPU and heap profiling endpoints (`/debug/pprof/{cpu,heap}`). Accepted, but
    /// this build has no in-process profiler: the endpoints answer 501 saying so (profile the
    /// process from outside, e.g. `perf record -p <pid>`).
    #[arg(long, env = "KUBEWARDEN_ENABLE_PPROF", value_parser = FalseyValueParser::new())]
    pub enable_pprof: bool,

    /// Upstream's switch for serving despite policy errors; this is the default here.
    #[arg(long, env = "KUBEWARDEN_CONTINUE_ON_ERRORS", hide = true, value_parser = FalseyValueParser::new())]
    pub continue_on_errors: bool,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "KUBEWARDEN_MAX_REQUEST_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_body_bytes: usize,

    /// Serve `POST /noop`, which parses an AdmissionReview and accepts it without evaluating
    /// anything: the baseline of `cargo xtask bench`.
    #[arg(long, hide = true)]
    pub enable_noop_endpoint: bool,

    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "KUBEWARDEN_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
}

/// Boolean flags read from the environment accept any value: `false`, `0`, `no`, `off` and the
/// empty string mean false, anything else true (`NO_COLOR=1`, `KUBEWARDEN_ENABLE_METRICS=true`).
impl Cli {
    pub fn workers(&self) -> usize {
        self.workers
            .filter(|w| *w > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

#[cfg(test)]
mod tests {
    use clap::builder::TypedValueParser;

    use super::*;

    #[test]
    fn boolean_flags_accept_conventional_environment_values() {
        let command = clap::Command::new("policy-server");
        for (value, expected) in [
            ("1", true),
            ("true", true),
            ("yes", true),
            ("false", false),
            ("0", false),
            ("", false),
        ] {
            let parsed =
                FalseyValueParser::new().parse_ref(&command, None, std::ffi::OsStr::new(value));
            assert_eq!(parsed.ok(), Some(expected), "{value:?}");
        }
        let cli = Cli::try_parse_from(["policy-server", "--log-no-color", "--enable-metrics"])
            .expect("parses");
        assert!(cli.log_no_color && cli.enable_metrics && !cli.exit_on_policy_errors);
    }
}
