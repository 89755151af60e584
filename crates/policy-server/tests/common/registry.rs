//! Pushes to a test registry ([`test_cluster::registry`]) the way `kwctl push` does.

use std::path::Path;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use test_cluster::registry::Registry;

use super::fixtures;

/// Pushes a fixture the way `kwctl push` does: one wasm layer, a wasm config.
pub fn push(
    registry: &Registry,
    repository: &str,
    fixture: &str,
    https_ca: Option<&Path>,
) -> String {
    let reference = format!("localhost:{}/{repository}:v1", registry.port);
    let wasm = std::fs::read(fixtures().join(format!("{fixture}.wasm"))).expect("fixture");
    let config = ClientConfig {
        protocol: match https_ca {
            Some(_) => ClientProtocol::Https,
            None => ClientProtocol::HttpsExcept(vec![format!("localhost:{}", registry.port)]),
        },
        extra_root_certificates: https_ca
            .map(|ca| {
                vec![oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: std::fs::read(ca).expect("ca"),
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(config);
        let parsed: Reference = reference.parse().expect("reference");
        let layers = vec![ImageLayer::new(
            wasm,
            WASM_LAYER_MEDIA_TYPE.to_string(),
            None,
        )];
        let config = Config::new(b"{}".to_vec(), WASM_CONFIG_MEDIA_TYPE.to_string(), None);
        client
            .push(&parsed, &layers, config, &RegistryAuth::Anonymous, None)
            .await
            .expect("push");
    });
    reference
}
