//! Host capabilities of the real policy-server binary against the local control plane:
//! a context-aware policy reading Namespaces from the watch cache (and seeing a label added
//! afterwards), list queries with selectors and field masks, `can_i` through a real
//! SubjectAccessReview, refusal of kinds the policy did not declare, and DNS lookups.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use test_cluster::{TestCluster, unique_name};

fn pod_review(namespace: &str) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "ctx-uid",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": namespace,
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace}}
        }
    })
    .to_string()
}

fn policies_yml(dir: &std::path::Path, marker: &str) -> std::path::PathBuf {
    let f = fixtures().display().to_string();
    let host_call = |namespace: &str, operation: &str, payload: Value| {
        json!({"namespace": namespace, "operation": operation, "payload": payload}).to_string()
    };
    let text = format!(
        r#"
namespace-label:
  module: file://{f}/namespace-label.wasm
  contextAwareResources: [{{apiVersion: v1, kind: Namespace}}]
  hostCapabilities: ["kubernetes/*"]
  settings: {{required_namespace_label: team}}
list-namespaces:
  module: file://{f}/host-call.wasm
  contextAwareResources: [{{apiVersion: v1, kind: Namespace}}]
  hostCapabilities: ["*"]
  settings: {list}
can-i:
  module: file://{f}/host-call.wasm
  hostCapabilities: ["kubernetes/can_i"]
  settings: {can_i}
undeclared-kind:
  module: file://{f}/host-call.wasm
  contextAwareResources: [{{apiVersion: v1, kind: Namespace}}]
  hostCapabilities: ["*"]
  settings: {undeclared}
rego-opa:
  module: file://{f}/opa-namespace-label.wasm
  contextAwareResources: [{{apiVersion: v1, kind: Namespace}}]
  settings: {{required_namespace_label: team}}
rego-gatekeeper:
  module: file://{f}/gatekeeper-namespace-label.wasm
  contextAwareResources: [{{apiVersion: v1, kind: Namespace}}]
  settings: {{required_namespace_label: team}}
dns:
  module: file://{f}/dns-lookup.wasm
  hostCapabilities: ["net/v1/dns_lookup_host"]
  settings: {{host: localhost}}
"#,
        list = host_call(
            "kubernetes",
            "list_resources_all",
            json!({"api_version": "v1", "kind": "Namespace",
                   "label_selector": format!("ctx-marker={marker},team"),
                   "field_masks": ["metadata.name", "metadata.labels.team"]})
        ),
        can_i = host_call(
            "kubernetes",
            "can_i",
            json!({"subject_access_review": {"user": "system:admin", "groups": ["system:masters"],
                   "resource_attributes": {"verb": "delete", "resource": "namespaces"}},
                   "disable_cache": false})
        ),
        undeclared = host_call(
            "kubernetes",
            "get_resource",
            json!({"api_version": "v1", "kind": "ConfigMap", "name": "x", "namespace": "default", "disable_cache": false})
        ),
    );
    let path = dir.join("policies.yml");
    std::fs::write(&path, text).expect("policies.yml");
    path
}

fn message(body: &Value) -> &str {
    body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
}

fn warning(body: &Value) -> Value {
    let text = body["response"]["warnings"][0].as_str().unwrap_or_default();
    serde_json::from_str(text).unwrap_or(Value::String(text.to_string()))
}

async fn namespace(client: &kube::Client, name: &str, labels: Value) {
    let object: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
        .expect("creates namespace");
}

