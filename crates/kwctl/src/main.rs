//! `kwctl`: the Kubewarden policy CLI, running policies with this project's policy-evaluator,
//! so what it answers is what the policy-server answers. Subcommands, flags and output as
//! upstream's kwctl where they exist here: `run`, `bench`, `annotate`, `inspect`, `policies`,
//! `pull`, `push`, `rm`, `verify`, `save`, `load`, `scaffold manifest`,
//! `scaffold verification-config`, `completions`.

mod airgap;
mod annotate;
mod bench;
mod host;
mod inspect;
mod oci;
mod run;
mod scaffold;
mod session;
mod store;
mod verify;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use policy_evaluator::metadata::ExecutionMode;

use crate::store::Store;
use crate::verify::VerificationArgs;

#[derive(Debug, Parser)]
#[command(
    name = "kwctl",
    version,
    about = "Tool to manage Kubewarden policies",
    arg_required_else_help = true
)]
struct Cli {
    /// Increase verbosity (debug logs on stderr).
    #[arg(short, long)]
    verbose: bool,
    /// Disable colored output (accepted for compatibility; the output has no colors).
    #[arg(long)]
    no_color: bool,
    #[command(subcommand)]
    command: Command,
}

/// Execution modes `run --execution-mode` accepts (upstream's names).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Opa,
    Gatekeeper,
    Kubewarden,
    Wasi,
}

impl From<Mode> for ExecutionMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Opa => ExecutionMode::Opa,
            Mode::Gatekeeper => ExecutionMode::Gatekeeper,
            Mode::Kubewarden => ExecutionMode::KubewardenWapc,
            Mode::Wasi => ExecutionMode::Wasi,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a Kubewarden policy from a given URI.
    Run(RunArgs),
    /// Benchmarks a Kubewarden policy: its settings validation and its evaluation of the
    /// request, warm.
    Bench {
        #[command(flatten)]
        run: RunArgs,
        /// Seconds of evaluations before measuring.
        #[arg(long, value_name = "SECONDS", default_value_t = 3)]
        warm_up_time: u64,
        /// Seconds of measured evaluations, per operation.
        #[arg(long, value_name = "SECONDS", default_value_t = 5)]
        measurement_time: u64,
    },
    /// Saves stored policies into a gzipped tarball (for clusters without registry access).
    Save {
        /// The tarball to write.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// Stored policies: URIs or SHA-256 prefixes.
        #[arg(required = true, value_name = "policies")]
        policies: Vec<String>,
    },
    /// Loads the policies of a tarball made by `kwctl save` into the store.
    Load {
        /// The tarball to read.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
    },
    /// Adds Kubewarden metadata to a WebAssembly module.
    Annotate {
        /// The module to annotate.
        #[arg(value_name = "wasm-path")]
        wasm_path: PathBuf,
        /// File containing the metadata (YAML).
        #[arg(short, long, value_name = "PATH")]
        metadata_path: PathBuf,
        /// Where to write the annotated module.
        #[arg(short, long, value_name = "PATH")]
        output_path: PathBuf,
        /// File with the policy's usage documentation (markdown), stored as an annotation.
        #[arg(short, long, value_name = "PATH")]
        usage_path: Option<PathBuf>,
    },
    /// Inspects a Kubewarden policy's metadata.
    Inspect {
        #[arg(value_name = "uri_or_sha_prefix")]
        uri: String,
        /// Output format.
        #[arg(short, long, value_name = "FORMAT")]
        output: Option<OutputFormat>,
        /// Also shows the Sigstore signatures of a registry:// policy (read from its registry).
        #[arg(long)]
        show_signatures: bool,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Lists the policies of the local store.
    Policies,
    /// Pulls a policy into the local store.
    Pull {
        /// Policy URI (`registry://`, `https://`, or a bare registry reference).
        uri: String,
        /// Writes the module here instead of into the store.
        #[arg(short, long, value_name = "PATH")]
        output_path: Option<PathBuf>,
        #[command(flatten)]
        access: AccessArgs,
        #[command(flatten)]
        verification: VerificationArgs,
    },
    /// Verifies the Sigstore signatures of a policy in a registry.
    Verify {
        /// Policy URI (`registry://`).
        uri: String,
        #[command(flatten)]
        access: AccessArgs,
        #[command(flatten)]
        verification: VerificationArgs,
    },
    /// Pushes a policy to an OCI registry.
    Push {
        /// The policy: a local path, URI or SHA-256 prefix of a stored policy.
        #[arg(value_name = "policy")]
        policy: String,
        /// Destination: `registry://host/repository:tag` or `host/repository:tag`.
        #[arg(value_name = "uri")]
        uri: String,
        /// Pushes a module without (valid) metadata.
        #[arg(short, long)]
        force: bool,
        /// Output format.
        #[arg(short, long, value_name = "FORMAT")]
        output: Option<PushOutput>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Removes a policy from the store.
    Rm {
        #[arg(value_name = "uri_or_sha_prefix")]
        uri: String,
    },
    /// Scaffolds a Kubernetes resource or configuration file.
    #[command(subcommand)]
    Scaffold(Scaffold),
    /// Generates shell completions.
    Completions {
        #[arg(short, long, value_name = "VALUE")]
        shell: clap_complete::Shell,
    },
}

/// What `run` and `bench` take.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Policy URI (file://, or registry:// / https:// from the store), local path, or
    /// SHA-256 prefix of a stored policy.
    #[arg(value_name = "uri_or_sha_prefix")]
    uri: String,
    /// File containing the AdmissionReview or AdmissionRequest; `-` reads standard input.
    #[arg(short, long, value_name = "PATH")]
    request_path: PathBuf,
    /// File containing the settings (YAML or JSON).
    #[arg(short, long, value_name = "PATH", conflicts_with = "settings_json")]
    settings_path: Option<PathBuf>,
    /// The settings as a JSON string.
    #[arg(long, value_name = "VALUE")]
    settings_json: Option<String>,
    /// Runs the module in this mode instead of the one its metadata names.
    #[arg(short, long, value_name = "MODE")]
    execution_mode: Option<Mode>,
    /// Evaluates the request as a free-form document (raw policies).
    #[arg(long)]
    raw: bool,
    /// Turns off the compile cache.
    #[arg(long)]
    disable_wasmtime_cache: bool,
    /// Grants access to the Kubernetes resources of the policy's `contextAwareResources`.
    /// Review them first (kwctl inspect).
    #[arg(long)]
    allow_context_aware: bool,
    /// Records every exchange between the policy and the host capabilities to this file,
    /// for --replay-host-capabilities-interactions.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "replay_host_capabilities_interactions"
    )]
    record_host_capabilities_interactions: Option<PathBuf>,
    /// Answers the policy's host capability calls from this recorded session: no cluster,
    /// registry or network is reached.
    #[arg(long, value_name = "FILE")]
    replay_host_capabilities_interactions: Option<PathBuf>,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    verification: VerificationArgs,
}

