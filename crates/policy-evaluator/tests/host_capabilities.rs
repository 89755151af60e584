//! Policies that call host capabilities (built from `policies/namespace-label` and
//! `policies/dns-lookup`) get the host's answers and errors, within their grants. The
//! provider here is an in-process stand-in; the policy-server's real one is tested against
//! the local control plane.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use policy_evaluator::host::{Capability, HostCapabilities, KindObjects};
use policy_evaluator::{
    EngineOptions, EvaluatorSettings, PolicyEngine, PolicyEvaluator, PolicyModule,
};
use serde_json::{Value, json};

/// Answers `kubernetes/get_resource` for namespaces `labelled` (label `team`) and `bare`,
/// and `net/v1/dns_lookup_host` for `db.example`.
#[derive(Debug)]
struct FakeCluster;

impl HostCapabilities for FakeCluster {
    fn call(
        &self,
        _policy_id: &str,
        capability: Capability,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let query: Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        match capability.parts() {
            ("kubernetes", "get_resource") => {
                assert_eq!(query["kind"], "Namespace");
                match query["name"].as_str() {
                    Some("labelled") => {
                        Ok(json!({"metadata": {"name": "labelled", "labels": {"team": "a"}}}))
                    }
                    Some("bare") => Ok(json!({"metadata": {"name": "bare"}})),
                    _ => Err("namespaces \"x\" not found".to_string()),
                }
                .map(|object| object.to_string().into_bytes())
            }
            ("net", "v1/dns_lookup_host") => match query.as_str() {
                Some("db.example") => Ok(br#"{"ips":["10.0.0.7","fd00::7"]}"#.to_vec()),
                _ => Err("no such host".to_string()),
            },
            _ => Err(format!("unexpected {capability}")),
        }
    }

    fn context_objects(&self, _policy_id: &str) -> Result<Vec<KindObjects>, String> {
        Ok(vec![KindObjects {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            plural: "namespaces".into(),
            namespaced: false,
            objects: vec![
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "labelled", "labels": {"team": "a"}}}),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bare"}}),
            ],
        }])
    }
}

/// Each fixture compiled once for all tests (the Go one is 3 MB).
fn module(name: &str) -> Arc<PolicyModule> {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    static MODULES: Mutex<BTreeMap<String, Arc<PolicyModule>>> = Mutex::new(BTreeMap::new());
    let engine =
        ENGINE.get_or_init(|| PolicyEngine::new(&EngineOptions::default()).expect("engine"));
    let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
    modules
        .entry(name.to_string())
        .or_insert_with(|| {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(format!("{name}.wasm"));
            let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Arc::new(engine.load(&wasm).expect("loads"))
        })
        .clone()
}

fn evaluator(name: &str, settings: Value, granted: &[&str]) -> PolicyEvaluator {
    let module = module(name);
    let mut config = EvaluatorSettings::new(name);
    config.settings = Some(settings);
    config.host_capabilities = granted.iter().map(|g| g.to_string()).collect();
    config.host = Arc::new(FakeCluster);
    PolicyEvaluator::new(module, config)
}

fn pod_in(namespace: &str) -> Value {
    json!({
        "uid": "ctx-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "namespace": namespace,
        "operation": "CREATE",
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace}}
    })
}

#[test]
fn context_aware_policy_reads_the_namespace_through_the_host() {
    let policy = evaluator(
        "namespace-label",
        json!({"required_namespace_label": "team"}),
        &["kubernetes/get_resource"],
    );
    assert_eq!(
        policy.module().metadata().context_aware_resources.len(),
        1,
        "the module declares the resources it reads"
    );
    assert!(
        policy
            .validate(&pod_in("labelled"))
            .expect("evaluates")
            .allowed
    );
    let rejected = policy.validate(&pod_in("bare")).expect("evaluates");
    assert!(!rejected.allowed);
    assert_eq!(
        rejected.status.and_then(|s| s.message).as_deref(),
        Some("namespace bare lacks the label team")
    );
    let err = policy.validate(&pod_in("x")).expect_err("host error");
    assert!(err.to_string().contains("cannot read namespace x"), "{err}");
}

#[test]
fn capabilities_not_granted_are_refused_to_the_guest() {
    let policy = evaluator(
        "namespace-label",
        json!({"required_namespace_label": "team"}),
        &["oci/*"],
    );
    let err = policy.validate(&pod_in("labelled")).expect_err("refused");
    assert!(
        err.to_string().contains(
            "Policy has not been granted access to the 'kubernetes/get_resource' host capability"
        ),
        "{err}"
    );
}

#[test]
fn dns_lookup_policy_gets_the_addresses() {
    let policy = evaluator("dns-lookup", json!({"host": "db.example"}), &["net/*"]);
    let response = policy.validate(&pod_in("default")).expect("evaluates");
    assert!(response.allowed);
    assert_eq!(
        response.warnings,
        Some(vec!["db.example resolves to 10.0.0.7,fd00::7".to_string()])
    );
    let unknown = evaluator("dns-lookup", json!({"host": "nowhere.example"}), &["*"]);
    let response = unknown.validate(&pod_in("default")).expect("evaluates");
    assert!(!response.allowed);
    assert_eq!(
        response.status.and_then(|s| s.message).as_deref(),
        Some("cannot resolve nowhere.example: no such host")
    );
}

#[test]
fn context_aware_rego_policies_see_the_cluster_as_data() {
    for name in ["opa-namespace-label", "gatekeeper-namespace-label"] {
        let policy = evaluator(name, json!({"required_namespace_label": "team"}), &[]);
        for _ in 0..3 {
            // Reused instances reload the data every time.
            assert!(
                policy
                    .validate(&pod_in("labelled"))
                    .expect("evaluates")
                    .allowed,
                "{name}"
            );
            let rejected = policy.validate(&pod_in("bare")).expect("evaluates");
            assert!(!rejected.allowed, "{name}");
            assert_eq!(
                rejected.status.and_then(|s| s.message).as_deref(),
                Some("namespace bare lacks the label team"),
                "{name}"
            );
        }
    }
}

#[test]
fn wasi_policies_call_the_host_through_stdin() {
    let policy = evaluator("wasi-go", json!({"resolve_host": "db.example"}), &["net/*"]);
    let response = policy.validate(&pod_in("default")).expect("evaluates");
    assert!(response.allowed, "{response:?}");
    assert_eq!(
        response.warnings,
        Some(vec![
            "db.example resolves to [10.0.0.7 fd00::7]".to_string()
        ])
    );
    let unknown = evaluator(
        "wasi-go",
        json!({"resolve_host": "nowhere.example"}),
        &["net/*"],
    );
    let response = unknown.validate(&pod_in("default")).expect("evaluates");
    assert!(!response.allowed);
    assert_eq!(
        response.status.and_then(|s| s.message).as_deref(),
        Some("cannot resolve nowhere.example: no such host")
    );
    let refused = evaluator("wasi-go", json!({"resolve_host": "db.example"}), &[]);
    let response = refused.validate(&pod_in("default")).expect("evaluates");
    assert!(response.status.and_then(|s| s.message).is_some_and(|m| {
        m.contains("has not been granted access to the 'net/v1/dns_lookup_host'")
    }),);
}
