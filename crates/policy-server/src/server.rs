//! Start-up and the three listeners: webhook (HTTPS), readiness (HTTP) and metrics (HTTP).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api_types::config::{PoliciesConfig, SourcesConfig, VerificationConfig};
use api_types::error_text::with_causes;
use api_types::load_status::{PolicyServerLoadStatus, STATUS_PATH};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use policy_evaluator::limits::DEFAULT_MEMORY_LIMIT_BYTES;
use policy_evaluator::{EngineOptions, PolicyEngine, PoolingOptions};

use crate::api::{AppState, ServedPolicies, router};
use crate::capabilities::kubernetes::{ContextError, KubernetesContext};
use crate::capabilities::{ServerCapabilities, context_grants, watched_kinds};
use crate::cli::Cli;
use crate::fetch::{DockerCredentials, Fetcher};
use crate::loader::{LoadOptions, LoadSummary, Loader, evaluator_count};
use crate::metrics::Metrics;
use crate::pool::EvaluationPool;
use crate::signatures::{SignatureVerifier, TrustRoot};
use crate::tls::TlsFiles;

/// How often certificate files are checked for changes.
const TLS_RELOAD_POLL: Duration = Duration::from_secs(2);
/// How often the policies file is checked for changes with `--reload-policies`: reading a
/// file of a few KiB four times a second costs nothing measurable, and an edit reaches the
/// verdicts in about a quarter of a second more than its load.
const RELOAD_POLL: Duration = Duration::from_millis(250);

/// What the readiness port serves: whether requests may come, and what loading found.
#[derive(Default)]
struct Readiness {
    ready: AtomicBool,
    /// What the webhook serves, set once loading has finished; its policies' status is read
    /// at every request, since a policy may learn at run time that it answers in a shape
    /// that is not understood, and an in-place reload may replace them.
    served: OnceLock<Arc<AppState>>,
}

async fn readiness_probe(State(readiness): State<Arc<Readiness>>) -> StatusCode {
    if readiness.ready.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Upstream's pprof endpoints, refused with the reason.
async fn no_profiler() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_IMPLEMENTED,
        "this policy-server has no in-process profiler (--enable-pprof is accepted for \
         compatibility); profile the process from outside, e.g. `perf record -g -p <pid>`\n",
    )
}

/// `GET /status`: every policy's load state once loading has finished (`loaded: false` and no
/// policies before). Always 200: a policy that failed is news, not an error of this endpoint.
async fn load_status(State(readiness): State<Arc<Readiness>>) -> Json<PolicyServerLoadStatus> {
    Json(match readiness.served.get() {
        None => PolicyServerLoadStatus::default(),
        Some(served) => load_status_of(served),
    })
}

fn load_status_of(state: &AppState) -> PolicyServerLoadStatus {
    PolicyServerLoadStatus {
        loaded: true,
        policies: state
            .policies
            .load()
            .iter()
            .map(|(id, policy)| (id.clone(), policy.load_status()))
            .collect(),
        reload_error: state.reload_error(),
    }
}

async fn serve_plain(
    address: SocketAddr,
    app: Router,
    handle: Handle<SocketAddr>,
    what: &'static str,
) -> Result<()> {
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("binding the {what} server to {address}"))?;
    listener.set_nonblocking(true)?;
    tracing::info!(%address, "{what} server listening");
    axum_server::from_tcp(listener)
        .context("listener")?
        .handle(handle)
        .serve(app.into_make_service())
        .await
        .with_context(|| format!("{what} server"))
}

