//! `controller --cleanup`: what the chart's pre-delete hook runs before `helm uninstall` removes
//! the controller. It deletes every PolicyServer and waits until the running controller has
//! finalized them, which removes the webhook configuration of every policy they served; without
//! it the controller would go first and leave PolicyServers stuck on their finalizers and
//! webhooks pointing at policy-servers that no longer exist (failing closed for `Fail` policies).

use std::time::{Duration, Instant};

use api_types::crd::PolicyServer;
use api_types::naming::labels;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

use crate::error::{Error, KubeResultExt};

const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What is still there when the clean-up gives up.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error(transparent)]
    Kube(#[from] Error),
    #[error(
        "after {waited:?} these are still there: {left}; is the controller running? (it removes the PolicyServers' finalizers and the policies' webhooks)"
    )]
    TimedOut { waited: Duration, left: String },
}

/// Deletes every PolicyServer, then waits up to `timeout` until none is left and no webhook
/// configuration labelled `app.kubernetes.io/part-of=kubewarden` remains.
pub async fn run(client: Client, timeout: Duration) -> Result<(), CleanupError> {
    let servers: Api<PolicyServer> = Api::all(client.clone());
    for server in servers
        .list(&ListParams::default())
        .await
        .context(|| "listing PolicyServers".to_string())?
    {
        let name = server.name_any();
        match servers.delete(&name, &DeleteParams::background()).await {
            // Deleted meanwhile (by the defaults chart's uninstall, say).
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            deleted => {
                deleted.context(|| format!("deleting PolicyServer {name}"))?;
                tracing::info!(policy_server = %name, "deleting");
            }
        }
    }
    let started = Instant::now();
    loop {
        let left = leftovers(&client).await?;
        if left.is_empty() {
            tracing::info!(
                waited = ?started.elapsed(),
                "every PolicyServer and policy webhook is gone"
            );
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(CleanupError::TimedOut {
                waited: started.elapsed(),
                left: left.join(", "),
            });
        }
        tracing::info!(left = %left.join(", "), "waiting for the controller to finalize");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// PolicyServers and Kubewarden webhook configurations that still exist, named by kind.
async fn leftovers(client: &Client) -> Result<Vec<String>, Error> {
    let all = ListParams::default();
    let ours = ListParams::default().labels(&format!(
        "{}={}",
        labels::PART_OF,
        labels::PART_OF_KUBEWARDEN
    ));
    let mut left: Vec<String> = Api::<PolicyServer>::all(client.clone())
        .list(&all)
        .await
        .context(|| "listing PolicyServers".to_string())?
        .iter()
        .map(|s| format!("PolicyServer {}", s.name_any()))
        .collect();
    left.extend(
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .list(&ours)
            .await
            .context(|| "listing ValidatingWebhookConfigurations".to_string())?
            .iter()
            .map(|w| format!("ValidatingWebhookConfiguration {}", w.name_any())),
    );
    left.extend(
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .list(&ours)
            .await
            .context(|| "listing MutatingWebhookConfigurations".to_string())?
            .iter()
            .map(|w| format!("MutatingWebhookConfiguration {}", w.name_any())),
    );
    Ok(left)
}
