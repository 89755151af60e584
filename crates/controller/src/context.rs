//! What every reconciler shares: the client, the options, telemetry, and the small IO helpers
//! they all use to write objects.

use std::fmt::Debug;
use std::sync::Arc;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use crate::backoff::Backoff;
use crate::error::{Error, KubeResultExt};
use crate::metrics::Metrics;
use crate::options::Options;
use crate::policy::load_status::LoadStatusCache;
use crate::watches::Stores;

/// Field manager of everything the controller applies.
pub const FIELD_MANAGER: &str = "kubewarden-controller";

#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub options: Arc<Options>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub backoff: Arc<Backoff>,
    /// What the policy-servers said about loading their policies.
    pub load_status: Arc<LoadStatusCache>,
    /// The objects of the shared watches, read instead of asking the API server.
    pub stores: Stores,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn namespaced<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.options.deployments_namespace)
    }

    pub fn cluster<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = ()>,
    {
        Api::all(self.client.clone())
    }

    /// Publishes a Warning event about `object`; failing to publish is logged, not fatal.
    pub async fn warn<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %err, "cannot publish an event");
        }
    }
}

/// Server-side applies `object` (force: the controller owns every field it sets).
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let span = tracing::info_span!("apply", kind = %K::kind(&()), name = %name);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .instrument(span)
    .await
    .context(|| format!("applying {} {name}", K::kind(&())))
}

/// Deletes `name`, treating "already gone" as success. Returns whether something was deleted.
pub async fn delete_if_exists<K>(api: &Api<K>, name: &str) -> Result<bool, Error>
where
    K: Resource + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => {
            Err(err).context(|| format!("deleting {} {name}", K::kind(&Default::default())))
        }
    }
}