impl RunArgs {
    /// The policy's URI and file (pulled first when it is not stored, or when its signatures
    /// are verified), and how to run it.
    fn options(self, store: &Store) -> Result<(String, PathBuf, run::RunOptions)> {
        let config_dir = config_dir();
        let access = self.access.access();
        let (uri, module) =
            fetch_for_run(store, &access, &config_dir, &self.uri, &self.verification)?;
        let interactions = match (
            self.record_host_capabilities_interactions,
            self.replay_host_capabilities_interactions,
        ) {
            (Some(path), _) => host::Interactions::Record(path),
            (None, Some(path)) => host::Interactions::Replay(path),
            (None, None) => host::Interactions::Direct,
        };
        let host = run::HostOptions {
            interactions,
            allow_context_aware: self.allow_context_aware,
            fetcher: access.fetcher(&config_dir, std::env::temp_dir())?,
            trust_root: self.verification.trust_root(sigstore_cache()?)?,
        };
        let options = run::RunOptions {
            request_path: self.request_path,
            settings: run::read_settings(
                self.settings_path.as_deref(),
                self.settings_json.as_deref(),
            )?,
            execution_mode: self.execution_mode.map(Into::into),
            raw: self.raw,
            cache_dir: (!self.disable_wasmtime_cache)
                .then(|| store::cache_dir().ok())
                .flatten()
                .map(|dir| dir.join("kubewarden").join("compile-cache")),
            host,
        };
        Ok((uri, module, options))
    }
}

/// Where the Sigstore trust root fetched through TUF is kept.
fn sigstore_cache() -> Result<PathBuf> {
    Ok(store::cache_dir()?.join("kubewarden").join("sigstore"))
}

