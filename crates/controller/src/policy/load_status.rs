//! Asks the policy-server pods whether they could load a policy (`GET /status` on their
//! readiness port), so a policy whose module cannot be fetched or whose settings are invalid
//! says so on its own status instead of only rejecting every request with code 500.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_types::load_status::{
    PolicyLoadStatus, PolicyServerLoadStatus, STATUS_PATH, pod_incarnation,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;

/// How long one pod gets to answer; the readiness port is plain HTTP on the pod network.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Bodies larger than this are not a policy-server's status.
const MAX_BODY_BYTES: usize = 4 << 20;

/// The load status each rolled-out PolicyServer's current pods reported (an in-place
/// reloading one is asked every time, with [`fetch_each`]). Such a pod loads its policies
/// once, at start-up, so an answer holds until the set of pods changes, or
/// for [`MAX_AGE`] at most, since a pod may learn while serving that a policy answers in a
/// shape it does not understand: one request per PolicyServer per rollout or minute, not one
/// per policy reconciliation.
#[derive(Debug, Default)]
pub struct LoadStatusCache {
    by_policy_server: Mutex<HashMap<String, CachedStatus>>,
}

/// How long an answer is used before it is asked again.
const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct CachedStatus {
    /// The pods (and their restarts) that answered.
    pods: String,
    fetched: Instant,
    status: Arc<PolicyServerLoadStatus>,
}

impl LoadStatusCache {
    /// The load state of `unique_name` on PolicyServer `policy_server`, whose current pods are
    /// `pods` (all of the latest ReplicaSet, Ready), or why it cannot be told.
    pub async fn policy_status(
        &self,
        policy_server: &str,
        pods: &[Pod],
        readiness_port: i32,
        unique_name: &str,
    ) -> Result<PolicyLoadStatus, String> {
        // A restarted container loads again: its restart count is part of the key.
        let mut instances: Vec<String> = pods.iter().map(pod_incarnation).collect();
        instances.sort_unstable();
        let key = format!("{readiness_port}/{}", instances.join(","));
        let cached = self.lock().get(policy_server).cloned();
        let status = match cached {
            // An answer without the policy may come from a process older than the config
            // that added it: asked again.
            Some(cached)
                if cached.pods == key
                    && cached.fetched.elapsed() < MAX_AGE
                    && cached.status.policies.contains_key(unique_name) =>
            {
                cached.status
            }
            _ => {
                let status = Arc::new(fetch(pods, readiness_port).await?);
                self.lock().insert(
                    policy_server.to_string(),
                    CachedStatus {
                        pods: key,
                        fetched: Instant::now(),
                        status: status.clone(),
                    },
                );
                status
            }
        };
        status.policies.get(unique_name).cloned().ok_or_else(|| {
            "the policy-server's status does not list the policy (an older policy-server?)"
                .to_string()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedStatus>> {
        // A poisoned map only holds answers; they stay valid.
        self.by_policy_server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What each of `pods` answers on `GET /status`, by pod name, asked all at once: an in-place
/// reloading PolicyServer's pods may serve different versions of a policy for a while.
pub async fn fetch_each(
    pods: &[Pod],
    readiness_port: i32,
) -> Vec<(String, Result<PolicyServerLoadStatus, String>)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let asks = pods.iter().map(|pod| {
        let client = client.clone();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        async move {
            let Some(ip) = ip else {
                return (name, Err("the pod has no address yet".to_string()));
            };
            let url = format!("http://{ip}:{readiness_port}{STATUS_PATH}");
            let answer = match tokio::time::timeout(ANSWER_TIMEOUT, get(&client, &url)).await {
                Ok(answer) => answer.map_err(|err| format!("{url}: {err}")),
                Err(_) => Err(format!("{url}: no answer within {ANSWER_TIMEOUT:?}")),
            };
            (name, answer)
        }
    });
    futures::future::join_all(asks).await
}

/// The load status the first of `pods` that has finished loading reports (every pod of the
/// latest ReplicaSet serves the same configuration), or why none could tell.
async fn fetch(pods: &[Pod], readiness_port: i32) -> Result<PolicyServerLoadStatus, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut failures = Vec::new();
    for ip in pods
        .iter()
        .filter_map(|pod| pod.status.as_ref()?.pod_ip.clone())
    {
        let url = format!("http://{ip}:{readiness_port}{STATUS_PATH}");
        match tokio::time::timeout(ANSWER_TIMEOUT, get(&client, &url)).await {
            Ok(Ok(status)) if status.loaded => return Ok(status),
            Ok(Ok(_)) => failures.push(format!("{url}: still loading")),
            Ok(Err(err)) => failures.push(format!("{url}: {err}")),
            Err(_) => failures.push(format!("{url}: no answer within {ANSWER_TIMEOUT:?}")),
        }
    }
    if failures.is_empty() {
        return Err("no policy-server pod has an address yet".to_string());
    }
    Err(failures.join("; "))
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
) -> Result<PolicyServerLoadStatus, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let response = client.get(uri).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("not a policy-server status: {e}"))
}