/// Runs the policy-server `cli` describes until SIGTERM or SIGINT: the readiness (and metrics)
/// listeners first, so probes answer while policies load, then the webhook listener.
pub async fn run(cli: Cli) -> Result<()> {
    crate::heap::fix_trim_threshold();
    let metrics = Metrics::new().context("metrics registry")?;
    let readiness = Arc::new(Readiness::default());
    let handles: Vec<Handle<SocketAddr>> = (0..3).map(|_| Handle::new()).collect();
    let (webhook_handle, readiness_handle, metrics_handle) =
        (handles[0].clone(), handles[1].clone(), handles[2].clone());

    let readiness_app = Router::new()
        .route("/readiness", get(readiness_probe))
        .route(STATUS_PATH, get(load_status))
        .with_state(readiness.clone());
    let readiness_app = if cli.enable_pprof {
        tracing::warn!(
            "--enable-pprof: this build has no in-process profiler; /debug/pprof/cpu and /debug/pprof/heap answer 501"
        );
        readiness_app
            .route("/debug/pprof/cpu", get(no_profiler))
            .route("/debug/pprof/heap", get(no_profiler))
    } else {
        readiness_app
    };
    let mut servers = tokio::task::JoinSet::new();
    let readiness_address = SocketAddr::new(cli.addr, cli.readiness_probe_port);
    servers.spawn(serve_plain(
        readiness_address,
        readiness_app,
        readiness_handle,
        "readiness",
    ));
    if cli.enable_metrics && cli.prometheus_metrics {
        let metrics_for_app = metrics.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || async move { metrics_for_app.render() }),
        );
        servers.spawn(serve_plain(
            SocketAddr::new(cli.addr, cli.metrics_port),
            app,
            metrics_handle,
            "metrics",
        ));
    }

    let server = PolicyServer::load(&cli, metrics).await?;
    let _ = readiness.served.set(server.state.clone());
    if cli.reload_policies {
        server.watch_policies(RELOAD_POLL);
    }
    let app = server.router();
    let webhook_address = SocketAddr::new(cli.addr, cli.port);
    let listener = std::net::TcpListener::bind(webhook_address)
        .with_context(|| format!("binding the webhook server to {webhook_address}"))?;
    listener.set_nonblocking(true)?;
    let make_service = app.into_make_service();
    // The TLS and plain servers are different types; box their futures so one task serves both.
    let serving: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> =
        match (&cli.cert_file, &cli.key_file) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_cas: cli.client_ca_file.clone(),
                };
                let tls = RustlsConfig::from_config(files.server_config()?);
                files.watch(tls.clone(), TLS_RELOAD_POLL);
                tracing::info!(address = %webhook_address, mutual_tls = !cli.client_ca_file.is_empty(), "webhook server listening (HTTPS)");
                let server =
                    axum_server::from_tcp_rustls(listener, tls).context("webhook listener")?;
                Box::pin(server.handle(webhook_handle.clone()).serve(make_service))
            }
            _ => {
                tracing::warn!(address = %webhook_address, "no certificate given: webhook server listening on plain HTTP");
                let server = axum_server::from_tcp(listener).context("webhook listener")?;
                Box::pin(server.handle(webhook_handle.clone()).serve(make_service))
            }
        };
    servers.spawn(async move { serving.await.context("webhook server") });
    readiness.ready.store(true, Ordering::Relaxed);

    let grace = Duration::from_secs(cli.shutdown_grace_seconds);
    tokio::select! {
        result = servers.join_next() => {
            match result {
                Some(Ok(Err(err))) => return Err(err),
                Some(Err(err)) => bail!("a server task failed: {err}"),
                _ => bail!("a server stopped unexpectedly"),
            }
        }
        signal = shutdown_signal() => {
            tracing::info!(signal, grace_seconds = grace.as_secs(), "shutting down: finishing in-flight requests");
            readiness.ready.store(false, Ordering::Relaxed);
            for handle in &handles {
                handle.graceful_shutdown(Some(grace));
            }
        }
    }
    while let Some(result) = servers.join_next().await {
        if let Ok(Err(err)) = result {
            tracing::warn!(error = %format!("{err:#}"), "server ended with an error during shutdown");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// A policy-server with its policies loaded: what every webhook request is answered from.
/// Cheap to clone: clones serve (and reload) the same policies.
#[derive(Debug, Clone)]
pub struct PolicyServer {
    state: Arc<AppState>,
    loader: Arc<Loader>,
    /// The policies file (`--policies`), read again by [`reload`](Self::reload).
    policies_path: PathBuf,
    /// What the last load or reload read from it.
    policies_text: Arc<std::sync::Mutex<String>>,
    max_body_bytes: usize,
    noop_endpoint: bool,
}

/// Why a reload did not happen: the configuration being served stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid policies file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: api_types::config::ConfigError,
    },
    #[error("loading the policies failed: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

impl PolicyServer {
    /// Reads the files `cli` names (policies, sources, verification, Docker config), fetches
    /// and compiles every module once, validates every policy's settings and builds the host
    /// capabilities (a Kubernetes context when a policy needs one). A policy that cannot be
    /// loaded is kept with the reason (see [`ServedPolicy`](crate::loader::ServedPolicy)),
    /// unless `--exit-on-policy-errors` makes that an error. Evaluations are recorded in
    /// `metrics`.
    pub async fn load(cli: &Cli, metrics: Metrics) -> Result<Self> {
        let sources = match &cli.sources_path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                SourcesConfig::parse(&text)?
            }
            None => SourcesConfig::default(),
        };
        // wasmtime's compile cache wants an absolute path; the default download dir is ".".
        let download_dir = std::path::absolute(&cli.policies_download_dir).with_context(|| {
            format!(
                "resolving --policies-download-dir {}",
                cli.policies_download_dir.display()
            )
        })?;
        std::fs::create_dir_all(&download_dir)
            .with_context(|| format!("creating {}", download_dir.display()))?;
        let credentials = match &cli.docker_config_json_path {
            Some(dir) => DockerCredentials::read(dir)?,
            None => DockerCredentials::default(),
        };
        let fetcher = Fetcher {
            sources,
            credentials,
            download_dir: download_dir.clone(),
        };
        let text = std::fs::read_to_string(&cli.policies)
            .with_context(|| format!("reading {}", cli.policies.display()))?;
        let config = PoliciesConfig::parse(&text)?;
        let verification = match &cli.verification_path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let verification = VerificationConfig::parse(&text)?;
                tracing::info!(path = %path.display(), "policy modules must carry the signatures it lists");
                Some(Arc::new(verification))
            }
            None => None,
        };
        let trust_root = match &cli.sigstore_trust_config {
            Some(path) => TrustRoot::from_file(path)?,
            None => TrustRoot::public_good(
                std::path::absolute(&cli.sigstore_cache_dir).with_context(|| {
                    format!(
                        "resolving --sigstore-cache-dir {}",
                        cli.sigstore_cache_dir.display()
                    )
                })?,
            ),
        };
        let signatures = Arc::new(SignatureVerifier::new(fetcher.clone(), trust_root));

        let capabilities = host_capabilities(cli, &config, &fetcher, signatures.clone()).await?;
        let workers = cli.workers();
        let options = LoadOptions {
            default_timeout: (!cli.disable_timeout_protection)
                .then(|| Duration::from_secs(cli.policy_timeout)),
            memory_bytes: DEFAULT_MEMORY_LIMIT_BYTES,
            reused_instances: if cli.fresh_instances { 0 } else { workers },
            host: capabilities.clone(),
        };
        let idle_per_worker = match (options.reused_instances, cli.reload_policies) {
            (0, _) => 0,
            (_, false) => evaluator_count(&config),
            // A reload holds the old and the new set for a while, and may add policies.
            (_, true) => (2 * evaluator_count(&config)).max(evaluator_count(&config) + 32),
        };
        let engine = PolicyEngine::new(&EngineOptions {
            cache_dir: Some(download_dir.join("compile-cache")),
            pooling: Some(PoolingOptions {
                // Every worker runs one instance at a time (groups may hold a few more briefly),
                // and each policy keeps up to one idle instance per worker for reuse.
                max_instances: u32::try_from(workers * (4 + idle_per_worker)).unwrap_or(u32::MAX),
                max_memory_bytes: options.memory_bytes,
            }),
        })?;
        let loader = Arc::new(Loader::new(
            engine,
            options,
            fetcher,
            signatures,
            verification,
            capabilities,
        ));
        let (policies, summary) = loader
            .load(config, &ServedPolicies::new())
            .await
            .context("loading policies")?;
        if summary.failed > 0 && cli.exit_on_policy_errors {
            let mut failed: Vec<String> = policies
                .values()
                .filter_map(|p| {
                    p.decider
                        .as_ref()
                        .err()
                        .map(|reason| format!("{}: {reason}", p.id))
                })
                .collect();
            failed.sort();
            bail!("some policies cannot be served:\n  {}", failed.join("\n  "));
        }
        crate::heap::release_freed_memory();
        tracing::info!(policies = policies.len(), workers, "ready to serve");

        let state = Arc::new(AppState {
            policies: arc_swap::ArcSwap::from_pointee(policies),
            reload_error: std::sync::Mutex::new(None),
            pool: EvaluationPool::new(workers, metrics.clone())?,
            metrics,
            always_accept_namespace: cli.always_accept_admission_reviews_on_namespace.clone(),
        });
        Ok(PolicyServer {
            state,
            loader,
            policies_path: cli.policies.clone(),
            policies_text: Arc::new(std::sync::Mutex::new(text)),
            max_body_bytes: cli.max_request_body_bytes,
            noop_endpoint: cli.enable_noop_endpoint,
        })
    }

    /// The policies served now, by id.
    pub fn policies(&self) -> Arc<ServedPolicies> {
        self.state.policies.load_full()
    }

    /// What `GET /status` on the readiness port answers: every policy's load state and the
    /// digest of the entry it serves, and why the last reload failed, if it did.
    pub fn load_status(&self) -> PolicyServerLoadStatus {
        load_status_of(&self.state)
    }

    /// Reads the policies file again and loads it beside the served policies (see
    /// [`Loader::load`]), then serves the new set: requests in flight finish with the
    /// policies they started with, later ones get the new set. A file that cannot be read
    /// changes nothing and is reported on `GET /status` until a later reload succeeds.
    pub async fn reload(&self) -> Result<LoadSummary, ReloadError> {
        let path = &self.policies_path;
        match tokio::fs::read_to_string(path).await {
            Ok(text) => self.apply_policies_text(text).await,
            Err(source) => {
                let error = ReloadError::Read {
                    path: path.clone(),
                    source,
                };
                self.state.set_reload_error(Some(error.to_string()));
                Err(error)
            }
        }
    }

    /// Loads `text`, the policies file's content, beside the served policies and serves it;
    /// records on the status why it could not, until a later reload succeeds.
    async fn apply_policies_text(&self, text: String) -> Result<LoadSummary, ReloadError> {
        let result = self.switch_to(text).await;
        self.state
            .set_reload_error(result.as_ref().err().map(ToString::to_string));
        result
    }

    async fn switch_to(&self, text: String) -> Result<LoadSummary, ReloadError> {
        let config = PoliciesConfig::parse(&text);
        *self.lock_policies_text() = text;
        let config = config.map_err(|source| ReloadError::Parse {
            path: self.policies_path.clone(),
            source,
        })?;
        let current = self.state.policies.load_full();
        let (next, summary) = self.loader.load(config, &current).await?;
        self.state.policies.store(Arc::new(next));
        drop(current);
        // It walks every arena under its lock: not on the runtime's threads.
        tokio::task::spawn_blocking(crate::heap::release_freed_memory);
        Ok(summary)
    }

    /// Checks the policies file every `interval` and [reloads](Self::reload) it when its
    /// content changes (kubelet replaces a mounted ConfigMap's files by swapping a symbolic
    /// link, so a read sees the old or the new file whole). Runs until the runtime stops.
    pub fn watch_policies(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let server = self.clone();
        tracing::info!(path = %self.policies_path.display(), "policies are reloaded in place when the file changes");
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                // Unreadable (being replaced, say): looked at again next time.
                let Ok(now) = tokio::fs::read_to_string(&server.policies_path).await else {
                    continue;
                };
                if now == *server.lock_policies_text() {
                    continue;
                }
                tracing::info!("the policies file changed: reloading");
                // The text just read is loaded, not a second read of the file.
                if let Err(error) = server.apply_policies_text(now).await {
                    tracing::error!(%error, "reload failed; the previous policies go on serving");
                }
            }
        })
    }

    fn lock_policies_text(&self) -> std::sync::MutexGuard<'_, String> {
        // Replaced whole: a poisoned lock still holds a whole text.
        self.policies_text
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The webhook endpoints (`/validate/{id}`, `/audit/{id}`, `/validate_raw/{id}`, and
    /// `/noop` when enabled), to serve over any transport or to call in-process.
    pub fn router(&self) -> Router {
        router(self.state.clone(), self.max_body_bytes, self.noop_endpoint)
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the server runs until killed.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// How long start-up waits for the context caches to hold their initial lists.
const CONTEXT_CACHE_TIMEOUT: Duration = Duration::from_secs(60);

/// The host capabilities policies get: a Kubernetes context (watch caches for the kinds the
/// policies declared in `contextAwareResources`, and a client for `can_i`) when a cluster
/// can be reached, registry queries with the module sources' settings, DNS lookups.
///
/// Without a cluster connection the server still starts when no policy declares context-aware
/// resources (or with `--ignore-kubernetes-connection-failure`); `kubernetes/*` calls then
/// answer why.
async fn host_capabilities(
    cli: &Cli,
    config: &PoliciesConfig,
    fetcher: &Fetcher,
    signatures: Arc<SignatureVerifier>,
) -> Result<Arc<ServerCapabilities>> {
    let grants = context_grants(config);
    let kinds = watched_kinds(&grants);
    let context = match kube::Client::try_default().await {
        Ok(client) => KubernetesContext::start(client, &kinds).await,
        Err(error) => Err(ContextError::NoConfiguration(error)),
    };
    let context = match context {
        Ok(context) => {
            if let Err(error) = context.wait_until_ready(CONTEXT_CACHE_TIMEOUT).await {
                let reason = with_causes(&error);
                tracing::error!(%reason, "context-aware policies will fail until the caches fill");
            }
            if !kinds.is_empty() {
                tracing::info!(
                    kinds = kinds.len(),
                    objects = context.cached_objects(),
                    "context caches ready"
                );
            }
            Ok(Arc::new(context))
        }
        Err(error) if kinds.is_empty() || cli.ignore_kubernetes_connection_failure => {
            let reason = with_causes(&error);
            if !kinds.is_empty() {
                tracing::error!(%reason, "cannot reach Kubernetes; context-aware policies will fail");
            } else {
                tracing::debug!(%reason, "no Kubernetes connection; no policy needs one");
            }
            Err(error)
        }
        Err(error) => bail!(
            "cannot reach Kubernetes for the context-aware policies: {} (pass --ignore-kubernetes-connection-failure to start anyway)",
            with_causes(&error)
        ),
    };
    Ok(Arc::new(ServerCapabilities::new(
        tokio::runtime::Handle::current(),
        context,
        fetcher.clone(),
        signatures,
        grants,
    )))
}
