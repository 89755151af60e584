//! WASI-mode policies: a Go `GOOS=wasip1` command built from `policies/wasi-go`, and
//! JavaScript run by QuickJS (`policies/js-quickjs`, the shape of a Javy policy), run with
//! argv, stdin and stdout as upstream's policy-server runs them.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use policy_evaluator::metadata::ExecutionMode;
use policy_evaluator::{
    EngineOptions, EvaluationError, EvaluatorSettings, PolicyEngine, PolicyEvaluator, PolicyModule,
};
use serde_json::{Value, json};

/// The Go module is large (3 MB); compile it once for all tests.
fn module() -> Arc<PolicyModule> {
    static MODULE: OnceLock<Arc<PolicyModule>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let path =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wasi-go.wasm");
            let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let engine = PolicyEngine::new(&EngineOptions::default()).expect("engine");
            Arc::new(engine.load(&wasm).expect("loads"))
        })
        .clone()
}

fn evaluator(settings: Value) -> PolicyEvaluator {
    let module = module();
    assert_eq!(module.metadata().execution_mode, ExecutionMode::Wasi);
    let mut config = EvaluatorSettings::new("wasi-go");
    config.settings = Some(settings);
    PolicyEvaluator::new(module, config)
}

fn request(labels: Value) -> Value {
    json!({
        "uid": "wasi-1",
        "operation": "CREATE",
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels}}
    })
}

#[test]
fn go_wasi_policy_gives_verdicts() {
    let policy = evaluator(json!({"denied_labels": ["forbidden"]}));
    assert!(policy.validate_settings().expect("settings").valid);
    let rejected = policy
        .validate(&request(json!({"forbidden": "1"})))
        .expect("evaluates");
    assert!(!rejected.allowed);
    let status = rejected.status.expect("status");
    assert_eq!(
        status.message.as_deref(),
        Some("label forbidden is not allowed")
    );
    assert_eq!(status.code, Some(403));
    let accepted = policy
        .validate(&request(json!({"other": "1"})))
        .expect("evaluates");
    assert!(accepted.allowed);
    assert_eq!(accepted.uid, "wasi-1");
}

#[test]
fn go_wasi_policy_checks_its_settings() {
    let answer = evaluator(json!({"denied_labels": "not-a-list"}))
        .validate_settings()
        .expect("settings");
    assert!(!answer.valid);
    assert_eq!(
        answer.message.as_deref(),
        Some("denied_labels must be a list of strings")
    );
}

#[test]
fn wasi_policies_have_no_wapc_operations() {
    let err = evaluator(json!({}))
        .protocol_version()
        .expect_err("not waPC");
    assert!(matches!(err, EvaluationError::InvalidRequest(_)), "{err}");
}

/// JavaScript on QuickJS compiled to a WASI command: the script gets stdin's text and answers
/// the verdict's JSON text; a script that throws is an evaluation error.
#[test]
fn javascript_policy_on_quickjs_gives_verdicts() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let wasm = std::fs::read(fixtures.join("js-quickjs.wasm")).expect("fixture");
    let engine = PolicyEngine::new(&EngineOptions::default()).expect("engine");
    let module = Arc::new(engine.load(&wasm).expect("loads"));
    assert_eq!(module.metadata().execution_mode, ExecutionMode::Wasi);
    let policy = |settings: Value| {
        let mut config = EvaluatorSettings::new("js-quickjs");
        config.settings = Some(settings);
        PolicyEvaluator::new(module.clone(), config)
    };
    let review: Value = serde_json::from_slice(
        &std::fs::read(fixtures.join("requests/deployment-pod.json")).expect("request fixture"),
    )
    .expect("request fixture is JSON");
    let pinned = policy(json!({"allowedRegistries": ["registry.example.com/"]}));
    assert!(pinned.validate_settings().expect("settings").valid);
    assert!(
        pinned
            .validate(&review["request"])
            .expect("evaluates")
            .allowed
    );

    let mut latest = review["request"].clone();
    latest["object"]["spec"]["containers"][1]["image"] = json!("docker.io/library/busybox:latest");
    let rejected = pinned.validate(&latest).expect("evaluates");
    assert!(!rejected.allowed);
    assert_eq!(
        rejected.status.and_then(|s| s.message).as_deref(),
        Some("image docker.io/library/busybox:latest has no pinned tag")
    );
    latest["object"]["spec"]["containers"][1]["image"] = json!("docker.io/library/busybox:1.37");
    let rejected = pinned.validate(&latest).expect("evaluates");
    assert_eq!(
        rejected.status.and_then(|s| s.message).as_deref(),
        Some(
            "image docker.io/library/busybox:1.37 is not from an allowed registry (registry.example.com/)"
        )
    );

    let invalid = policy(json!({"allowedRegistries": "registry.example.com/"}));
    let answer = invalid.validate_settings().expect("settings");
    assert!(!answer.valid);
    assert_eq!(
        answer.message.as_deref(),
        Some("allowedRegistries must be a list of strings")
    );
    // The script throws on a request that is not JSON-shaped as it expects.
    assert!(invalid.validate(&review["request"]).is_err());
}
