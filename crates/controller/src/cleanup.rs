//! `controller --cleanup`: what the chart's pre-delete hook runs before `helm uninstall` removes
//! the controller. It deletes every PolicyServer and waits until the running controller has
//! finalized them, which removes the webhook configuration of every policy they served; without
//! it the controller would go first and leave PolicyServers stuck on their finalizers and
//! webhooks pointing at policy-servers that no longer exist (failing closed for `Fail` policies).

use std::time::{Duration, Instant};

use api_types::crd::PolicyServer;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::context::delete_if_exists;
use crate::error::{Error, KubeResultExt};

const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What is still there when the clean-up gives up.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error(transparent)]
    Kube(#[from] Error),
    #[error(
        "after {waited:?} these PolicyServers are still there: {left}; is the controller running? (it removes their policies' webhooks, then their finalizers)"
    )]
    TimedOut { waited: Duration, left: String },
}

/// Deletes every PolicyServer, then waits up to `timeout` until none is left. A PolicyServer's
/// finalizer is released only once the webhooks of its policies are gone, so that is all it
/// needs to wait for (other Kubewarden installs' webhooks are not its business).
pub async fn run(client: Client, timeout: Duration) -> Result<(), CleanupError> {
    let servers: Api<PolicyServer> = Api::all(client.clone());
    for name in names(&servers).await? {
        // Gone meanwhile (by the defaults chart's uninstall, say) counts as deleted.
        if delete_if_exists(&servers, &name).await? {
            tracing::info!(policy_server = %name, "deleting");
        }
    }
    let started = Instant::now();
    loop {
        let left = names(&servers).await?;
        if left.is_empty() {
            tracing::info!(
                waited = ?started.elapsed(),
                "every PolicyServer is gone, and with them their policies' webhooks"
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

async fn names(servers: &Api<PolicyServer>) -> Result<Vec<String>, Error> {
    Ok(servers
        .list(&ListParams::default())
        .await
        .context(|| "listing PolicyServers".to_string())?
        .iter()
        .map(ResourceExt::name_any)
        .collect())
}
