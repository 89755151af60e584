//! The host capabilities the policy-server offers policies (the policy-evaluator has already
//! checked the policy's `hostCapabilities` grant): Kubernetes reads within the policy's
//! `contextAwareResources`, `can_i`, OCI registry queries, signature verification, certificate
//! checks and DNS lookups.
//!
//! Evaluations run on plain threads and the capabilities are asynchronous, so each call is
//! driven to completion on the server's tokio runtime from the evaluating thread.

mod crypto;
pub mod kubernetes;
mod oci;
pub mod query;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::ToSocketAddrs;
use std::sync::{Arc, PoisonError, RwLock};

use api_types::error_text::with_causes;
use policy_evaluator::host::{Capability, HostCapabilities, KindObjects};
use serde_json::json;

use crate::fetch::Fetcher;
use crate::signatures::{SignatureVerifier, requests};
use kubernetes::{CanIQuery, ContextError, GetQuery, KindRef, ListQuery, SharedContext};

/// The policy-server's provider of host capabilities.
pub struct ServerCapabilities {
    runtime: tokio::runtime::Handle,
    kubernetes: Option<SharedContext>,
    /// Why there is no Kubernetes context, for the error policies get.
    kubernetes_missing: String,
    registry: Fetcher,
    signatures: Arc<SignatureVerifier>,
    /// The kinds each policy (by evaluator id) may read; replaced when policies are reloaded.
    context_grants: RwLock<Arc<ContextGrants>>,
}

/// The kinds each policy (by evaluator id) may read.
pub type ContextGrants = HashMap<String, BTreeSet<KindRef>>;

impl std::fmt::Debug for ServerCapabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCapabilities")
            .field("kubernetes", &self.kubernetes)
            .field("context_grants", &self.context_grants)
            .finish_non_exhaustive()
    }
}

impl ServerCapabilities {
    pub fn new(
        runtime: tokio::runtime::Handle,
        kubernetes: Result<SharedContext, ContextError>,
        registry: Fetcher,
        signatures: Arc<SignatureVerifier>,
        context_grants: ContextGrants,
    ) -> Self {
        let (kubernetes, kubernetes_missing) = match kubernetes {
            Ok(context) => (Some(context), String::new()),
            // What every Kubernetes capability call is answered.
            Err(error) => (None, with_causes(&error)),
        };
        ServerCapabilities {
            runtime,
            kubernetes,
            kubernetes_missing,
            registry,
            signatures,
            context_grants: RwLock::new(Arc::new(context_grants)),
        }
    }

    /// The grants in force.
    pub fn grants(&self) -> Arc<ContextGrants> {
        // Replaced whole under the write lock: a poisoned lock still holds a complete map.
        self.context_grants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Starts the caches of the kinds in `grants` that no policy could read before, and waits
    /// for their first lists. Without a Kubernetes connection there is nothing to start; the
    /// calls then answer why they cannot be served.
    pub async fn watch_kinds(&self, grants: &ContextGrants) -> Result<(), ContextError> {
        if let Some(context) = &self.kubernetes {
            let started = context.watch(&watched_kinds(grants)).await?;
            if started > 0
                && let Err(error) = context.wait_until_ready(CONTEXT_CACHE_FILL_TIMEOUT).await
            {
                tracing::error!(reason = %with_causes(&error), "context-aware policies will fail until the caches fill");
            }
        }
        Ok(())
    }

    /// Replaces the grants (a reloaded configuration's; start their kinds' caches first with
    /// [`watch_kinds`](Self::watch_kinds)).
    pub fn replace_grants(&self, grants: ContextGrants) {
        *self
            .context_grants
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(grants);
    }

    /// Runs `future` to completion from a synchronous caller. Evaluation threads are outside
    /// the runtime and block on it directly; a caller inside the runtime (settings validated
    /// at start-up) gets a helper thread, because blocking a runtime thread on the runtime
    /// would deadlock.
    fn block_on<F>(&self, future: F) -> Result<F::Output, String>
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(self.runtime.block_on(future));
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.runtime.block_on(future))
                .join()
                .map_err(|_| "the host capability panicked".to_string())
        })
    }

    fn kubernetes(&self) -> Result<&SharedContext, String> {
        self.kubernetes.as_ref().ok_or_else(|| {
            format!(
                "this policy-server has no connection to Kubernetes: {}",
                self.kubernetes_missing
            )
        })
    }

    fn check_context_grant(&self, policy_id: &str, kind: &KindRef) -> Result<(), String> {
        if self
            .grants()
            .get(policy_id)
            .is_some_and(|kinds| kinds.contains(kind))
        {
            Ok(())
        } else {
            Err(not_granted(kind))
        }
    }

    fn call_kubernetes(
        &self,
        policy_id: &str,
        capability: Capability,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let answer = match capability {
            Capability::KubernetesListResourcesByNamespace
            | Capability::KubernetesListResourcesAll => {
                let query: ListQuery = parse(payload)?;
                self.check_context_grant(policy_id, &query.kind_ref())?;
                let namespace = if capability == Capability::KubernetesListResourcesByNamespace {
                    Some(query.namespace.clone().ok_or("namespace is required")?)
                } else {
                    None
                };
                self.kubernetes()?.list(&query, namespace.as_deref())?
            }
            Capability::KubernetesGetResource => {
                let query: GetQuery = parse(payload)?;
                self.check_context_grant(
                    policy_id,
                    &KindRef {
                        api_version: query.api_version.clone(),
                        kind: query.kind.clone(),
                    },
                )?;
                let context = self.kubernetes()?;
                self.block_on(context.get(&query))??
            }
            Capability::KubernetesCanI => {
                let query: CanIQuery = parse(payload)?;
                let context = self.kubernetes()?;
                return self.block_on(context.can_i(&query))?;
            }
            other => return Err(format!("unknown operation: {}", other.operation())),
        };
        serde_json::to_vec(&answer).map_err(|e| e.to_string())
    }
}

