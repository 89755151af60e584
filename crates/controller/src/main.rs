//! The Kubewarden controller binary: flags, logging, leader election and the HTTP endpoints
//! around [`kubewarden_controller::run`].

mod cli;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Parser;
use kube::Client;
use kubewarden_controller::leader::LeaderElection;
use kubewarden_controller::servers::{parse_bind_address, serve_health, serve_metrics};
use kubewarden_controller::{Metrics, run};
use tracing_subscriber::EnvFilter;

use cli::{Cli, LogFormat};

fn init_logging(cli: &Cli, telemetry: &telemetry::Telemetry) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_new(&cli.log_level)
        .with_context(|| format!("--log-level {:?}", cli.log_level))?;
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(telemetry.layer());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match cli.log_fmt {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

async fn connect() -> anyhow::Result<Client> {
    // kube builds its TLS configuration with rustls' process default; when the workspace is
    // built together rustls carries two providers and has no default of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")
}

/// `--cleanup`: the chart's pre-delete hook.
async fn cleanup(timeout: Duration) -> anyhow::Result<()> {
    kubewarden_controller::cleanup::run(connect().await?, timeout)
        .await
        .context("cleaning up before uninstall")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // kube and the OTLP exporters build their TLS with rustls' process default, which rustls
    // cannot pick by itself when the workspace's features give it two providers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // With --enable-tracing, reconciliations are exported as traces (OTEL_EXPORTER_OTLP_*).
    let telemetry = telemetry::Telemetry::start(&telemetry::Options {
        service_name: "kubewarden-controller",
        traces: cli.enable_tracing && !cli.cleanup,
        metrics: false,
    })
    .context("OpenTelemetry")?;
    init_logging(&cli, &telemetry)?;
    // Every exit flushes the last spans: they often explain why it stopped.
    let result = serve(cli).await;
    telemetry.shutdown();
    result
}

/// Runs the controllers (or `--cleanup`) until a signal stops them or they fail.
async fn serve(cli: Cli) -> anyhow::Result<()> {
    let options = cli.options().map_err(|e| anyhow!(e))?;
    if cli.cleanup {
        return cleanup(Duration::from_secs(cli.cleanup_timeout_seconds)).await;
    }
    let health_address =
        parse_bind_address(&cli.health_probe_bind_address).map_err(|e| anyhow!(e))?;
    let metrics_address = parse_bind_address(&cli.metrics_bind_address).map_err(|e| anyhow!(e))?;

    let metrics = Arc::new(Metrics::new().context("metrics registry")?);
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(address) = health_address {
        let ready = ready.clone();
        tokio::spawn(async move {
            if let Err(err) = serve_health(address, ready).await {
                tracing::error!(%address, error = %err, "health probe server stopped");
                std::process::exit(1);
            }
        });
    }
    if let Some(address) = metrics_address {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(err) = serve_metrics(address, metrics).await {
                tracing::error!(%address, error = %err, "metrics server stopped");
                std::process::exit(1);
            }
        });
    }

    let client = connect().await?;
    tracing::info!(
        namespace = %options.deployments_namespace,
        host_network = options.host_network,
        "starting the controller"
    );
    // A standby replica is healthy and ready: readiness gates traffic, not leadership.
    ready.store(true, Ordering::Relaxed);

    let election = cli.leader_elect.then(|| {
        let identity = format!(
            "{}_{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "controller".to_string()),
            std::process::id()
        );
        LeaderElection::new(client.clone(), &options.deployments_namespace, identity)
    });
    let work = async {
        if let Some(election) = &election {
            election.acquire().await?;
            metrics.leader.set(1);
            tokio::select! {
                () = run(client.clone(), options, metrics.clone()) => Err(anyhow!("the controllers stopped")),
                lost = election.hold() => Err(anyhow!("lost the leader lease: {lost}")),
            }
        } else {
            run(client.clone(), options, metrics.clone()).await;
            Err(anyhow!("the controllers stopped"))
        }
    };
    let result = tokio::select! {
        result = work => result,
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    if let Some(election) = &election {
        election.release().await;
    }
    result
}
