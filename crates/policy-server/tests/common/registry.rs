//! A real OCI registry (Debian's `docker-registry`) started for a test, and pushes to it the
//! way `kwctl push` does.
//!
//! Without `/usr/bin/docker-registry` the registry tests print why and return, unless
//! `KUBEWARDEN_REQUIRE_TEST_SERVERS` is set (as `cargo xtask test` and CI do).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::{fixtures, free_port};

const REGISTRY: &str = "/usr/bin/docker-registry";

pub struct Registry {
    child: Child,
    pub port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a registry on a free port, with TLS when `tls` gives (cert, key).
pub fn start_registry(dir: &Path, tls: Option<(&Path, &Path)>) -> Option<Registry> {
    if !Path::new(REGISTRY).is_file() {
        if std::env::var_os("KUBEWARDEN_REQUIRE_TEST_SERVERS").is_some() {
            panic!("{REGISTRY} is missing: apt-get install docker-registry");
        }
        eprintln!("skipped: {REGISTRY} is missing (apt-get install docker-registry)");
        return None;
    }
    let port = free_port();
    let storage = dir.join(format!("registry-{port}"));
    let tls_section = tls.map_or(String::new(), |(cert, key)| {
        format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        )
    });
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_section}",
        storage.display()
    );
    let config_path = dir.join(format!("registry-{port}.yml"));
    std::fs::write(&config_path, config).expect("registry config");
    let child = Command::new(REGISTRY)
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("registry starts");
    let registry = Registry { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "registry not listening after 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(registry)
}

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
