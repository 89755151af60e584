//! Asks the policy-server pods whether they could load a policy (`GET /status` on their
//! readiness port), so a policy whose module cannot be fetched or whose settings are invalid
//! says so on its own status instead of only rejecting every request with code 500.

use std::time::Duration;

use api_types::load_status::{PolicyLoadStatus, PolicyServerLoadStatus, STATUS_PATH};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;

/// How long one pod gets to answer; the readiness port is plain HTTP on the pod network.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Bodies larger than this are not a policy-server's status.
const MAX_BODY_BYTES: usize = 4 << 20;

/// The policy `unique_name`'s load state as the first of `pods` that answers reports it (every
/// pod of the latest ReplicaSet serves the same configuration), or why none could tell.
pub async fn fetch(
    pods: &[Pod],
    readiness_port: i32,
    unique_name: &str,
) -> Result<PolicyLoadStatus, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut failures = Vec::new();
    for ip in pods
        .iter()
        .filter_map(|pod| pod.status.as_ref()?.pod_ip.clone())
    {
        let url = format!("http://{ip}:{readiness_port}{STATUS_PATH}");
        match tokio::time::timeout(ANSWER_TIMEOUT, get(&client, &url)).await {
            Ok(Ok(status)) if !status.loaded => failures.push(format!("{url}: still loading")),
            Ok(Ok(mut status)) => {
                return status.policies.remove(unique_name).ok_or_else(|| {
                    format!("{url} does not list the policy (an older policy-server?)")
                });
            }
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
