//! The host capabilities `kwctl run` and `kwctl bench` give a policy: the policy-server's own
//! (a Kubernetes context from the kubeconfig, the registry fetcher, signature verification,
//! DNS), started at the first call so a policy that asks for nothing costs nothing; every
//! exchange recorded to a session file on request; or, replaying a session file, its
//! recorded answers instead, with no cluster, registry or network.
//!
//! As in upstream's kwctl, Kubernetes reads are granted only with `--allow-context-aware`,
//! and then exactly the `contextAwareResources` of the policy's metadata.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use api_types::error_text::with_causes;
use policy_evaluator::host::{Capability, HostCapabilities, KindObjects};
use policy_server::capabilities::kubernetes::{ContextError, KindRef, KubernetesContext};
use policy_server::capabilities::{ContextGrants, ServerCapabilities, not_granted};
use policy_server::fetch::Fetcher;
use policy_server::signatures::{SignatureVerifier, TrustRoot};

use crate::session::{self, Exchange, Replay, Response};

/// How long the context caches may take to hold their first lists.
const CONTEXT_CACHE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the live capabilities are made of, once needed.
pub struct LiveParts {
    pub fetcher: Fetcher,
    pub trust_root: TrustRoot,
    /// The kinds the policy may read (empty without `--allow-context-aware`).
    pub kinds: BTreeSet<KindRef>,
}

/// The policy-server's capabilities, started at the first call.
pub struct Live {
    policy_id: String,
    parts: LiveParts,
    runtime: tokio::runtime::Runtime,
    started: OnceLock<ServerCapabilities>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("started", &self.started.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Live {
    pub fn new(policy_id: &str, parts: LiveParts) -> Result<Self> {
        // Watches and registry calls progress while an evaluation waits for them.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Live {
            policy_id: policy_id.to_string(),
            parts,
            runtime,
            started: OnceLock::new(),
        })
    }

    fn capabilities(&self) -> &ServerCapabilities {
        self.started.get_or_init(|| {
            let parts = &self.parts;
            let kinds = parts.kinds.clone();
            let context = self.runtime.block_on(async {
                let client = kube::Client::try_default()
                    .await
                    .map_err(ContextError::NoConfiguration)?;
                let context = KubernetesContext::start(client, &kinds).await?;
                context.wait_until_ready(CONTEXT_CACHE_TIMEOUT).await?;
                Ok::<_, ContextError>(Arc::new(context))
            });
            if let Err(error) = &context {
                let reason = with_causes(error);
                tracing::warn!(%reason, "Kubernetes cannot be reached; Kubernetes host capabilities will fail");
            }
            let grants: ContextGrants = [(self.policy_id.clone(), kinds)].into();
            let signatures = Arc::new(SignatureVerifier::new(
                parts.fetcher.clone(),
                parts.trust_root.clone(),
            ));
            ServerCapabilities::new(
                self.runtime.handle().clone(),
                context,
                parts.fetcher.clone(),
                signatures,
                grants,
            )
        })
    }
}

impl HostCapabilities for Live {
    fn call(
        &self,
        policy_id: &str,
        capability: Capability,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        self.capabilities().call(policy_id, capability, payload)
    }

    fn context_objects(&self, policy_id: &str) -> Result<Vec<KindObjects>, String> {
        self.capabilities().context_objects(policy_id)
    }
}

/// Records every exchange with `inner`, written to the session file by [`Recorder::save`].
#[derive(Debug)]
pub struct Recorder {
    inner: Arc<dyn HostCapabilities>,
    exchanges: Mutex<Vec<Result<Exchange, String>>>,
}

impl Recorder {
    pub fn new(inner: Arc<dyn HostCapabilities>) -> Self {
        Recorder {
            inner,
            exchanges: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, request: &serde_yaml_ng::Value, answer: &Result<Vec<u8>, String>) {
        let exchange = session::request_text(request).and_then(|request| {
            Ok(Exchange {
                request,
                response: Response::of(answer)?,
            })
        });
        self.exchanges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(exchange);
    }

    /// Writes the session file; none when an exchange could not be captured, as upstream.
    pub fn save(&self, path: &Path) -> Result<()> {
        let exchanges = self
            .exchanges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect::<Result<Vec<_>, String>>()
            .map_err(|reason| {
                anyhow::anyhow!(
                    "Cannot record communication between host and policy, something went wrong while capturing the exchange: {reason}"
                )
            })?;
        session::write(path, &exchanges)?;
        tracing::info!(path = %path.display(), exchanges = exchanges.len(), "Context aware session saved to file");
        Ok(())
    }
}

impl HostCapabilities for Recorder {
    fn call(
        &self,
        policy_id: &str,
        capability: Capability,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let answer = self.inner.call(policy_id, capability, payload);
        if let Ok(Some(request)) = session::request_of(capability, payload) {
            self.record(&request, &answer);
        }
        answer
    }