#[tokio::test(flavor = "multi_thread")]
async fn context_aware_policies_on_the_local_control_plane() {
    let Some(cluster) = TestCluster::connect("context_aware_policies").await else {
        return;
    };
    let client = cluster.client.clone();
    let marker = unique_name("m");
    let (labelled, bare) = (unique_name("ctx-labelled"), unique_name("ctx-bare"));
    namespace(
        &client,
        &labelled,
        json!({"team": "a", "ctx-marker": marker}),
    )
    .await;
    namespace(&client, &bare, json!({"ctx-marker": marker})).await;

    let (dir, _pki) = setup("context-aware");
    let policies = policies_yml(&dir, &marker);
    let ca = dir.join("ca.crt");
    let server = tokio::task::spawn_blocking(move || start_with(&dir, &policies, None, &[]))
        .await
        .expect("starts");
    let call = |path: &'static str, body: String| {
        let (server, ca) = (&server, &ca);
        let (status, body) = post(server, ca, path, &body, None);
        assert_eq!(status, 200, "{path}: {body}");
        body
    };

    // The context-aware policy reads Namespaces from the cache.
    let body = call("/validate/namespace-label", pod_review(&labelled));
    assert_eq!(body["response"]["allowed"], true, "{body}");
    let body = call("/validate/namespace-label", pod_review(&bare));
    assert_eq!(body["response"]["allowed"], false, "{body}");
    assert_eq!(
        message(&body),
        format!("namespace {bare} lacks the label team")
    );

    // Rego policies get the Namespaces as data.kubernetes / data.inventory.
    for path in ["/validate/rego-opa", "/validate/rego-gatekeeper"] {
        let body = call(path, pod_review(&labelled));
        assert_eq!(body["response"]["allowed"], true, "{path}: {body}");
        let body = call(path, pod_review(&bare));
        assert_eq!(body["response"]["allowed"], false, "{path}: {body}");
        assert_eq!(
            message(&body),
            format!("namespace {bare} lacks the label team")
        );
    }

    // A label added later reaches the cache through the watch.
    Api::<Namespace>::all(client.clone())
        .patch(
            &bare,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}})),
        )
        .await
        .expect("labels the namespace");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = call("/validate/namespace-label", pod_review(&bare));
        if body["response"]["allowed"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache never saw the label: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Lists honour label selectors and field masks.
    let body = call("/validate/list-namespaces", pod_review("default"));
    let list = warning(&body);
    assert_eq!(list["kind"], "NamespaceList", "{body}");
    let mut expected = vec![
        json!({"metadata": {"name": labelled, "labels": {"team": "a"}}}),
        json!({"metadata": {"name": bare, "labels": {"team": "b"}}}),
    ];
    expected.sort_by_key(|item| item["metadata"]["name"].as_str().map(str::to_string));
    assert_eq!(list["items"], Value::Array(expected), "{list}");

    // can_i asks the API server.
    let body = call("/validate/can-i", pod_review("default"));
    assert_eq!(warning(&body)["allowed"], true, "{body}");

    // Kinds the policy did not declare are refused.
    let body = call("/validate/undeclared-kind", pod_review("default"));
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        message(&body)
            .contains("Policy has not been granted access to Kubernetes v1/ConfigMap resources"),
        "{body}"
    );

    // DNS lookups use the system resolver.
    let body = call("/validate/dns", pod_review("default"));
    let resolved = body["response"]["warnings"][0].as_str().unwrap_or_default();
    assert!(resolved.starts_with("localhost resolves to "), "{body}");
    assert!(
        resolved.contains("127.0.0.1") || resolved.contains("::1"),
        "{body}"
    );

    drop(server);
    let namespaces: Api<Namespace> = Api::all(client);
    for name in [&labelled, &bare] {
        let _ = namespaces.delete(name, &DeleteParams::background()).await;
    }
    cluster.cleanup().await;
}

#[test]
fn without_a_cluster_context_aware_policies_stop_the_start_unless_told_otherwise() {
    let (dir, _pki) = setup("no-cluster");
    let policies = dir.join("policies.yml");
    let f = fixtures().display().to_string();
    std::fs::write(
        &policies,
        format!(
            "namespace-label:\n  module: file://{f}/namespace-label.wasm\n  contextAwareResources: [{{apiVersion: v1, kind: Namespace}}]\n  hostCapabilities: ['*']\n  settings: {{required_namespace_label: team}}\n"
        ),
    )
    .expect("policies.yml");
    // A kubeconfig whose server does not answer.
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {token: t}}]\n",
    )
    .expect("kubeconfig");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_policy-server"))
        .arg("--policies")
        .arg(&policies)
        .arg("--policies-download-dir")
        .arg(&dir)
        .args(["--port", "0", "--readiness-probe-port", "0"])
        .env("KUBECONFIG", &kubeconfig)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach Kubernetes for the context-aware policies")
            && stderr.contains("--ignore-kubernetes-connection-failure"),
        "{stderr}"
    );

    let server = start_with_kubeconfig(
        &dir,
        &policies,
        None,
        &["--ignore-kubernetes-connection-failure"],
        Some(&kubeconfig),
    );
    let (_, body) = post(
        &server,
        &dir.join("ca.crt"),
        "/validate/namespace-label",
        &pod_review("default"),
        None,
    );
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        message(&body).contains("this policy-server has no connection to Kubernetes"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_starts_the_cache_of_a_newly_read_kind() {
    let Some(cluster) = TestCluster::connect("context_aware_reload").await else {
        return;
    };
    let bare = unique_name("ctx-reload-bare");
    namespace(&cluster.client, &bare, json!({})).await;
    let (dir, _pki) = setup("context-aware-reload");
    let f = fixtures().display().to_string();
    let policies = write(
        &dir,
        "policies.yml",
        &format!("accept:\n  module: file://{f}/accept-all.wasm\n"),
    );
    let ca = dir.join("ca.crt");
    let server = {
        let (dir, policies) = (dir.clone(), policies.clone());
        tokio::task::spawn_blocking(move || {
            start_with(&dir, &policies, None, &["--reload-policies"])
        })
        .await
        .expect("starts")
    };
    // No policy read Namespaces at start-up: the reload must start their cache.
    write(
        &dir,
        "policies.yml.next",
        &format!(
            "accept:\n  module: file://{f}/accept-all.wasm\nnamespace-label:\n  module: file://{f}/namespace-label.wasm\n  contextAwareResources: [{{apiVersion: v1, kind: Namespace}}]\n  hostCapabilities: [\"kubernetes/*\"]\n  settings: {{required_namespace_label: team}}\n"
        ),
    );
    std::fs::rename(dir.join("policies.yml.next"), &policies).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = post(
            &server,
            &ca,
            "/validate/namespace-label",
            &pod_review(&bare),
            None,
        );
        if status == 200 && message(&body) == format!("namespace {bare} lacks the label team") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reloaded context-aware policy does not read Namespaces: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Api::<Namespace>::all(cluster.client.clone())
        .delete(&bare, &DeleteParams::default())
        .await;
}
