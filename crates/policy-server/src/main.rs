//! The policy-server binary: parses the command line, sets up logging (and `--daemon`), and
//! runs [`policy_server::run`].

use clap::Parser;
use policy_server::{Config as Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn init_logging(cli: &Cli) {
    // sigstore warns about every signature source an image lacks (no `.sig` tag, a registry
    // without the referrers API) while checking it; verification failures carry their own
    // reason, so its messages are shown only when asked for by name.
    let level = if cli.log_level.contains("sigstore") {
        cli.log_level.clone()
    } else {
        format!("{},sigstore=error", cli.log_level)
    };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_fmt {
        LogFormat::Text => builder.with_ansi(!cli.log_no_color).init(),
        LogFormat::Json | LogFormat::Otlp => builder.json().init(),
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
    init_logging(&cli);
    // reqwest and oci-client use rustls without choosing a provider; we use ring throughout.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if cli.log_fmt == LogFormat::Otlp {
        tracing::warn!(
            "--log-fmt otlp: OpenTelemetry export is not available in this build; logging JSON to stderr"
        );
    }
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
    match runtime.block_on(policy_server::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "policy-server stopped");
            eprintln!("policy-server: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