    fn context_objects(&self, policy_id: &str) -> Result<Vec<KindObjects>, String> {
        let objects = self.inner.context_objects(policy_id)?;
        for kind in &objects {
            let payload = serde_json::json!({ "items": kind.objects }).to_string();
            self.record(
                &session::list_all_request(&kind.api_version, &kind.kind),
                &Ok(payload.into_bytes()),
            );
        }
        Ok(objects)
    }
}

/// Answers from a session file. Calls that never leave the host (certificate checks) are
/// still served by `local`.
#[derive(Debug)]
pub struct Replayer {
    replay: Mutex<Replay>,
    local: Arc<dyn HostCapabilities>,
    /// The kinds of the Rego context data, in the order they are asked for.
    kinds: BTreeSet<KindRef>,
}

impl Replayer {
    pub fn new(
        path: &Path,
        local: Arc<dyn HostCapabilities>,
        kinds: BTreeSet<KindRef>,
    ) -> Result<Self> {
        Ok(Replayer {
            replay: Mutex::new(Replay::new(session::read(path)?)?),
            local,
            kinds,
        })
    }

    fn answer(&self, request: &serde_yaml_ng::Value) -> Result<Vec<u8>, String> {
        self.replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .answer(request)
    }

    /// Says how many exchanges of the file were never asked for.
    pub fn report_unused(&self) {
        let unused = self
            .replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unused();
        if unused > 0 {
            tracing::warn!(
                unused,
                "Some of the recorded exchanges have not been replayed"
            );
        }
    }
}

impl HostCapabilities for Replayer {
    fn call(
        &self,
        policy_id: &str,
        capability: Capability,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        if capability.namespace() == "kubernetes" && capability != Capability::KubernetesCanI {
            // Grants are checked before a call reaches the host, recorded or not.
            let kind: KindRef = serde_json::from_slice(payload)
                .map_err(|e| format!("invalid request payload: {e}"))?;
            if !self.kinds.contains(&kind) {
                return Err(not_granted(&kind));
            }
        }
        match session::request_of(capability, payload)? {
            Some(request) => self.answer(&request),
            None => self.local.call(policy_id, capability, payload),
        }
    }

    fn context_objects(&self, _policy_id: &str) -> Result<Vec<KindObjects>, String> {
        self.kinds
            .iter()
            .map(|kind| {
                let payload =
                    self.answer(&session::list_all_request(&kind.api_version, &kind.kind))?;
                let list: serde_json::Value = serde_json::from_slice(&payload)
                    .map_err(|e| format!("the recorded list of {kind} is not JSON: {e}"))?;
                let objects = list["items"].as_array().cloned().unwrap_or_default();
                Ok(KindObjects {
                    api_version: kind.api_version.clone(),
                    kind: kind.kind.clone(),
                    plural: guess_plural(&kind.kind),
                    namespaced: objects
                        .iter()
                        .any(|object| object["metadata"]["namespace"].is_string()),
                    objects,
                })
            })
            .collect()
    }
}

/// The resource name of a kind, as Kubernetes guesses it without discovery
/// (`meta.UnsafeGuessKindToResource`): a session file holds no discovery answers.
fn guess_plural(kind: &str) -> String {
    let singular = kind.to_ascii_lowercase();
    if singular.ends_with('s') {
        format!("{singular}es")
    } else if let Some(stem) = singular.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{singular}s")
    }
}

/// Where the host capabilities' answers come from (upstream's flags).
#[derive(Debug, Clone, Default)]
pub enum Interactions {
    #[default]
    Direct,
    Record(PathBuf),
    Replay(PathBuf),
}

/// The provider for a run, and what to do once it is over.
pub struct Host {
    pub provider: Arc<dyn HostCapabilities>,
    recorder: Option<(Arc<Recorder>, PathBuf)>,
    replayer: Option<Arc<Replayer>>,
}

impl Host {
    pub fn new(policy_id: &str, interactions: &Interactions, mut parts: LiveParts) -> Result<Self> {
        let kinds = parts.kinds.clone();
        if matches!(interactions, Interactions::Replay(_)) {
            // Only local calls reach the live capabilities: no cache to start.
            parts.kinds.clear();
        }
        let live: Arc<dyn HostCapabilities> = Arc::new(Live::new(policy_id, parts)?);
        Ok(match interactions {
            Interactions::Direct => Host {
                provider: live,
                recorder: None,
                replayer: None,
            },
            Interactions::Record(path) => {
                let recorder = Arc::new(Recorder::new(live));
                Host {
                    provider: recorder.clone(),
                    recorder: Some((recorder, path.clone())),
                    replayer: None,
                }
            }
            Interactions::Replay(path) => {
                let replayer = Arc::new(Replayer::new(path, live, kinds)?);
                Host {
                    provider: replayer.clone(),
                    recorder: None,
                    replayer: Some(replayer),
                }
            }
        })
    }

    /// Writes the recorded session, or reports the exchanges never replayed.
    pub fn finish(&self) -> Result<()> {
        if let Some((recorder, path)) = &self.recorder {
            recorder.save(path)?;
        }
        if let Some(replayer) = &self.replayer {
            replayer.report_unused();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::guess_plural;

    #[test]
    fn plurals_as_kubernetes_guesses_them() {
        assert_eq!(guess_plural("Namespace"), "namespaces");
        assert_eq!(guess_plural("Ingress"), "ingresses");
        assert_eq!(guess_plural("NetworkPolicy"), "networkpolicies");
    }
}
