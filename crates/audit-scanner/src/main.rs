//! The audit-scanner binary: flags and logging around [`audit_scanner::Scanner`]. Exits 0 when
//! the scan completed (even if some policies could not be evaluated: those results say
//! `error`), 1 when it could not.

mod cli;

use anyhow::{Context as _, bail};
use audit_scanner::{PolicyServerClient, Scanner};
use clap::Parser;
use kube::Client;
use tracing_subscriber::EnvFilter;

use cli::Cli;

/// Peak resident memory of this process (VmHWM), for the final log line.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(cli.log_filter())
        .with_context(|| format!("--log-level {:?}", cli.log_level))?;
    // JSON logs on stderr: stdout carries the reports of --output-scan.
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let policy_servers = PolicyServerClient::new(
        &cli.tls_options(),
        &cli.kubewarden_namespace,
        cli.policy_server_url.clone(),
    )?;
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let scanner = Scanner::new(client, policy_servers, cli.scan_options());
    let summary = scanner.run().await?;
    tracing::info!(
        run = %scanner.run_uid(),
        resources = summary.resources,
        reports = summary.reports,
        peak_rss_kib = peak_rss_kib(),
        "done"
    );
    if !summary.failures.is_empty() {
        bail!(
            "the scan did not complete ({} problem(s)): {}",
            summary.failures.len(),
            summary.failures.join("; ")
        );
    }
    Ok(())
}
