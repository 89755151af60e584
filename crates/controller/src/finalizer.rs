//! Adding and releasing the controller's finalizer, with optimistic concurrency: a patch
//! carries the resourceVersion it was computed from, so it never overwrites a concurrent change.

use std::fmt::Debug;

use api_types::naming::{FINALIZER, LEGACY_FINALIZER};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Error, KubeResultExt};

pub fn is_deleting<K: Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
}

async fn set_finalizers<K>(api: &Api<K>, object: &K, finalizers: Vec<String>) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": object.resource_version(),
        }
    });
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .context(|| format!("updating the finalizers of {}", object.name_any()))?;
    Ok(())
}

/// Adds the finalizer unless present; returns whether it patched.
pub async fn ensure<K>(api: &Api<K>, object: &K) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if object.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(false);
    }
    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    set_finalizers(api, object, finalizers).await?;
    Ok(true)
}

/// Removes the controller's finalizers (current and legacy), letting the deletion finish.
pub async fn release<K>(api: &Api<K>, object: &K) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let ours = |f: &String| f == FINALIZER || f == LEGACY_FINALIZER;
    if !object.finalizers().iter().any(ours) {
        return Ok(());
    }
    let remaining = object
        .finalizers()
        .iter()
        .filter(|f| !ours(f))
        .cloned()
        .collect();
    match set_finalizers(api, object, remaining).await {
        // Already gone: nothing left to release.
        Err(Error::Kube {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 404 => Ok(()),
        other => other,
    }
}
