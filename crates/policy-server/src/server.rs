//! Start-up and the three listeners: webhook (HTTPS), readiness (HTTP) and metrics (HTTP).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api_types::config::{PoliciesConfig, SourcesConfig, VerificationConfig};
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
use crate::capabilities::kubernetes::KubernetesContext;
use crate::capabilities::{ServerCapabilities, context_grants, watched_kinds};
use crate::cli::Cli;
use crate::fetch::{DockerCredentials, Fetcher};
use crate::loader::{LoadOptions, evaluator_count, load_policies, module_urls};
use crate::metrics::Metrics;
use crate::pool::EvaluationPool;
use crate::signatures::{SignatureVerifier, TrustRoot};
use crate::tls::TlsFiles;

/// How often certificate files are checked for changes.
const TLS_RELOAD_POLL: Duration = Duration::from_secs(2);

/// What the readiness port serves: whether requests may come, and what loading found.
#[derive(Default)]
struct Readiness {
    ready: AtomicBool,
    /// The served policies, set once loading has finished; their status is read at every
    /// request, since a policy may learn at run time that it answers in a shape that is not
    /// understood.
    policies: OnceLock<Arc<ServedPolicies>>,
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
    Json(match readiness.policies.get() {
        None => PolicyServerLoadStatus::default(),
        Some(policies) => PolicyServerLoadStatus {
            loaded: true,
            policies: policies
                .iter()
                .map(|(id, policy)| (id.clone(), policy.load_status()))
                .collect(),
        },
    })
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
    if cli.enable_metrics {
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
    let _ = readiness.policies.set(server.policies().clone());
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
#[derive(Debug)]
pub struct PolicyServer {
    state: Arc<AppState>,
    max_body_bytes: usize,
    noop_endpoint: bool,
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
            Some(dir) => DockerCredentials::read(dir).map_err(anyhow::Error::msg)?,
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
            Some(path) => TrustRoot::from_file(path).map_err(anyhow::Error::msg)?,
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

        let host = host_capabilities(cli, &config, &fetcher, signatures.clone()).await?;
        let workers = cli.workers();
        let options = LoadOptions {
            default_timeout: (!cli.disable_timeout_protection)
                .then(|| Duration::from_secs(cli.policy_timeout)),
            memory_bytes: DEFAULT_MEMORY_LIMIT_BYTES,
            reused_instances: if cli.fresh_instances { 0 } else { workers },
            host,
        };
        let idle_per_worker = if options.reused_instances > 0 {
            evaluator_count(&config)
        } else {
            0
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
        let started = std::time::Instant::now();
        let mut downloads = tokio::task::JoinSet::new();
        for url in module_urls(&config) {
            let fetcher = fetcher.clone();
            let signatures = signatures.clone();
            let verification = verification.clone();
            downloads.spawn(async move {
                let result = match verification {
                    Some(verification) => signatures.fetch_module(&url, &verification).await,
                    None => fetcher.fetch(&url).await,
                };
                (url, result)
            });
        }
        let mut fetched = std::collections::HashMap::new();
        while let Some(done) = downloads.join_next().await {
            let (url, result) = done.context("a download task failed")?;
            if let Err(reason) = &result {
                tracing::error!(module = %url, %reason, "module cannot be fetched");
            }
            fetched.insert(url, result);
        }
        let policies =
            tokio::task::spawn_blocking(move || load_policies(&engine, config, fetched, &options))
                .await
                .context("loading policies")?;
        let failed: Vec<String> = policies
            .values()
            .filter_map(|p| {
                p.decider
                    .as_ref()
                    .err()
                    .map(|reason| format!("{}: {reason}", p.id))
            })
            .collect();
        if !failed.is_empty() && cli.exit_on_policy_errors {
            bail!("some policies cannot be served:\n  {}", failed.join("\n  "));
        }
        tracing::info!(
            policies = policies.len(),
            failed = failed.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            workers,
            "policies loaded"
        );

        let policies: Arc<ServedPolicies> = Arc::new(
            policies
                .into_iter()
                .map(|(id, p)| (id, Arc::new(p)))
                .collect(),
        );
        let state = Arc::new(AppState {
            policies,
            pool: EvaluationPool::new(workers, metrics.clone())?,
            metrics,
            always_accept_namespace: cli.always_accept_admission_reviews_on_namespace.clone(),
        });
        Ok(PolicyServer {
            state,
            max_body_bytes: cli.max_request_body_bytes,
            noop_endpoint: cli.enable_noop_endpoint,
        })
    }

    /// The served policies, by id.
    pub fn policies(&self) -> &Arc<ServedPolicies> {
        &self.state.policies
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
) -> Result<Arc<dyn policy_evaluator::host::HostCapabilities>> {
    let grants = context_grants(config);
    let kinds = watched_kinds(&grants);
    let context = match kube::Client::try_default().await {
        Ok(client) => KubernetesContext::start(client, &kinds).await,
        Err(error) => Err(format!("no Kubernetes configuration: {error}")),
    };
    let context = match context {
        Ok(context) => {
            if let Err(reason) = context.wait_until_ready(CONTEXT_CACHE_TIMEOUT).await {
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
        Err(reason) if kinds.is_empty() || cli.ignore_kubernetes_connection_failure => {
            if !kinds.is_empty() {
                tracing::error!(%reason, "cannot reach Kubernetes; context-aware policies will fail");
            } else {
                tracing::debug!(%reason, "no Kubernetes connection; no policy needs one");
            }
            Err(reason)
        }
        Err(reason) => bail!(
            "cannot reach Kubernetes for the context-aware policies: {reason} (pass --ignore-kubernetes-connection-failure to start anyway)"
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
