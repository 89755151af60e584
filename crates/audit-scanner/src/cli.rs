//! Command line, as upstream's audit-scanner.

use std::path::PathBuf;

use audit_scanner::{ReportKind, ScanOptions, Scope, TlsOptions};
use clap::Parser;

/// Evaluates the resources already in the cluster against the active policies that have
/// background audit enabled, and writes one report per resource (OpenReports or wgpolicyk8s
/// PolicyReports); reports of earlier runs are then deleted.
#[derive(Debug, Parser)]
#[command(name = "audit-scanner", version)]
pub struct Cli {
    /// Scan only this namespace.
    #[arg(short = 'n', long, conflicts_with = "cluster")]
    pub namespace: Option<String>,

    /// Scan only cluster-scoped resources.
    #[arg(short = 'c', long)]
    pub cluster: bool,

    /// Namespace of the Kubewarden stack (never scanned; its policy-servers are called).
    #[arg(short = 'k', long, default_value = "kubewarden")]
    pub kubewarden_namespace: String,

    /// Send every evaluation to this base URL instead of each PolicyServer's Service
    /// (development).
    #[arg(short = 'u', long)]
    pub policy_server_url: Option<String>,

    /// Namespaces not to scan (repeat the flag; `--ignore-namespaces` is upstream's name).
    #[arg(
        short = 'i',
        long = "ignore-namespace",
        visible_alias = "ignore-namespaces"
    )]
    pub ignore_namespaces: Vec<String>,

    /// PEM file with CA certificates to trust for policy-servers (the kubewarden CA).
    #[arg(short = 'f', long)]
    pub extra_ca: Vec<PathBuf>,

    /// Client certificate for policy-servers requiring mutual TLS.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Accept any policy-server certificate (testing only).
    #[arg(long)]
    pub insecure_ssl: bool,

    /// Namespaces scanned at once.
    #[arg(long, default_value_t = 1)]
    pub parallel_namespaces: usize,

    /// Resources audited at once within a namespace.
    #[arg(long, default_value_t = 100)]
    pub parallel_resources: usize,

    /// Policies evaluated at once for one resource.
    #[arg(long, default_value_t = 5)]
    pub parallel_policies: usize,

    /// Objects per list request.
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,

    /// Report format to write.
    #[arg(long, value_enum, default_value = "policyreport")]
    pub report_kind: ReportKind,

    /// Print every report as a JSON line on stdout.
    #[arg(short = 'o', long)]
    pub output_scan: bool,

    /// Do not write reports to the cluster (use with --output-scan).
    #[arg(long)]
    pub disable_store: bool,

    /// Log level: trace, debug, info, warning, error.
    #[arg(short = 'l', long, alias = "loglevel", default_value = "info")]
    pub log_level: String,
}

impl Cli {
    pub fn scan_options(&self) -> ScanOptions {
        let scope = match (&self.namespace, self.cluster) {
            (Some(namespace), _) => Scope::Namespace(namespace.clone()),
            (None, true) => Scope::Cluster,
            (None, false) => Scope::Everything,
        };
        ScanOptions {
            scope,
            kubewarden_namespace: self.kubewarden_namespace.clone(),
            ignore_namespaces: self.ignore_namespaces.clone(),
            parallel_namespaces: self.parallel_namespaces,
            parallel_resources: self.parallel_resources,
            parallel_policies: self.parallel_policies,
            page_size: self.page_size,
            report_kind: self.report_kind,
            store: !self.disable_store,
            output: self.output_scan,
        }
    }

    pub fn tls_options(&self) -> TlsOptions {
        TlsOptions {
            extra_ca: self.extra_ca.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            insecure: self.insecure_ssl,
        }
    }

    /// The tracing filter for `--log-level` (upstream says `warning`).
    pub fn log_filter(&self) -> String {
        match self.log_level.as_str() {
            "warning" => "warn".to_string(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_cronjob_arguments() {
        let cli = Cli::try_parse_from([
            "audit-scanner",
            "-k",
            "kubewarden",
            "--extra-ca",
            "/pki/ca.crt",
            "--client-cert",
            "/client-cert/tls.crt",
            "--client-key",
            "/client-cert/tls.key",
            "-i",
            "kube-system",
            "--ignore-namespaces",
            "kube-public",
            "--report-kind",
            "openreports",
            "--parallel-namespaces",
            "2",
            "-l",
            "warning",
        ])
        .expect("parses");
        let options = cli.scan_options();
        assert_eq!(options.scope, Scope::Everything);
        assert_eq!(options.ignore_namespaces, ["kube-system", "kube-public"]);
        assert_eq!(options.report_kind, ReportKind::Openreports);
        assert_eq!(options.parallel_namespaces, 2);
        assert_eq!(cli.log_filter(), "warn");
        assert!(cli.tls_options().client_key.is_some());
    }

    #[test]
    fn scopes() {
        let cli = Cli::try_parse_from(["audit-scanner", "-n", "team-a"]).expect("parses");
        assert_eq!(cli.scan_options().scope, Scope::Namespace("team-a".into()));
        let cli = Cli::try_parse_from(["audit-scanner", "--cluster"]).expect("parses");
        assert_eq!(cli.scan_options().scope, Scope::Cluster);
        assert!(Cli::try_parse_from(["audit-scanner", "-n", "a", "-c"]).is_err());
        assert!(Cli::try_parse_from(["audit-scanner", "--client-cert", "c"]).is_err());
    }
}
