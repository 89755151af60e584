//! Evaluation latency of each test policy in a fresh instance (on-demand allocation and
//! wasmtime's pooling allocator) and in a reused one, module compile time, and the linear
//! memory one instance keeps. `cargo bench -p policy-evaluator`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use policy_evaluator::{
    EngineOptions, EvaluationLimits, EvaluatorSettings, PolicyEngine, PolicyEvaluator,
    PoolingOptions,
};
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn request() -> Value {
    json!({
        "uid": "bench",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "object": {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "nginx", "labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}
    })
}

fn evaluator(
    engine: &PolicyEngine,
    name: &str,
    settings: Value,
    reused_instances: usize,
) -> PolicyEvaluator {
    let module = Arc::new(engine.load(&fixture(name)).expect("load"));
    let mut config = EvaluatorSettings::new(name);
    config.settings = Some(settings);
    config.limits = EvaluationLimits::default();
    config.reused_instances = reused_instances;
    PolicyEvaluator::new(module, config)
}

fn policies(c: &mut Criterion) {
    let on_demand = PolicyEngine::new(&EngineOptions::default()).expect("engine");
    let pooled = PolicyEngine::new(&EngineOptions {
        pooling: Some(PoolingOptions {
            max_instances: 64,
            max_memory_bytes: EvaluationLimits::default().memory_bytes,
        }),
        ..Default::default()
    })
    .expect("pooled engine");
    let request = request();
    let cases = [
        ("accept-all", json!({})),
        ("reject-by-label", json!({"denied_labels": ["app"]})),
        ("mutate-add-label", json!({})),
        ("opa-reject-by-label", json!({"denied_labels": ["app"]})),
        (
            "gatekeeper-reject-by-label",
            json!({"denied_labels": ["app"]}),
        ),
        // A WASI command runs from its start every time: "reused" measures the same as fresh.
        ("wasi-go", json!({"denied_labels": ["app"]})),
    ];
    let mut group = c.benchmark_group("validate");
    let mut footprints = Vec::new();
    for (name, settings) in &cases {
        for (strategy, engine, reused) in [
            ("fresh-on-demand", &on_demand, 0),
            ("fresh-pooling", &pooled, 0),
            ("reused", &on_demand, 1),
        ] {
            let policy = evaluator(engine, name, settings.clone(), reused);
            group.bench_function(format!("{name}/{strategy}"), |b| {
                b.iter(|| black_box(policy.validate(black_box(&request)).expect("evaluates")))
            });
            if reused > 0 {
                footprints.push((name, policy.idle_memory_bytes()));
            }
        }
    }
    group.finish();
    println!("linear memory of one instance after its evaluations:");
    for (name, bytes) in footprints {
        let note = if bytes == 0 {
            " (not run: filtered out)"
        } else {
            ""
        };
        println!("  {name}: {} KiB{note}", bytes / 1024);
    }

    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    let wasm = fixture("reject-by-label");
    group.bench_function("reject-by-label/no-cache", |b| {
        b.iter(|| black_box(on_demand.load(&wasm).expect("load")))
    });
    group.finish();
}

criterion_group!(benches, policies);
criterion_main!(benches);
