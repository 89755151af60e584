//! `cargo xtask demo`: the stack on the local control plane — the controller and a
//! policy-server (local processes standing in for the kwok pods), a PolicyServer, a demo
//! ClusterAdmissionPolicy — then one pod the policy rejects and one it admits, through the real
//! apiserver. Cleans up after itself.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use api_types::crd::{ClusterAdmissionPolicy, PolicyServer};
use e2e::{LocalPolicyServers, NAMESPACE, Processes, fixture_module, start_controller};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use test_cluster::wait_until;

const DEMO_NAMESPACE: &str = "demo";
const POLICY: &str = "demo-forbidden-label";
const WAIT: Duration = Duration::from_secs(120);

async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_none() {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}}))?,
        )
        .await?;
    }
    Ok(())
}

fn pod(name: &str, labels: serde_json::Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    }))?)
}

async fn demo(client: &Client) -> Result<()> {
    let servers: Api<PolicyServer> = Api::all(client.clone());
    let policies: Api<ClusterAdmissionPolicy> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), DEMO_NAMESPACE);

    println!("==> PolicyServer default");
    let ps: PolicyServer = serde_json::from_value(json!({
        "apiVersion": "policies.kubewarden.io/v1", "kind": "PolicyServer",
        "metadata": {"name": "default"},
        "spec": {"image": "ghcr.io/kubewarden-rs/policy-server:demo", "replicas": 1}
    }))?;
    if servers.get_opt("default").await?.is_none() {
        servers.create(&PostParams::default(), &ps).await?;
    }
    println!(
        "==> ClusterAdmissionPolicy {POLICY}: pods labelled demo/forbidden are refused in namespace {DEMO_NAMESPACE}"
    );
    let policy: ClusterAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "module": fixture_module("reject-by-label"),
            "settings": {"denied_labels": ["demo/forbidden"]},
            "mutating": false,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": DEMO_NAMESPACE}},
        }
    }))?;
    policies.create(&PostParams::default(), &policy).await?;
    wait_until("the policy is active", WAIT, || async {
        let p = policies.get(POLICY).await?;
        Ok(serde_json::to_value(p.status)?["policyStatus"] == "active")
    })
    .await?;
    println!("    status: active (webhook registered, policy-server serving it)");

    let mut attempt = 0;
    let refusal = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    wait_until("the policy-server to answer", WAIT, || {
        attempt += 1;
        let pods = pods.clone();
        let refusal = refusal.clone();
        async move {
            let pod = pod(
                &format!("forbidden-{attempt}"),
                json!({"demo/forbidden": "yes"}),
            )?;
            match pods.create(&PostParams::default(), &pod).await {
                Err(kube::Error::Api(status)) if status.message.contains("is not allowed") => {
                    if let Ok(mut slot) = refusal.lock() {
                        *slot = status.message;
                    }
                    Ok(true)
                }
                Ok(_) => bail!("the labelled pod was admitted"),
                Err(_) => Ok(false),
            }
        }
    })
    .await?;
    println!(
        "\n$ kubectl -n {DEMO_NAMESPACE} run forbidden --image=nginx:1.27 --labels=demo/forbidden=yes"
    );
    let refusal = refusal.lock().map(|r| r.clone()).unwrap_or_default();
    println!("REJECTED: {refusal}");
    let admitted = pods
        .create(
            &PostParams::default(),
            &pod("allowed", json!({"app": "web"}))?,
        )
        .await?;
    println!("\n--> create pod {DEMO_NAMESPACE}/allowed labelled app=web");
    println!(
        "ACCEPTED: pod {}/{} created\n",
        DEMO_NAMESPACE,
        admitted.metadata.name.unwrap_or_default()
    );
    Ok(())
}

async fn cleanup(client: &Client) {
    let policies: Api<ClusterAdmissionPolicy> = Api::all(client.clone());
    let servers: Api<PolicyServer> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = policies.delete(POLICY, &DeleteParams::default()).await;
    let _ = servers.delete("default", &DeleteParams::default()).await;
    let _ = namespaces
        .delete(DEMO_NAMESPACE, &DeleteParams::default())
        .await;
    let _ =
        wait_until("demo objects removed", WAIT, || async {
            Ok(policies.get_opt(POLICY).await?.is_none()
                && servers.get_opt("default").await?.is_none())
        })
        .await;
}

fn main() -> std::process::ExitCode {
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line, causes joined by `: `; the backtrace only when RUST_BACKTRACE asks.
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                eprintln!("error: {err:?}");
            } else {
                eprintln!("error: {err:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default()
        .await
        .context("connecting to the local cluster")?;
    test_cluster::apply_crds(&client).await?;
    ensure_namespace(&client, NAMESPACE).await?;
    ensure_namespace(&client, DEMO_NAMESPACE).await?;
    let logs = e2e::log_dir();
    let mut processes = Processes::default();
    processes.push(start_controller(&logs, true)?);
    let runner = LocalPolicyServers::new(client.clone(), logs.clone())?.spawn();
    println!(
        "==> controller and policy-server running (logs in {})",
        logs.display()
    );
    let result = demo(&client).await;
    println!("==> cleaning up");
    cleanup(&client).await;
    runner.abort();
    drop(processes);
    result
}
