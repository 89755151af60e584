//! The audit-scanner against the local control plane and a real policy-server process serving
//! the test policies built from `policies/`: reports for resources that pass and fail, errors
//! for a policy the server does not know and for an unreachable server, re-runs replacing
//! reports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use api_types::crd::ClusterAdmissionPolicy;
use api_types::reports::{ResultOutcome, openreports};
use audit_scanner::{PolicyServerClient, ReportKind, ScanOptions, Scanner, Scope, TlsOptions};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use test_cluster::{TestCluster, unique_name, wait_until};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policy-evaluator/tests/fixtures")
}

/// The policy-server binary, from `KUBEWARDEN_POLICY_SERVER_BIN` (`cargo xtask test` sets it
/// to the one cargo built beside these tests).
fn policy_server_binary() -> PathBuf {
    let path = std::env::var_os("KUBEWARDEN_POLICY_SERVER_BIN")
        .map(PathBuf::from)
        .expect(
            "KUBEWARDEN_POLICY_SERVER_BIN is not set: run the cluster tests through `cargo xtask \
             test`, or set it to a policy-server binary (`cargo build -p policy-server` names it)",
        );
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

struct PolicyServerProcess {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl Drop for PolicyServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts the policy-server over HTTPS on 127.0.0.1 with `policies`; returns it and the CA
/// file that verifies it.
fn start_policy_server(policies: serde_json::Value) -> (PolicyServerProcess, PathBuf) {
    let dir = std::env::temp_dir().join(unique_name("audit-test"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "audit test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("write");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("write");
    std::fs::write(dir.join("policies.yml"), policies.to_string()).expect("write");

    let (port, readiness) = (free_port(), free_port());
    let mut launch = api_types::config::launch::PolicyServerLaunch::on_loopback(
        dir.join("policies.yml"),
        &dir,
        port,
        readiness,
    );
    launch.log_level = "warn".to_string();
    let child = launch
        .command(&policy_server_binary())
        .stdout(Stdio::null())
        .spawn()
        .expect("policy-server starts");
    let server = PolicyServerProcess {
        child,
        port,
        _dir: dir.clone(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", readiness)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /readiness HTTP/1.0\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
        });
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "policy-server not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, dir.join("ca.crt"))
}

async fn create_active_policy(
    cluster: &TestCluster,
    name: &str,
    rules: serde_json::Value,
    extra: serde_json::Value,
) {
    let mut spec = json!({
        "module": "registry://example.invalid/unused:v1", "mutating": false, "rules": rules,
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cluster.namespace}},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let policy: ClusterAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
        "metadata": {"name": name, "annotations": {"io.kubewarden.policy.severity": "medium", "io.kubewarden.policy.category": "Test"}},
        "spec": spec,
    }))
    .expect("policy");
    let api = cluster.cluster_wide::<ClusterAdmissionPolicy>();
    api.create(&PostParams::default(), &policy)
        .await
        .expect("created");
    // No controller runs here: the status a controller would give an active policy.
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"policyStatus": "active", "mode": "protect"}})),
    )
    .await
    .expect("status");
}

fn scanner(cluster: &TestCluster, url: String, ca: PathBuf) -> Scanner {
    let tls = TlsOptions {
        extra_ca: vec![ca],
        ..TlsOptions::default()
    };
    let client = PolicyServerClient::new(&tls, "kubewarden", Some(url)).expect("client");
    Scanner::new(
        cluster.client.clone(),
        client,
        ScanOptions {
            scope: Scope::Namespace(cluster.namespace.clone()),
            kubewarden_namespace: "kubewarden".to_string(),
            ignore_namespaces: vec![],
            parallel_namespaces: 1,
            parallel_resources: 4,
            parallel_policies: 2,
            page_size: 1,
            report_kind: ReportKind::Openreports,
            store: true,
            output: false,
        },
    )
}

/// Reports of the namespace by resource name: (run uid, result by policy).
async fn reports(cluster: &TestCluster) -> BTreeMap<String, (String, openreports::Report)> {
    let api: Api<openreports::Report> = cluster.namespaced();
    api.list(&ListParams::default())
        .await
        .expect("reports")
        .items
        .into_iter()
        .map(|r| {
            let run = r
                .labels()
                .get("kubewarden.io/audit-scanner-run-uid")
                .cloned()
                .unwrap_or_default();
            let resource = r
                .spec
                .scope
                .as_ref()
                .and_then(|s| s.name.clone())
                .unwrap_or_default();
            (resource, (run, r))
        })
        .collect()
}

fn outcome(report: &openreports::Report, policy: &str) -> Option<(ResultOutcome, Option<String>)> {
    report
        .spec
        .results
        .iter()
        .find(|r| r.policy == policy)
        .map(|r| {
            (
                r.result.unwrap_or(ResultOutcome::Skip),
                r.description.clone(),
            )
        })
}

