//! `cargo xtask bench context`: context-aware policies against N ConfigMaps held in the
//! policy-server's watch cache, on the local control plane. Prints end-to-end latency of
//! `get_resource` and of a label-selected `list_resources_by_namespace` (one connection:
//! p50/p99/p99.9) next to the same server's no-op endpoint, and the server's memory with and
//! without the cache; writes target/bench/context-aware.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::bench::{prepare_load_dir, wrk};
use crate::bench_audit::{create_config_maps, kubectl, recreate_namespace, rerun_in_cluster};
use crate::local_server::{LocalPolicyServer, build};

const NAMESPACE: &str = "bench-context";

pub fn run(root: &Path, resources: u32, seconds: u32) -> Result<()> {
    if std::env::var_os("KUBEWARDEN_CLUSTER_NETNS").is_some() {
        return run_inside(root, resources, seconds);
    }
    rerun_in_cluster(&[
        "bench",
        "context",
        "--resources",
        &resources.to_string(),
        "--seconds",
        &seconds.to_string(),
    ])
}

fn host_call(fixtures: &Path, operation: &str, payload: serde_json::Value) -> serde_json::Value {
    json!({
        "module": format!("file://{}", fixtures.join("host-call.wasm").display()),
        "contextAwareResources": [{"apiVersion": "v1", "kind": "ConfigMap"}],
        "hostCapabilities": ["kubernetes/*"],
        "settings": {"namespace": "kubernetes", "operation": operation, "payload": payload},
    })
}

fn run_inside(root: &Path, resources: u32, seconds: u32) -> Result<()> {
    let binary = build(true)?;
    let dir = crate::cargo::output_dir("bench")?.join("context");
    prepare_load_dir(&dir)?;
    recreate_namespace(NAMESPACE)?;
    create_config_maps(NAMESPACE, resources)?;

    let fixtures = root.join("crates/policy-evaluator/tests/fixtures");
    let baseline_policies = dir.join("baseline.yml");
    std::fs::write(
        &baseline_policies,
        json!({"accept-all": {"module": format!("file://{}", fixtures.join("accept-all.wasm").display())}})
            .to_string(),
    )?;
    let policies = dir.join("policies.yml");
    std::fs::write(
        &policies,
        json!({
            "get-configmap": host_call(&fixtures, "get_resource", json!({
                "api_version": "v1", "kind": "ConfigMap", "namespace": NAMESPACE,
                "name": format!("cm-{}", resources / 2), "disable_cache": false})),
            "list-bucket": host_call(&fixtures, "list_resources_by_namespace", json!({
                "api_version": "v1", "kind": "ConfigMap", "namespace": NAMESPACE,
                "label_selector": "bucket=7", "field_masks": ["metadata.name"]})),
        })
        .to_string(),
    )?;

    let baseline = LocalPolicyServer::start(&binary, &dir, &baseline_policies, &[])?;
    let (_, baseline_rss) = baseline.memory_kib();
    drop(baseline);

    let server = LocalPolicyServer::start(
        &binary,
        &dir,
        &policies,
        &["--enable-noop-endpoint", "--workers", "2"],
    )?;
    let startup = server.startup;
    let (_, cached_rss) = server.memory_kib();
    println!("==> load: wrk, HTTPS keep-alive, 1 connection, {seconds} s per run");
    let mut table = String::from(
        "| endpoint | req/s | p50 µs | p99 µs | p99.9 µs | errors |\n|---|---|---|---|---|---|\n",
    );
    for path in ["/noop", "/validate/get-configmap", "/validate/list-bucket"] {
        let r = wrk(&dir, server.port, path, 1, seconds)?;
        writeln!(
            table,
            "| `{}` | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            r.endpoint, r.requests_per_second, r.p50_us, r.p99_us, r.p999_us, r.errors
        )?;
    }
    let (peak, after_rss) = server.memory_kib();
    drop(server);
    let _ = kubectl(
        &[
            "delete",
            "namespace",
            NAMESPACE,
            "--ignore-not-found",
            "--wait=false",
        ],
        None,
    );

    let report = format!(
        "{table}\n- {resources} ConfigMaps in the cache; start-up (caches filled) {:.2} s\n- policy-server resident memory: {} MiB without context-aware policies, {} MiB with the cache, {} MiB after the runs ({} MiB peak)\n",
        startup.as_secs_f64(),
        baseline_rss / 1024,
        cached_rss / 1024,
        after_rss / 1024,
        peak / 1024
    );
    println!("\n{report}");
    std::fs::write(
        crate::cargo::output_dir("bench")?.join("context-aware.md"),
        &report,
    )?;
    Ok(())
}
