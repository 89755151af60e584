//! The test policies (real waPC guests built from `policies/`) give the right verdicts, and
//! hostile ones are stopped within their limits while the next evaluation still works.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use policy_evaluator::metadata::{ExecutionMode, Metadata, annotate};
use policy_evaluator::{
    EngineOptions, EvaluationError, EvaluationLimits, EvaluatorSettings, LoadError, PolicyEngine,
    PolicyEvaluator, PolicyModule,
};
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask policies`", path.display()))
}

fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PolicyEngine::new(&EngineOptions::default()).expect("engine"))
}

fn module(name: &str) -> Arc<PolicyModule> {
    Arc::new(
        engine()
            .load(&fixture(name))
            .unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

fn evaluator(name: &str, settings: Value) -> PolicyEvaluator {
    let mut config = EvaluatorSettings::new(name);
    config.settings = Some(settings);
    PolicyEvaluator::new(module(name), config)
}

fn pod_request(labels: Value) -> Value {
    json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "nginx",
        "namespace": "default",
        "operation": "CREATE",
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "nginx", "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}
        }
    })
}

#[test]
fn accept_all_accepts() {
    let policy = evaluator("accept-all", json!({}));
    let response = policy.validate(&pod_request(json!({}))).expect("evaluates");
    assert!(response.allowed);
    assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response.status, None);
    assert_eq!(policy.protocol_version().expect("version"), "v1");
    assert_eq!(
        policy.module().metadata().execution_mode,
        ExecutionMode::KubewardenWapc
    );
    assert!(policy.module().digest().starts_with("sha256:"));
}

#[test]
fn reject_by_label_uses_its_settings() {
    let policy = evaluator("reject-by-label", json!({"denied_labels": ["forbidden"]}));
    assert!(policy.validate_settings().expect("settings call").valid);
    let rejected = policy
        .validate(&pod_request(json!({"forbidden": "yes"})))
        .expect("evaluates");
    assert!(!rejected.allowed);
    let status = rejected.status.expect("status");
    assert_eq!(
        status.message.as_deref(),
        Some("label forbidden is not allowed")
    );
    assert_eq!(status.code, Some(403));
    let accepted = policy
        .validate(&pod_request(json!({"fine": "yes"})))
        .expect("evaluates");
    assert!(accepted.allowed);
}

#[test]
fn invalid_settings_are_reported() {
    let policy = evaluator("reject-by-label", json!({"denied_labels": "forbidden"}));
    let answer = policy.validate_settings().expect("settings call");
    assert!(!answer.valid);
    assert_eq!(
        answer.message.as_deref(),
        Some("denied_labels must be a list of strings")
    );
    // No settings at all means `{}` for the policy.
    let mut config = EvaluatorSettings::new("no-settings");
    config.settings = None;
    let policy = PolicyEvaluator::new(module("reject-by-label"), config);
    assert!(policy.validate_settings().expect("settings call").valid);
}

#[test]
fn mutation_becomes_a_patch() {
    let policy = evaluator("mutate-add-label", json!({}));
    let response = policy
        .validate(&pod_request(json!({"app": "web"})))
        .expect("evaluates");
    assert!(response.allowed);
    assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
    assert_eq!(
        response.decoded_patch(),
        Some(
            json!([{"op": "add", "path": "/metadata/labels/kubewarden.io~1mutated", "value": "true"}])
        )
    );
    // Already labelled: nothing to change.
    let unchanged = policy
        .validate(&pod_request(json!({"kubewarden.io/mutated": "true"})))
        .expect("evaluates");
    assert_eq!(unchanged.patch, None);
}

#[test]
fn raw_documents_are_patched_as_a_whole() {
    // The guest answers with the mutated `object`; for a raw policy that answer replaces the
    // whole document, so the patch turns the document into it.
    let policy = evaluator("mutate-add-label", json!({}));
    let document = json!({"uid": "raw-1", "object": {"metadata": {"name": "x"}}});
    let response = policy.validate_raw(&document).expect("evaluates");
    assert_eq!(response.uid, "raw-1");
    assert_eq!(
        response.decoded_patch(),
        Some(json!([
            {"op": "add", "path": "/metadata", "value": {"labels": {"kubewarden.io/mutated": "true"}, "name": "x"}},
            {"op": "remove", "path": "/object"},
            {"op": "remove", "path": "/uid"}
        ]))
    );
}

#[test]
fn requests_decoded_from_a_body_evaluate_as_values_do() {
    use policy_evaluator::admission::{Document, decode_request};
    // Pretty-printed, as a client may send it: the guest gets this text, not a re-serialization.
    let review = |request: &Value| {
        bytes::Bytes::from(
            serde_json::to_vec_pretty(&json!({"kind": "AdmissionReview", "request": request}))
                .expect("serializes"),
        )
    };
    let cases = [
        ("mutate-add-label", json!({}), json!({"app": "web"})),
        (
            "reject-by-label",
            json!({"denied_labels": ["app"]}),
            json!({"app": "web"}),
        ),
        (
            "reject-by-label",
            json!({"denied_labels": ["app"]}),
            json!({"tier": "db"}),
        ),
        (
            "opa-reject-by-label",
            json!({"denied_labels": ["app"]}),
            json!({"app": "web"}),
        ),
    ];
    for (name, settings, labels) in cases {
        let policy = evaluator(name, settings);
        let request = pod_request(labels);
        let decoded =
            decode_request(&review(&request), Document::AdmissionReview).expect("decodes");
        assert_eq!(
            policy.validate_request(&decoded).expect("evaluates"),
            policy.validate(&request).expect("evaluates"),
            "{name}"
        );
    }
    let policy = evaluator("mutate-add-label", json!({}));
    let document = json!({"uid": "raw-1", "object": {"metadata": {"name": "x"}}});
    let decoded = decode_request(&review(&document), Document::Raw).expect("decodes");
    assert_eq!(
        policy.validate_raw_request(&decoded).expect("evaluates"),
        policy.validate_raw(&document).expect("evaluates")
    );
}

fn hostile(behaviour: &str, limits: EvaluationLimits) -> PolicyEvaluator {
    let mut config = EvaluatorSettings::new(format!("hostile-{behaviour}"));
    config.settings = Some(json!({"behaviour": behaviour}));
    config.limits = limits;
    PolicyEvaluator::new(module("hostile"), config)
}

/// After a failure the same module still evaluates normally.
fn still_works() {
    let polite = hostile("none", EvaluationLimits::default());
    assert!(
        polite
            .validate(&pod_request(json!({})))
            .expect("evaluates")
            .allowed
    );
}

#[test]
fn endless_loop_is_interrupted() {
    let limits = EvaluationLimits {
        timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let err = hostile("loop", limits)
        .validate(&pod_request(json!({})))
        .expect_err("interrupted");
    assert!(
        matches!(err, EvaluationError::Timeout(limit) if limit == Duration::from_millis(300)),
        "{err}"
    );
    assert!(err.to_string().starts_with(
        "Policy execution interrupted because it exceeded the allowed execution time"
    ));
    still_works();
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let limits = EvaluationLimits {
        memory_bytes: 32 * 1024 * 1024,
        ..Default::default()
    };
    let err = hostile("allocate", limits)
        .validate(&pod_request(json!({})))
        .expect_err("stopped");
    assert!(
        matches!(err, EvaluationError::MemoryLimit { limit_bytes } if limit_bytes == 32 * 1024 * 1024),
        "{err}"
    );
    still_works();
}

#[test]
fn traps_stack_overflows_and_guest_errors_are_reported() {
    let request = pod_request(json!({}));
    let limits = EvaluationLimits::default();
    match hostile("trap", limits).validate(&request) {
        Err(EvaluationError::Trap(trap)) => {
            assert!(trap.to_string().contains("unreachable"), "{trap}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(matches!(
        hostile("recurse", limits).validate(&request),
        Err(EvaluationError::StackOverflow)
    ));
    assert!(matches!(
        hostile("guest-error", limits).validate(&request),
        Err(EvaluationError::Guest(message)) if message == "the policy failed on purpose"
    ));
    assert!(matches!(
        hostile("garbage", limits).validate(&request),
        Err(EvaluationError::InvalidAnswer {
            expected: "ValidationResponse",
            ..
        })
    ));
    still_works();
}

#[test]
fn requests_without_uid_are_refused() {
    let policy = evaluator("accept-all", json!({}));
    assert!(matches!(
        policy.validate(&json!({"object": {}})),
        Err(EvaluationError::InvalidRequest(_))
    ));
}

#[test]
fn evaluations_run_concurrently() {
    let policy = evaluator("reject-by-label", json!({"denied_labels": ["x"]}));
    std::thread::scope(|scope| {
        for i in 0..4 {
            let policy = &policy;
            scope.spawn(move || {
                for j in 0..10 {
                    let labels = if (i + j) % 2 == 0 {
                        json!({"x": "1"})
                    } else {
                        json!({})
                    };
                    let allowed = policy
                        .validate(&pod_request(labels))
                        .expect("evaluates")
                        .allowed;
                    assert_eq!(allowed, (i + j) % 2 == 1);
                }
            });
        }
    });
}

#[test]
fn instances_are_reused_after_success_and_dropped_after_failure() {
    let mut config = EvaluatorSettings::new("reject-by-label");
    config.settings = Some(json!({"denied_labels": ["x"]}));
    config.reused_instances = 2;
    let policy = PolicyEvaluator::new(module("reject-by-label"), config.clone());
    assert_eq!(policy.idle_memory_bytes(), 0);
    for i in 0..20 {
        let labels = if i % 2 == 0 {
            json!({"x": "1"})
        } else {
            json!({})
        };
        let allowed = policy
            .validate(&pod_request(labels))
            .expect("evaluates")
            .allowed;
        assert_eq!(allowed, i % 2 == 1, "evaluation {i} in a reused instance");
    }
    let kept = policy.idle_memory_bytes();
    assert!(kept > 0, "one instance is kept");
    assert!(
        kept <= 2 * policy_evaluator::MAX_REUSED_MEMORY_BYTES,
        "{kept}"
    );

    config.reused_instances = 0;
    let fresh = PolicyEvaluator::new(module("reject-by-label"), config);
    assert!(
        fresh
            .validate(&pod_request(json!({})))
            .expect("evaluates")
            .allowed
    );
    assert_eq!(
        fresh.idle_memory_bytes(),
        0,
        "nothing kept when reuse is off"
    );

    // A guest that fails gives its instance up; the evaluator keeps working.
    let failing = evaluator("hostile", json!({"behaviour": "guest-error"}));
    for _ in 0..3 {
        assert!(failing.validate(&pod_request(json!({}))).is_err());
        assert_eq!(failing.idle_memory_bytes(), 0);
    }
}

#[test]
fn modules_without_usable_metadata_are_refused() {
    let wasm = fixture("accept-all");
    let unversioned = annotate(&wasm, &Metadata::default()).expect("annotate");
    let err = engine().load(&unversioned).expect_err("refused");
    assert!(
        err.to_string()
            .contains("missing the waPC protocol version"),
        "{err}"
    );

    let opa = Metadata {
        execution_mode: ExecutionMode::Opa,
        ..Metadata::default()
    };
    let err = engine()
        .load(&annotate(&wasm, &opa).expect("annotate"))
        .expect_err("refused");
    assert!(matches!(&err, LoadError::NotOpaModule(_)), "{err}");

    let err = engine().load(b"\0asm\x01\0\0\0").expect_err("no metadata");
    assert!(
        err.to_string()
            .contains("has no io.kubewarden.metadata section"),
        "{err}"
    );

    let mut truncated = wasm.clone();
    truncated.truncate(wasm.len() / 2);
    assert!(engine().load(&truncated).is_err());
}

/// The serving engine (pooled instances) maps what a compiling engine wrote; a restart maps
/// it again without compiling; a damaged entry is compiled again and replaced.
#[test]
fn compiled_modules_are_cached_on_disk() {
    let dir = std::env::temp_dir().join(format!("kw-compile-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = EngineOptions {
        cache_dir: Some(dir.clone()),
        pooling: Some(policy_evaluator::PoolingOptions {
            max_instances: 4,
            max_memory_bytes: 64 * 1024 * 1024,
        }),
    };
    let wasm = fixture("reject-by-label");
    let load_and_evaluate = || {
        let module = PolicyEngine::new(&options)
            .expect("engine")
            .load(&wasm)
            .expect("load");
        let mut config = EvaluatorSettings::new("cached");
        config.settings = Some(json!({"denied_labels": ["forbidden"]}));
        let policy = PolicyEvaluator::new(Arc::new(module), config);
        let verdict = policy
            .validate(&pod_request(json!({"forbidden": "yes"})))
            .expect("evaluates");
        assert!(!verdict.allowed);
    };
    load_and_evaluate();
    let files = walk(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let entry = &files[0];
    assert!(
        entry.extension().is_some_and(|e| e == "cwasm"),
        "{}",
        entry.display()
    );
    let compiled = std::fs::read(entry).expect("entry");

    // A restart maps the entry as it is.
    load_and_evaluate();
    assert_eq!(std::fs::read(entry).expect("entry"), compiled);

    // A damaged entry is compiled again.
    std::fs::write(entry, b"not a compiled module").expect("damage");
    load_and_evaluate();
    assert_eq!(std::fs::read(entry).expect("entry"), compiled);
    assert_eq!(walk(&dir).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A cache directory that cannot be made (a file stands where it would go) leaves modules
/// compiled in memory: loading and evaluating still work.
#[test]
fn an_unusable_compile_cache_directory_compiles_in_memory() {
    let blocker = std::env::temp_dir().join(format!("kw-not-a-dir-{}", std::process::id()));
    std::fs::write(&blocker, "a file").expect("file");
    let options = EngineOptions {
        cache_dir: Some(blocker.join("compile-cache")),
        ..Default::default()
    };
    let module = PolicyEngine::new(&options)
        .expect("the engine starts without its cache")
        .load(&fixture("reject-by-label"))
        .expect("load");
    let mut config = EvaluatorSettings::new("uncached");
    config.settings = Some(json!({"denied_labels": ["forbidden"]}));
    let verdict = PolicyEvaluator::new(Arc::new(module), config)
        .validate(&pod_request(json!({"forbidden": "yes"})))
        .expect("evaluates");
    assert!(!verdict.allowed);
    let _ = std::fs::remove_file(&blocker);
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// The benchmarks' request: a Deployment's Pod with an init container, a sidecar, probes,
/// volumes and managed fields, as the API server sends it.
fn deployment_pod() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/requests/deployment-pod.json");
    let review: Value = serde_json::from_slice(&std::fs::read(&path).expect("request fixture"))
        .expect("request fixture is JSON");
    review["request"].clone()
}

/// Collects the messages and fields of the events emitted while it is the default subscriber.
#[derive(Default)]
struct Events(std::sync::Mutex<Vec<String>>);

/// Writes an event's fields as `name=value` pairs.
struct FieldWriter<'a>(&'a mut String);

impl tracing::field::Visit for FieldWriter<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!("{} ", event.metadata().level());
        event.record(&mut FieldWriter(&mut line));
        self.0.lock().expect("events").push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// A standard-Go waPC guest (a WASI reactor started by `_initialize`) decodes the whole review
/// into typed structs, and logs through the host's `tracing/log` on every request unless its
/// `log_level` is `off`.
#[test]
fn go_wapc_policy_rejects_privileged_containers_and_logs_through_the_host() {
    let policy = evaluator("go-wapc-pod-privileged", json!({}));
    assert_eq!(policy.protocol_version().expect("version"), "v1");
    assert!(policy.validate_settings().expect("settings call").valid);

    let events = Arc::new(Events::default());
    let request = deployment_pod();
    let accepted = tracing::subscriber::with_default(events.clone(), || {
        policy.validate(&request).expect("evaluates")
    });
    assert!(accepted.allowed, "{accepted:?}");
    let logged = events.0.lock().expect("events").join("\n");
    assert!(
        logged.contains("DEBUG") && logged.contains("validating pod object"),
        "{logged}"
    );
    assert!(
        logged.contains("9d1c7b5e-3f0a-4c71-9a55-2f4d1e0b8c61"),
        "{logged}"
    );

    let mut privileged_init = deployment_pod();
    privileged_init["object"]["spec"]["initContainers"][0]["securityContext"]["privileged"] =
        json!(true);
    let rejected = policy.validate(&privileged_init).expect("evaluates");
    assert!(!rejected.allowed);
    assert_eq!(
        rejected.status.and_then(|s| s.message).as_deref(),
        Some("Privileged container is not allowed: migrate")
    );
    let skipping = evaluator(
        "go-wapc-pod-privileged",
        json!({"skip_init_containers": true, "log_level": "off"}),
    );
    let events = Arc::new(Events::default());
    let accepted = tracing::subscriber::with_default(events.clone(), || {
        skipping.validate(&privileged_init).expect("evaluates")
    });
    assert!(accepted.allowed);
    let logged = events.0.lock().expect("events").join("\n");
    assert!(!logged.contains("validating pod object"), "{logged}");

    let invalid = evaluator("go-wapc-pod-privileged", json!({"log_level": "loud"}));
    let answer = invalid.validate_settings().expect("settings call");
    assert!(!answer.valid);
    assert_eq!(
        answer.message.as_deref(),
        Some(r#"log_level "loud" is not one of debug, info, warning, error, off"#)
    );
}

/// A Rust guest written like the common label policies: serde-derived structs and the regex
/// crate, its constraints compiled from the settings on each call.
#[test]
fn safe_labels_policy_checks_denied_mandatory_and_constrained_labels() {
    let settings = json!({
        "denied_labels": ["debug"],
        "mandatory_labels": ["owner", "cost-center"],
        "constrained_labels": {"cost-center": "^cc-[0-9]{4}$", "environment": "^(production|staging)$"}
    });
    let policy = evaluator("safe-labels", settings.clone());
    assert!(policy.validate_settings().expect("settings call").valid);
    assert!(
        policy
            .validate(&deployment_pod())
            .expect("evaluates")
            .allowed
    );

    let mut request = deployment_pod();
    let labels = &mut request["object"]["metadata"]["labels"];
    labels["debug"] = json!("true");
    labels["environment"] = json!("qa");
    labels.as_object_mut().expect("labels").remove("owner");
    let rejected = policy.validate(&request).expect("evaluates");
    assert!(!rejected.allowed);
    assert_eq!(
        rejected.status.and_then(|s| s.message).as_deref(),
        Some(
            "The following labels are denied: debug; The following mandatory labels are missing: owner; The following labels are violating user constraints: environment"
        )
    );

    let invalid = evaluator(
        "safe-labels",
        json!({"denied_labels": ["owner"], "mandatory_labels": ["owner"], "constrained_labels": {"team": "("}}),
    );
    let answer = invalid.validate_settings().expect("settings call");
    assert!(!answer.valid);
    let message = answer.message.unwrap_or_default();
    assert!(
        message.starts_with("label owner is both denied and mandatory; constrained label team: invalid regular expression"),
        "{message}"
    );
}