/// The policy to run: a local file as it is; a remote one from the store, pulled first when
/// it is not there. When signatures must be verified, a `registry://` policy (named or found
/// by SHA-256 prefix) is verified and pulled again by its verified digest; any other policy is
/// refused (it carries no signatures), unless only the default verification config asked.
fn fetch_for_run(
    store: &Store,
    access: &oci::Access,
    config_dir: &std::path::Path,
    name: &str,
    verification: &VerificationArgs,
) -> Result<(String, PathBuf)> {
    let remote = name.starts_with("registry://")
        || name.starts_with("https://")
        || name.starts_with("http://");
    let uri = if remote {
        oci::policy_uri(name)
    } else {
        let (uri, module) = store.resolve(name)?;
        if !uri.starts_with("registry://") {
            if verification.config(config_dir)?.is_some() {
                if verification.explicitly_requested() {
                    anyhow::bail!(
                        "Policy {uri} cannot be verified: only registry:// policies carry signatures"
                    );
                }
                tracing::warn!(%uri, "not verified: only registry:// policies carry signatures");
            }
            return Ok((uri, module));
        }
        uri
    };
    let verified = verified_digest(access, config_dir, &uri, verification)?;
    if verified.is_some() || !store.path_of(&uri)?.is_file() {
        tracing::info!(%uri, "pulling policy...");
        oci::pull(store, access, config_dir, &uri, None, verified.as_deref())?;
    }
    store.resolve(&uri)
}

/// The digest whose signatures satisfy the verification flags, when they ask for any.
fn verified_digest(
    access: &oci::Access,
    config_dir: &std::path::Path,
    uri: &str,
    verification: &VerificationArgs,
) -> Result<Option<String>> {
    match verification.config(config_dir)? {
        Some(config) => verify_policy(access, config_dir, uri, &config, verification).map(Some),
        None => Ok(None),
    }
}

