//! The policy-server binary: parses the command line, sets up logging (and `--daemon`), and
//! runs [`policy_server::run`].

use clap::Parser;
use policy_server::{Config as Cli, LogFormat};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The OpenTelemetry export upstream's flags ask for: traces with `--log-fmt otlp`, metrics
/// with `--enable-metrics` when an OTLP endpoint is configured (the Prometheus `/metrics`
/// endpoint serves them either way).
fn telemetry_options(cli: &Cli) -> telemetry::Options {
    telemetry::Options {
        service_name: "kubewarden-policy-server",
        traces: cli.log_fmt == LogFormat::Otlp,
        metrics: cli.enable_metrics && telemetry::endpoint_configured("metrics"),
    }
}

fn init_logging(cli: &Cli, telemetry: &telemetry::Telemetry) {
    // sigstore warns about every signature source an image lacks (no `.sig` tag, a registry
    // without the referrers API) while checking it; verification failures carry their own
    // reason, so its messages are shown only when asked for by name.
    let level = if cli.log_level.contains("sigstore") {
        cli.log_level.clone()
    } else {
        format!("{},sigstore=error", cli.log_level)
    };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(telemetry.layer());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let not_request_spans = policy_server::spans::not_request_spans();
    match cli.log_fmt {
        LogFormat::Text => registry
            .with(
                fmt.with_ansi(!cli.log_no_color)
                    .with_filter(not_request_spans),
            )
            .init(),
        LogFormat::Json | LogFormat::Otlp => registry
            .with(fmt.json().with_filter(not_request_spans))
            .init(),
    }
}

/// Forks into the background for `--daemon`, before any thread exists (the async runtime is
/// built afterwards), as upstream does.
fn daemonize(cli: &Cli) -> Result<(), String> {
    let output =
        |path: &Option<std::path::PathBuf>, what: &str| -> Result<daemonize::Stdio, String> {
            match path {
                Some(path) => std::fs::File::create(path)
                    .map(daemonize::Stdio::from)
                    .map_err(|e| format!("--daemon-{what}-file {}: {e}", path.display())),
                None => Ok(daemonize::Stdio::devnull()),
            }
        };
    let working_directory =
        std::env::current_dir().map_err(|e| format!("the working directory: {e}"))?;
    daemonize::Daemonize::new()
        .pid_file(&cli.daemon_pid_file)
        // Relative paths in the flags keep meaning what they meant.
        .working_directory(working_directory)
        .stdout(output(&cli.daemon_stdout_file, "stdout")?)
        .stderr(output(&cli.daemon_stderr_file, "stderr")?)
        .start()
        .map_err(|e| format!("--daemon: {e}"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.daemon
        && let Err(err) = daemonize(&cli)
    {
        eprintln!("policy-server: {err}");
        return std::process::ExitCode::FAILURE;
    }
    // reqwest and oci-client use rustls without choosing a provider; we use ring throughout.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let workers = cli.workers();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.clamp(1, 4))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("policy-server: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Exports run on the runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        match telemetry::Telemetry::start(&telemetry_options(&cli)) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("policy-server: OpenTelemetry: {err}");
                return std::process::ExitCode::FAILURE;
            }
        }
    };
    init_logging(&cli, &telemetry);
    let result = runtime.block_on(async {
        let result = policy_server::run(cli).await;
        telemetry.shutdown();
        result
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "policy-server stopped");
            eprintln!("policy-server: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
