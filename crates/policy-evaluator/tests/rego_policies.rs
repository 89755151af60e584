//! Rego policies compiled by `opa build -t wasm` (from `policies/opa-reject-by-label` and
//! `policies/gatekeeper-reject-by-label`) give the right verdicts in the `opa` and
//! `gatekeeper` modes, with the `sprintf` built-in served by the host, and are stopped within
//! their limits while the next evaluation still works.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use policy_evaluator::metadata::ExecutionMode;
use policy_evaluator::{
    EngineOptions, EvaluationError, EvaluationLimits, EvaluatorSettings, PolicyEngine,
    PolicyEvaluator, PolicyModule,
};
use serde_json::{Value, json};

fn module(name: &str) -> Arc<PolicyModule> {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    let engine =
        ENGINE.get_or_init(|| PolicyEngine::new(&EngineOptions::default()).expect("engine"));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.wasm"));
    let wasm = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask policies`", path.display()));
    Arc::new(engine.load(&wasm).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn evaluator(name: &str, settings: Value, limits: EvaluationLimits) -> PolicyEvaluator {
    let mut config = EvaluatorSettings::new(name);
    config.settings = Some(settings);
    config.limits = limits;
    PolicyEvaluator::new(module(name), config)
}

fn pod_request(labels: Value) -> Value {
    json!({
        "uid": "b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "nginx",
        "namespace": "default",
        "operation": "CREATE",
        "userInfo": {"username": "alice"},
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "nginx", "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}
        }
    })
}

fn message(response: &policy_evaluator::response::AdmissionResponse) -> Option<&str> {
    response.status.as_ref()?.message.as_deref()
}

#[test]
fn opa_policy_rejects_denied_labels_and_accepts_the_rest() {
    let policy = evaluator(
        "opa-reject-by-label",
        json!({"denied_labels": ["team", "owner"]}),
        EvaluationLimits::default(),
    );
    assert_eq!(
        policy.module().metadata().execution_mode,
        ExecutionMode::Opa
    );
    assert!(policy.validate_settings().expect("settings").valid);

    let rejected = policy
        .validate(&pod_request(json!({"team": "a", "owner": "b", "app": "x"})))
        .expect("evaluates");
    assert!(!rejected.allowed);
    assert_eq!(rejected.uid, "b7cc-42010a800002");
    assert_eq!(
        message(&rejected),
        Some("label owner is not allowed, label team is not allowed")
    );

    let accepted = policy
        .validate(&pod_request(json!({"app": "x"})))
        .expect("evaluates");
    assert!(accepted.allowed);
    assert_eq!(accepted.status, None);
}

#[test]
fn rego_instances_are_reused_with_a_clean_heap() {
    for name in ["opa-reject-by-label", "gatekeeper-reject-by-label"] {
        let mut config = EvaluatorSettings::new(name);
        config.settings = Some(json!({"denied_labels": ["team"]}));
        config.reused_instances = 1;
        let policy = PolicyEvaluator::new(module(name), config);
        for i in 0..50 {
            let labels = if i % 2 == 0 {
                json!({"team": "a"})
            } else {
                json!({"app": "b"})
            };
            let response = policy.validate(&pod_request(labels)).expect("evaluates");
            assert_eq!(response.allowed, i % 2 == 1, "{name}, evaluation {i}");
        }
        assert!(
            policy.idle_memory_bytes() > 0,
            "{name}: the instance is kept"
        );
    }
}

#[test]
fn opa_policy_evaluates_raw_documents() {
    let policy = evaluator(
        "opa-reject-by-label",
        json!({"denied_labels": ["team"]}),
        EvaluationLimits::default(),
    );
    let document = json!({"uid": "raw-1", "object": {"metadata": {"labels": {"team": "a"}}}});
    let response = policy.validate_raw(&document).expect("evaluates");
    assert!(!response.allowed);
    assert_eq!(response.uid, "raw-1");
    assert_eq!(message(&response), Some("label team is not allowed"));
}

#[test]
fn gatekeeper_policy_maps_violations() {
    let policy = evaluator(
        "gatekeeper-reject-by-label",
        json!({"denied_labels": ["team", "owner"]}),
        EvaluationLimits::default(),
    );
    assert_eq!(
        policy.module().metadata().execution_mode,
        ExecutionMode::Gatekeeper
    );
    assert!(policy.validate_settings().expect("settings").valid);
    let rejected = policy
        .validate(&pod_request(json!({"team": "a", "owner": "b"})))
        .expect("evaluates");
    assert!(!rejected.allowed);
    assert_eq!(
        message(&rejected),
        Some("label owner is not allowed, label team is not allowed")
    );
    assert!(
        policy
            .validate(&pod_request(json!({"app": "x"})))
            .expect("evaluates")
            .allowed
    );
    // No parameters at all: nothing is denied.
    let unconfigured = evaluator(
        "gatekeeper-reject-by-label",
        Value::Null,
        EvaluationLimits::default(),
    );
    assert!(
        unconfigured
            .validate(&pod_request(json!({"team": "a"})))
            .expect("evaluates")
            .allowed
    );
    let err = policy
        .validate_raw(&json!({"object": {}}))
        .expect_err("raw requests are refused");
    assert!(matches!(err, EvaluationError::InvalidRequest(_)), "{err}");
}

#[test]
fn rego_policy_that_spins_is_stopped_and_the_next_evaluation_succeeds() {
    let limits = EvaluationLimits {
        timeout: Some(Duration::from_millis(300)),
        ..EvaluationLimits::default()
    };
    let spinning = evaluator("opa-reject-by-label", json!({"behaviour": "spin"}), limits);
    let err = spinning
        .validate(&pod_request(json!({})))
        .expect_err("stopped");
    assert!(
        matches!(err, EvaluationError::Timeout(limit) if limit == Duration::from_millis(300)),
        "{err}"
    );

    let healthy = evaluator(
        "opa-reject-by-label",
        json!({"denied_labels": ["x"]}),
        limits,
    );
    assert!(
        healthy
            .validate(&pod_request(json!({})))
            .expect("evaluates")
            .allowed
    );
}

#[test]
fn rego_policy_that_allocates_hits_the_memory_limit() {
    let limits = EvaluationLimits {
        memory_bytes: 64 * 1024 * 1024,
        ..EvaluationLimits::default()
    };
    let hungry = evaluator(
        "opa-reject-by-label",
        json!({"behaviour": "allocate"}),
        limits,
    );
    let err = hungry
        .validate(&pod_request(json!({})))
        .expect_err("stopped");
    assert_eq!(
        hungry.idle_memory_bytes(),
        0,
        "a failed instance is not kept"
    );
    assert!(
        matches!(err, EvaluationError::MemoryLimit { limit_bytes } if limit_bytes == 64 * 1024 * 1024),
        "{err}"
    );
    assert!(
        hungry.validate(&pod_request(json!({}))).is_err(),
        "the same evaluator fails the same way again, without poisoning anything"
    );
    let healthy = evaluator("opa-reject-by-label", json!({}), limits);
    assert!(
        healthy
            .validate(&pod_request(json!({"team": "a"})))
            .expect("evaluates")
            .allowed
    );
}

/// The required-labels ConstraintTemplate's Rego, built with its `violation` rule as the
/// entrypoint: a list of violations, read as Gatekeeper reads it.
#[test]
fn gatekeeper_template_with_the_violation_entrypoint_enforces() {
    let policy = evaluator(
        "gatekeeper-required-labels",
        json!({"labels": [{"key": "owner"}, {"key": "team", "allowedRegex": "^[a-z]+$"}]}),
        EvaluationLimits::default(),
    );
    policy.check_result_shape();
    assert_eq!(policy.result_not_understood(), None);

    let missing = policy
        .validate(&pod_request(json!({"team": "a"})))
        .expect("evaluates");
    assert!(!missing.allowed);
    assert_eq!(
        message(&missing),
        Some(r#"you must provide labels: ["owner"]"#)
    );
    let wrong = policy
        .validate(&pod_request(json!({"owner": "o", "team": "A1"})))
        .expect("evaluates");
    assert!(!wrong.allowed);
    assert_eq!(
        message(&wrong),
        Some("label <team: A1> does not satisfy allowed regex: ^[a-z]+$")
    );
    let fine = policy
        .validate(&pod_request(json!({"owner": "o", "team": "a"})))
        .expect("evaluates");
    assert!(fine.allowed);
    assert_eq!(policy.result_not_understood(), None);
}

/// The same Rego built with the package as the entrypoint answers the package's document, an
/// object holding the violations. Upstream Kubewarden reads that as "no violations" and admits;
/// so does this evaluator (a cluster moving here keeps its verdicts), and it says what the
/// result was, already after the load-time check.
#[test]
fn gatekeeper_template_with_the_package_entrypoint_admits_as_upstream_and_says_why() {
    let policy = evaluator(
        "gatekeeper-required-labels-package",
        json!({"labels": [{"key": "owner"}]}),
        EvaluationLimits::default(),
    );
    assert_eq!(policy.result_not_understood(), None);
    policy.check_result_shape();
    let shape = policy
        .result_not_understood()
        .expect("the load-time check finds the object")
        .to_string();
    assert!(
        shape.starts_with("an object with the members [violation] instead of a list of violations"),
        "{shape}"
    );
    assert!(
        shape.contains("the module's entrypoint is probably the Rego package"),
        "{shape}"
    );

    let missing = policy
        .validate(&pod_request(json!({"team": "a"})))
        .expect("evaluates without error");
    assert!(missing.allowed, "admitted, as upstream admits it");
    assert_eq!(message(&missing), None);
}

/// A ConstraintTemplate with several rules over every container of a realistic Pod (the
/// benchmarks' request): one violation per broken rule, joined into the message.
#[test]
fn gatekeeper_pod_security_baseline_reports_each_broken_rule() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/requests/deployment-pod.json");
    let review: Value = serde_json::from_slice(&std::fs::read(&path).expect("request fixture"))
        .expect("request fixture is JSON");
    let policy = evaluator(
        "gatekeeper-pod-security",
        json!({"repos": ["registry.example.com/"]}),
        EvaluationLimits::default(),
    );
    assert!(
        policy
            .validate(&review["request"])
            .expect("evaluates")
            .allowed
    );

    let mut request = review["request"].clone();
    let spec = &mut request["object"]["spec"];
    spec["hostNetwork"] = json!(true);
    spec["containers"][1]["image"] = json!("docker.io/library/busybox");
    spec["containers"][1]["securityContext"]["privileged"] = json!(true);
    spec["initContainers"][0]["resources"] = json!({});
    let rejected = policy.validate(&request).expect("evaluates");
    assert!(!rejected.allowed);
    let text = message(&rejected).unwrap_or_default();
    for expected in [
        "Sharing the host namespace is not allowed: hostNetwork",
        "container <log-shipper> has an invalid image repo <docker.io/library/busybox>",
        "Privileged container is not allowed: log-shipper",
        "container <migrate> has no cpu limit",
        "container <migrate> has no memory limit",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
}
