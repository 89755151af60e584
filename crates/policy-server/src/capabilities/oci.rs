//! The `oci/v1/*` registry queries, with the same registry settings as module downloads
//! (insecure sources, source authorities, docker config credentials).

use oci_client::Reference;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use serde_json::{Value, json};

use api_types::capabilities::Capability;

use api_types::error_text::with_causes;

use crate::fetch::{DOWNLOAD_TIMEOUT, Fetcher};

/// Answers `capability` (`oci/v1/manifest_digest`, `oci/v1/oci_manifest`,
/// `oci/v1/oci_manifest_config`) for `image`.
pub async fn query(
    registry: &Fetcher,
    capability: Capability,
    image: &str,
) -> Result<Value, String> {
    let reference: Reference = image
        .parse()
        .map_err(|e| format!("{image:?} is not an OCI reference: {e}"))?;
    let (client, auth) = registry
        .registry_client(&reference)
        .map_err(|e| with_causes(&e))?;
    let failed = |e: oci_client::errors::OciDistributionError| {
        format!("cannot query {image}: {}", with_causes(&e))
    };
    let answer = async {
        match capability {
            Capability::OciManifestDigest => {
                let digest = client
                    .fetch_manifest_digest(&reference, &auth)
                    .await
                    .map_err(failed)?;
                Ok(json!({ "digest": digest }))
            }
            Capability::OciManifest => {
                let accepted = [
                    OCI_IMAGE_MEDIA_TYPE,
                    OCI_IMAGE_INDEX_MEDIA_TYPE,
                    IMAGE_MANIFEST_MEDIA_TYPE,
                    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
                ];
                let (raw, _digest) = client
                    .pull_manifest_raw(&reference, &auth, &accepted)
                    .await
                    .map_err(failed)?;
                serde_json::from_slice(&raw)
                    .map_err(|e| format!("the manifest of {image} is not JSON: {e}"))
            }
            Capability::OciManifestConfig => {
                let (manifest, digest, config) = client
                    .pull_manifest_and_config(&reference, &auth)
                    .await
                    .map_err(failed)?;
                let config: Value = serde_json::from_str(&config)
                    .map_err(|e| format!("the config of {image} is not JSON: {e}"))?;
                Ok(json!({ "manifest": manifest, "digest": digest, "config": config }))
            }
            other => Err(format!("unknown operation: {}", other.operation())),
        }
    };
    tokio::time::timeout(DOWNLOAD_TIMEOUT, answer)
        .await
        .map_err(|_| format!("cannot query {image}: no answer within {DOWNLOAD_TIMEOUT:?}"))?
}
