//! Policies fetched from a real OCI registry (Debian's `docker-registry`, started here) over
//! HTTP and HTTPS, and from a local HTTPS server, by the real policy-server binary.
//!
//! Without `/usr/bin/docker-registry` the registry tests print why and return, unless
//! `KUBEWARDEN_REQUIRE_TEST_SERVERS` is set (as `cargo xtask test` and CI do).

mod common;

use axum::Router;
use axum::routing::get;
use common::registry::push;
use common::*;
use serde_json::json;
use test_cluster::registry::start_registry;

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

/// A forward HTTP proxy: logs each connection's first request line, then relays the bytes to
/// the host the absolute-form URL names (the registry and the file server accept such lines).
fn start_forward_proxy() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
    let port = listener.local_addr().expect("address").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                if let Ok(mut seen) = log.lock() {
                    seen.push(line.trim().to_string());
                }
                // `GET http://host:port/path HTTP/1.1`
                let target = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|url| url.strip_prefix("http://"))
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_string);
                let Some(target) = target else { return };
                let Ok(mut upstream) = TcpStream::connect(&target) else {
                    return;
                };
                let _ = upstream.write_all(line.as_bytes());
                let buffered = reader.buffer().to_vec();
                let _ = upstream.write_all(&buffered);
                let mut from_upstream = upstream.try_clone().expect("clone");
                let mut to_client = client.try_clone().expect("clone");
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_upstream, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
                let mut from_client = client;
                let _ = std::io::copy(&mut from_client, &mut upstream);
                let _ = upstream.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, seen)
}

#[test]
fn downloads_go_through_the_proxy_the_environment_names() {
    let (dir, _pki) = setup("proxy");
    let Some(registry) = start_registry(&dir, None) else {
        return;
    };
    let reference = push(
        &registry,
        "policies/reject-by-label",
        "reject-by-label",
        None,
    );
    let (proxy_port, seen) = start_forward_proxy();
    // One registry under two names: as 127.0.0.1 it goes through the proxy, as localhost
    // (in NO_PROXY) it does not.
    let proxied = reference.replace("localhost:", "127.0.0.1:");
    let sources = write(
        &dir,
        "sources.yml",
        &format!(
            "insecure_sources: [\"localhost:{port}\", \"127.0.0.1:{port}\"]\n",
            port = registry.port
        ),
    );
    let policies = write(
        &dir,
        "proxied.yml",
        &format!(
            "through-proxy:\n  module: registry://{proxied}\n  settings: {{denied_labels: [forbidden]}}\ndirect:\n  module: registry://{reference}\n  settings: {{denied_labels: [forbidden]}}\n"
        ),
    );
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let sources_arg = sources.display().to_string();
    let server = start_with_env(
        &dir,
        &policies,
        None,
        &["--sources-path", &sources_arg],
        None,
        &[
            ("HTTP_PROXY", &proxy),
            ("HTTPS_PROXY", &proxy),
            ("NO_PROXY", "localhost"),
        ],
    );
    let ca = dir.join("ca.crt");
    for policy in ["through-proxy", "direct"] {
        assert_eq!(
            verdict(&server, &ca, policy, json!({"forbidden": "1"}))["allowed"],
            false,
            "{policy} loaded"
        );
    }
    let seen = seen.lock().expect("log").clone();
    let registry_host = format!("127.0.0.1:{}", registry.port);
    assert!(
        seen.iter().any(|line| line.contains(&registry_host)),
        "the proxied registry was reached through the proxy: {seen:?}"
    );
    assert!(
        !seen.iter().any(|line| line.contains("localhost")),
        "NO_PROXY hosts are reached directly: {seen:?}"
    );
}