/// Checks the signatures of the registry policy `uri` against `config`; the verified digest.
fn verify_policy(
    access: &oci::Access,
    config_dir: &std::path::Path,
    uri: &str,
    config: &api_types::config::VerificationConfig,
    verification: &VerificationArgs,
) -> Result<String> {
    let digest = verify::verify(
        access,
        config_dir,
        uri,
        config,
        verification.trust_root(sigstore_cache()?)?,
    )?;
    tracing::info!(%uri, %digest, "Policy successfully verified");
    Ok(digest)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Yaml,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PushOutput {
    Text,
    Json,
}

/// How registries are reached (upstream's flags).
#[derive(Debug, clap::Args)]
struct AccessArgs {
    /// Directory holding a Docker `config.json` with registry credentials.
    #[arg(long, value_name = "PATH")]
    docker_config_json_path: Option<PathBuf>,
    /// YAML file holding source information (insecure sources, certificate authorities).
    #[arg(long, value_name = "PATH")]
    sources_path: Option<PathBuf>,
}

impl AccessArgs {
    fn access(&self) -> oci::Access {
        oci::Access {
            sources_path: self.sources_path.clone(),
            docker_config_dir: self.docker_config_json_path.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Scaffold {
    /// Outputs a Kubernetes resource manifest for the policy.
    Manifest {
        #[arg(value_name = "uri_or_sha_prefix")]
        uri: String,
        /// Kubewarden custom resource type.
        #[arg(short = 't', long = "type", value_name = "VALUE")]
        kind: scaffold::ManifestType,
        /// Policy title (the resource's name).
        #[arg(long, value_name = "VALUE")]
        title: Option<String>,
        /// File containing the settings (YAML or JSON).
        #[arg(short, long, value_name = "PATH", conflicts_with = "settings_json")]
        settings_path: Option<PathBuf>,
        /// The settings as a JSON string.
        #[arg(long, value_name = "VALUE")]
        settings_json: Option<String>,
        /// Copies the resources the policy reads at evaluation time into the manifest.
        #[arg(long)]
        allow_context_aware: bool,
    },
    /// Outputs the default Sigstore verification configuration.
    VerificationConfig,
}

/// Upstream's configuration directory: `$XDG_CONFIG_HOME/kubewarden`, else
/// `~/.config/kubewarden`.
fn config_dir() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("~/.config"))
        .join("kubewarden")
}

fn execute(command: Command) -> Result<String> {
    let store = Store::default_location()?;
    match command {
        Command::Run(args) => {
            let (uri, module, options) = args.options(&store)?;
            let response = run::run(&uri, &module, &options)?;
            Ok(format!("{}\n", run::print_response(&response)?))
        }
        Command::Bench {
            run: args,
            warm_up_time,
            measurement_time,
        } => {
            let (uri, module, options) = args.options(&store)?;
            // One reused instance, as each policy-server worker keeps.
            let prepared = run::Prepared::new(&uri, &module, &options, 1)?;
            let report = bench::bench(
                &prepared.evaluator,
                &prepared.request,
                prepared.raw,
                bench::BenchOptions {
                    warm_up: std::time::Duration::from_secs(warm_up_time),
                    measurement: std::time::Duration::from_secs(measurement_time),
                },
            );
            prepared.host.finish()?;
            report
        }
        Command::Save { output, policies } => {
            airgap::save(&store, &policies, &output)?;
            Ok(String::new())
        }
        Command::Load { input } => {
            let loaded = airgap::load(&store, &input)?;
            tracing::info!(policies = loaded, "loaded into the store");
            Ok(String::new())
        }
        Command::Annotate {
            wasm_path,
            metadata_path,
            output_path,
            usage_path,
        } => {
            let wasm = std::fs::read(&wasm_path)
                .with_context(|| format!("reading {}", wasm_path.display()))?;
            let annotated = annotate::annotated(&wasm, &metadata_path, usage_path.as_deref())?;
            std::fs::write(&output_path, annotated)
                .with_context(|| format!("writing {}", output_path.display()))?;
            Ok(String::new())
        }
        Command::Inspect {
            uri,
            output,
            show_signatures,
            access,
        } => {
            let (uri, module) = store.resolve(&uri)?;
            let metadata = inspect::metadata_of(&uri, &module)?;
            let signatures = if show_signatures {
                Some(oci::signatures(&access.access(), &config_dir(), &uri)?)
            } else {
                None
            };
            match output {
                Some(OutputFormat::Yaml) => {
                    let mut text = serde_yaml_ng::to_string(&metadata)?;
                    if let Some(Some(manifest)) = &signatures {
                        text.push_str("---\n");
                        text.push_str(&serde_yaml_ng::to_string(manifest)?);
                    }
                    Ok(text)
                }
                None => {
                    let mut text = inspect::pretty(&metadata)?;
                    if let Some(manifest) = &signatures {
                        text.push_str(&inspect::pretty_signatures(manifest.as_ref()));
                    }
                    Ok(text)
                }
            }
        }
        Command::Policies => inspect::policies(&store),
        Command::Pull {
            uri,
            output_path,
            access,
            verification,
        } => {
            let access = access.access();
            let uri = oci::policy_uri(&uri);
            let verified = verified_digest(&access, &config_dir(), &uri, &verification)?;
            tracing::info!(%uri, "pulling policy...");
            oci::pull(
                &store,
                &access,
                &config_dir(),
                &uri,
                output_path.as_deref(),
                verified.as_deref(),
            )?;
            Ok(String::new())
        }
        Command::Verify {
            uri,
            access,
            verification,
        } => {
            let uri = oci::policy_uri(&uri);
            let Some(config) = verification.config(&config_dir())? else {
                anyhow::bail!(
                    "Intending to verify policy, but no verification keys, OIDC issuer or file path was passed"
                );
            };
            verify_policy(
                &access.access(),
                &config_dir(),
                &uri,
                &config,
                &verification,
            )?;
            Ok(String::new())
        }
        Command::Push {
            policy,
            uri,
            force,
            output,
            access,
        } => {
            let (_, module) = store.resolve(&policy)?;
            let immutable = oci::push(&access.access(), &config_dir(), &module, &uri, force)?;
            Ok(match output {
                Some(PushOutput::Json) => {
                    format!("{}\n", serde_json::json!({ "immutable_ref": immutable }))
                }
                Some(PushOutput::Text) | None => {
                    format!("Policy successfully pushed: {immutable}\n")
                }
            })
        }
        Command::Rm { uri } => {
            oci::rm(&store, &uri)?;
            Ok(String::new())
        }
        Command::Scaffold(Scaffold::Manifest {
            uri,
            kind,
            title,
            settings_path,
            settings_json,
            allow_context_aware,
        }) => {
            let (uri, module) = store.resolve(&uri)?;
            let metadata = inspect::metadata_of(&uri, &module)?;
            metadata
                .validate()
                .with_context(|| format!("Policy {uri} cannot be validated"))?;
            let settings = run::read_settings(settings_path.as_deref(), settings_json.as_deref())?;
            scaffold::manifest(
                kind,
                &uri,
                &metadata,
                settings,
                title.as_deref(),
                allow_context_aware,
            )
        }
        Command::Scaffold(Scaffold::VerificationConfig) => Ok(scaffold::verification_config(
            &config_dir().display().to_string(),
        )),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kwctl", &mut script);
            Ok(String::from_utf8_lossy(&script).into_owned())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The process's TLS provider, as in every binary of the project (registries, Kubernetes).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let level = if cli.verbose { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_ansi(!cli.no_color && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .init();
    match execute(cli.command) {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`kwctl ... | head`) is not an error worth a message.
            let _ = stdout.write_all(output.as_bytes());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