/// What a policy reading a kind outside its `contextAwareResources` is told.
pub fn not_granted(kind: &KindRef) -> String {
    format!(
        "Policy has not been granted access to Kubernetes {kind} resources. The violation has been reported."
    )
}

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| format!("invalid request payload: {e}"))
}

impl HostCapabilities for ServerCapabilities {
    fn call(
        &self,
        policy_id: &str,
        capability: Capability,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        match capability {
            Capability::KubernetesListResourcesByNamespace
            | Capability::KubernetesListResourcesAll
            | Capability::KubernetesGetResource
            | Capability::KubernetesCanI => self.call_kubernetes(policy_id, capability, payload),
            Capability::NetDnsLookupHost => dns_lookup_host(&parse::<String>(payload)?),
            Capability::OciManifestDigest
            | Capability::OciManifest
            | Capability::OciManifestConfig => {
                let image: String = parse(payload)?;
                let answer = self.block_on(oci::query(&self.registry, capability, &image))??;
                serde_json::to_vec(&answer).map_err(|e| e.to_string())
            }
            Capability::OciVerifyV1 | Capability::OciVerifyV2 => {
                let (image, expectation) = requests::parse(capability, payload)?;
                let digest = self
                    .block_on(self.signatures.verify(&image, &expectation))?
                    .map_err(|e| with_causes(&e))?;
                serde_json::to_vec(&json!({"is_trusted": true, "digest": digest}))
                    .map_err(|e| e.to_string())
            }
            Capability::CryptoIsCertificateTrusted => crypto::is_certificate_trusted(payload),
        }
    }

    fn context_objects(&self, policy_id: &str) -> Result<Vec<KindObjects>, String> {
        let grants = self.grants();
        let Some(kinds) = grants.get(policy_id).filter(|kinds| !kinds.is_empty()) else {
            return Ok(Vec::new());
        };
        let context = self.kubernetes()?;
        kinds.iter().map(|kind| context.objects(kind)).collect()
    }
}

/// `net/v1/dns_lookup_host`: the addresses of `host`, through the system resolver.
fn dns_lookup_host(host: &str) -> Result<Vec<u8>, String> {
    let addresses = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut ips: Vec<String> = addresses.map(|a| a.ip().to_string()).collect();
    ips.dedup();
    serde_json::to_vec(&json!({ "ips": ips })).map_err(|e| e.to_string())
}

/// How long a reload waits for the caches of newly read kinds to hold their initial lists.
const CONTEXT_CACHE_FILL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The kinds each evaluator may read, from policies.yml (`contextAwareResources` of each
/// policy and group member).
pub fn context_grants(config: &api_types::config::PoliciesConfig) -> ContextGrants {
    use api_types::config::PolicyOrGroup;
    let kinds = |resources: &Option<Vec<api_types::crd::ContextAwareResource>>| {
        resources
            .iter()
            .flatten()
            .map(|resource| KindRef {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            })
            .collect::<BTreeSet<_>>()
    };
    let mut grants = HashMap::new();
    for (id, entry) in &config.0 {
        match entry {
            PolicyOrGroup::Policy(policy) => {
                grants.insert(id.clone(), kinds(&policy.context_aware_resources));
            }
            PolicyOrGroup::Group(group) => {
                for (member, entry) in &group.policies {
                    grants.insert(
                        format!("{id}/{member}"),
                        kinds(&entry.context_aware_resources),
                    );
                }
            }
        }
    }
    grants
}

/// Every kind some policy may read: the caches to start.
pub fn watched_kinds(grants: &ContextGrants) -> BTreeSet<KindRef> {
    grants.values().flatten().cloned().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn dns_lookup_of_localhost() {
        let answer: Value =
            serde_json::from_slice(&dns_lookup_host("localhost").expect("resolves")).expect("json");
        let ips = answer["ips"].as_array().expect("ips");
        assert!(
            ips.iter().any(|ip| ip == "127.0.0.1" || ip == "::1"),
            "{answer}"
        );
        assert!(dns_lookup_host("no-such-host.invalid").is_err());
    }
}
