//! Policies fetched from a real OCI registry (Debian's `docker-registry`, started here) over
//! HTTP and HTTPS, and from a local HTTPS server, by the real policy-server binary.
//!
//! Without `/usr/bin/docker-registry` the registry tests print why and return, unless
//! `KUBEWARDEN_REQUIRE_TEST_SERVERS` is set (as `cargo xtask test` and CI do).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::*;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;

const REGISTRY: &str = "/usr/bin/docker-registry";

struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a registry on a free port, with TLS when `tls` gives (cert, key).
fn start_registry(dir: &Path, tls: Option<(&Path, &Path)>) -> Option<Registry> {
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
fn push(registry: &Registry, repository: &str, fixture: &str, https_ca: Option<&Path>) -> String {
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

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn verdict(
    server: &Server,
    ca: &Path,
    policy: &str,
    labels: serde_json::Value,
) -> serde_json::Value {
    let (status, body) = post(
        server,
        ca,
        &format!("/validate/{policy}"),
        &review(labels),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["response"].clone()
}

#[test]
fn policies_from_an_insecure_registry() {
    let (dir, _pki) = setup("registry-http");
    let Some(registry) = start_registry(&dir, None) else {
        return;
    };
    let reference = push(
        &registry,
        "policies/reject-by-label",
        "reject-by-label",
        None,
    );
    let sources = write(
        &dir,
        "sources.yml",
        &format!("insecure_sources: [\"localhost:{}\"]\n", registry.port),
    );
    let policies = write(
        &dir,
        "remote.yml",
        &format!(
            "from-registry:\n  module: registry://{reference}\n  settings: {{denied_labels: [forbidden]}}\nmissing-tag:\n  module: registry://localhost:{}/policies/nothing:v9\n",
            registry.port
        ),
    );
    let sources_arg = sources.display().to_string();
    let server = start_with(&dir, &policies, None, &["--sources-path", &sources_arg]);
    let ca = dir.join("ca.crt");
    assert_eq!(
        verdict(&server, &ca, "from-registry", json!({"forbidden": "1"}))["allowed"],
        false
    );
    assert_eq!(
        verdict(&server, &ca, "from-registry", json!({}))["allowed"],
        true
    );
    let missing = verdict(&server, &ca, "missing-tag", json!({}));
    assert_eq!(missing["status"]["code"], 500);
    assert!(
        missing["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot pull"),
        "{missing}"
    );
    // The download is kept for inspection.
    assert!(dir.join("modules/registry").is_dir());
}

#[test]
fn policies_from_an_https_registry_with_a_source_authority() {
    let (dir, pki) = setup("registry-https");
    pki.issue(
        &["localhost"],
        &dir.join("registry.crt"),
        &dir.join("registry.key"),
    );
    let Some(registry) = start_registry(
        &dir,
        Some((&dir.join("registry.crt"), &dir.join("registry.key"))),
    ) else {
        return;
    };
    let ca = dir.join("ca.crt");
    let reference = push(&registry, "policies/accept-all", "accept-all", Some(&ca));
    let ca_pem = std::fs::read_to_string(&ca).expect("ca");
    let indented: String = ca_pem.lines().map(|l| format!("        {l}\n")).collect();
    let sources = write(
        &dir,
        "sources.yml",
        &format!(
            "source_authorities:\n  \"localhost:{}\":\n    - type: Data\n      data: |\n{indented}",
            registry.port
        ),
    );
    let policies = write(
        &dir,
        "remote.yml",
        &format!("trusted:\n  module: registry://{reference}\n"),
    );
    let sources_arg = sources.display().to_string();
    let server = start_with(&dir, &policies, None, &["--sources-path", &sources_arg]);
    assert_eq!(verdict(&server, &ca, "trusted", json!({}))["allowed"], true);
    drop(server);

    // Without the authority the registry's certificate is not trusted: the policy reports it.
    let (other_dir, _) = setup("registry-https-untrusted");
    let policies = write(
        &other_dir,
        "remote.yml",
        &format!("trusted:\n  module: registry://{reference}\n"),
    );
    let server = start_with(&other_dir, &policies, None, &[]);
    let answer = verdict(&server, &other_dir.join("ca.crt"), "trusted", json!({}));
    assert_eq!(answer["status"]["code"], 500);
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot pull"),
        "{answer}"
    );
}

#[test]
fn policies_downloaded_over_https() {
    let (dir, pki) = setup("https-download");
    pki.issue(&["localhost"], &dir.join("web.crt"), &dir.join("web.key"));
    let wasm = std::fs::read(fixtures().join("reject-by-label.wasm")).expect("fixture");
    let port = free_port();
    let (cert, key) = (dir.join("web.crt"), dir.join("web.key"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.spawn(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let app = Router::new().route("/policies/p.wasm", get(move || async move { wasm.clone() }));
        let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
            .await
            .expect("tls");
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        axum_server::bind_rustls(address, config)
            .serve(app.into_make_service())
            .await
            .expect("serve");
    });
    let ca_path = dir.join("ca.crt").display().to_string();
    let sources = write(
        &dir,
        "sources.yml",
        &format!(
            "source_authorities:\n  \"localhost:{port}\":\n    - type: Path\n      path: {ca_path}\n"
        ),
    );
    let policies = write(
        &dir,
        "remote.yml",
        &format!(
            "downloaded:\n  module: https://localhost:{port}/policies/p.wasm\n  settings: {{denied_labels: [forbidden]}}\nnot-found:\n  module: https://localhost:{port}/policies/missing.wasm\n"
        ),
    );
    let sources_arg = sources.display().to_string();
    let server = start_with(&dir, &policies, None, &["--sources-path", &sources_arg]);
    let ca = dir.join("ca.crt");
    assert_eq!(
        verdict(&server, &ca, "downloaded", json!({"forbidden": "1"}))["allowed"],
        false
    );
    let missing = verdict(&server, &ca, "not-found", json!({}));
    assert!(
        missing["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("404"),
        "{missing}"
    );
}