#[tokio::test]
async fn audit_writes_reports_for_existing_resources() {
    let Some(cluster) = TestCluster::connect("audit").await else {
        return;
    };
    let accept = unique_name("accept");
    let reject = unique_name("reject");
    let unknown = unique_name("unknown");
    let no_audit = unique_name("no-audit");
    let unserved = unique_name("unserved");
    let (server, ca) = start_policy_server(json!({
        format!("clusterwide-{accept}"): {"module": format!("file://{}", fixtures().join("accept-all.wasm").display())},
        format!("clusterwide-{reject}"): {"module": format!("file://{}", fixtures().join("reject-by-label.wasm").display()),
                                          "settings": {"denied_labels": ["forbidden"]}},
    }));
    let configmaps = json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE"]}]);
    create_active_policy(&cluster, &accept, configmaps.clone(), json!({})).await;
    create_active_policy(&cluster, &reject, configmaps.clone(), json!({"objectSelector": {"matchExpressions": [{"key": "skip-me", "operator": "DoesNotExist"}]}})).await;
    create_active_policy(&cluster, &unknown, configmaps.clone(), json!({})).await;
    create_active_policy(
        &cluster,
        &no_audit,
        configmaps,
        json!({"backgroundAudit": false}),
    )
    .await;
    create_active_policy(
        &cluster,
        &unserved,
        json!([{"apiGroups": ["example.invalid"], "apiVersions": ["v1"], "resources": ["widgets"], "operations": ["CREATE"]}]),
        json!({}),
    )
    .await;

    let api = cluster.namespaced::<ConfigMap>();
    for (name, labels) in [
        ("good", json!({})),
        ("bad", json!({"forbidden": "yes"})),
        ("skipped", json!({"skip-me": "yes", "forbidden": "yes"})),
    ] {
        let object: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                .expect("cm");
        api.create(&PostParams::default(), &object)
            .await
            .expect("configmap");
    }
    // The controller-manager publishes kube-root-ca.crt in every namespace; it is audited too.
    wait_until("kube-root-ca.crt", Duration::from_secs(30), || async {
        Ok(api.get_opt("kube-root-ca.crt").await?.is_some())
    })
    .await
    .expect("root CA configmap");

    let url = format!("https://127.0.0.1:{}", server.port);
    let first = scanner(&cluster, url.clone(), ca.clone());
    let summary = first.run().await.expect("scan runs");
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(summary.resources, 4);
    assert_eq!(summary.reports, 4);
    // The unknown policy answers 404 for every resource.
    assert_eq!(summary.evaluation_errors, 4);

    let found = reports(&cluster).await;
    assert_eq!(found.len(), 4, "{:?}", found.keys());
    let (run, good) = &found["good"];
    assert_eq!(run, first.run_uid());
    let accept_id = format!("clusterwide-{accept}");
    let reject_id = format!("clusterwide-{reject}");
    let unknown_id = format!("clusterwide-{unknown}");
    assert_eq!(outcome(good, &accept_id), Some((ResultOutcome::Pass, None)));
    assert_eq!(outcome(good, &reject_id), Some((ResultOutcome::Pass, None)));
    let (status, message) = outcome(good, &unknown_id).expect("unknown policy result");
    assert_eq!(status, ResultOutcome::Error);
    assert!(message.unwrap_or_default().contains("404"));
    assert!(outcome(good, &format!("clusterwide-{no_audit}")).is_none());
    assert_eq!(
        (
            good.spec.summary.pass,
            good.spec.summary.fail,
            good.spec.summary.error
        ),
        (2, 0, 1)
    );
    let owner = &good.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ConfigMap", "good")
    );
    assert_eq!(good.name_any(), owner.uid);

    let (_, bad) = &found["bad"];
    assert_eq!(
        outcome(bad, &reject_id),
        Some((
            ResultOutcome::Fail,
            Some("label forbidden is not allowed".to_string())
        ))
    );
    let result = bad
        .spec
        .results
        .iter()
        .find(|r| r.policy == reject_id)
        .expect("result");
    assert_eq!(result.category.as_deref(), Some("Test"));
    assert_eq!(
        serde_json::to_value(result.severity).expect("json"),
        json!("medium")
    );

    let (_, skipped) = &found["skipped"];
    assert!(
        outcome(skipped, &reject_id).is_none(),
        "the object selector leaves it out"
    );
    assert_eq!(skipped.spec.summary.skip, 1);

    // A second run replaces every report.
    let second = scanner(&cluster, url, ca.clone());
    second.run().await.expect("scan runs");
    let found = reports(&cluster).await;
    assert_eq!(found.len(), 4);
    assert!(found.values().all(|(run, _)| run == second.run_uid()));

    // An unreachable policy-server: every result is an error and the scan still completes.
    drop(server);
    let third = scanner(&cluster, format!("https://127.0.0.1:{}", free_port()), ca);
    let summary = third.run().await.expect("scan runs");
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let found = reports(&cluster).await;
    let (_, good) = &found["good"];
    assert_eq!(good.spec.summary.error, 3);

    let policies = cluster.cluster_wide::<ClusterAdmissionPolicy>();
    for name in [&accept, &reject, &unknown, &no_audit, &unserved] {
        let _ = policies.delete(name, &DeleteParams::default()).await;
    }
    cluster.cleanup().await;
}
