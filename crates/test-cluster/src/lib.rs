//! Connects integration tests to the local Kubernetes control plane (`cargo xtask cluster up`).
//!
//! A test calls [`TestCluster::connect`]; it gets `None` (and the test returns early, printing
//! why) when no cluster is configured, unless `KUBEWARDEN_REQUIRE_CLUSTER` is set, as CI does,
//! in which case a missing cluster fails the test. Each test gets its own namespace and the
//! CRDs from `crds/` are applied (server-side, idempotent) before it runs.
//!
//! Tests that need the cluster live in test targets named `cluster_*`, so that
//! `cargo test --test 'cluster_*'` selects exactly them; `cargo xtask test` runs them inside the
//! cluster's network namespace.

mod certs;
pub mod cosign;
pub mod helm;
pub mod otel_collector;
pub mod registry;
mod wait;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub use certs::WebhookCertificates;
pub use wait::wait_until;

/// Environment variable naming the kubeconfig of the test cluster.
pub const KUBECONFIG_ENV: &str = "KUBEWARDEN_TEST_KUBECONFIG";
/// When set, a missing cluster fails the test instead of skipping it.
pub const REQUIRE_ENV: &str = "KUBEWARDEN_REQUIRE_CLUSTER";
/// Field manager of everything tests apply.
pub const FIELD_MANAGER: &str = "kubewarden-rs-tests";
/// Environment variable naming the xtask binary that runs the cluster (set by
/// `cargo xtask test`), for tests that restart a control-plane component.
pub const XTASK_ENV: &str = "KUBEWARDEN_XTASK";

/// Kills kube-apiserver, leaves it down for `down`, and starts it again (through
/// `cargo xtask cluster restart-apiserver`). Every client of the cluster sees the outage: only
/// cluster tests that run alone in their test binary may call it.
pub async fn restart_apiserver(down: Duration) -> Result<()> {
    let xtask = std::env::var_os(XTASK_ENV)
        .with_context(|| format!("{XTASK_ENV} is not set; run through `cargo xtask test`"))?;
    let status = tokio::process::Command::new(xtask)
        .args(["cluster", "restart-apiserver", "--down-seconds"])
        .arg(down.as_secs().to_string())
        .status()
        .await
        .context("running xtask cluster restart-apiserver")?;
    anyhow::ensure!(
        status.success(),
        "restarting the apiserver failed ({status})"
    );
    Ok(())
}

/// A connection to the test cluster with a namespace of the test's own.
#[derive(Clone)]
pub struct TestCluster {
    pub client: Client,
    pub namespace: String,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// A name unique to this process and call, usable for Kubernetes objects (`<prefix>-<suffix>`).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{:x}{:x}{n}",
        std::process::id() % 4096,
        nanos % 65536
    )
}

/// The repository root, where `crds/` lives.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl TestCluster {
    /// Connects to the cluster and creates a namespace named after the test, or returns `None`
    /// when no cluster is configured and none is required.
    pub async fn connect(test: &str) -> Option<TestCluster> {
        let Some(kubeconfig) = std::env::var_os(KUBECONFIG_ENV) else {
            if std::env::var_os(REQUIRE_ENV).is_some() {
                panic!(
                    "{test}: {REQUIRE_ENV} is set but {KUBECONFIG_ENV} is not; run through `cargo xtask test`"
                );
            }
            eprintln!(
                "skipped {test}: no test cluster ({KUBECONFIG_ENV} unset; `cargo xtask test` starts one)"
            );
            return None;
        };
        match Self::try_connect(test, PathBuf::from(kubeconfig)).await {
            Ok(cluster) => Some(cluster),
            Err(err) => panic!("{test}: cannot use the test cluster: {err:#}"),
        }
    }

    async fn try_connect(test: &str, kubeconfig: PathBuf) -> Result<TestCluster> {
        let kubeconfig = Kubeconfig::read_from(&kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        // kube uses rustls' process default, which rustls cannot pick by itself when the
        // workspace's features give it two providers.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::try_from(config)?;
        apply_crds(&client).await?;
        let namespace = unique_name(&test.replace('_', "-").chars().take(40).collect::<String>());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": namespace, "labels": {"kubewarden-rs/test": "true"}}
        }))?;
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .context("creating the test namespace")?;
        // Pods cannot be created before the controller-manager gives the namespace its
        // default service account.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        wait_until(
            "default service account",
            Duration::from_secs(30),
            || async { Ok(accounts.get_opt("default").await?.is_some()) },
        )
        .await?;
        Ok(TestCluster { client, namespace })
    }

    /// Deletes the test's namespace (and everything in it).
    pub async fn cleanup(self) {
        let namespaces: Api<Namespace> = Api::all(self.client);
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::background())
            .await;
    }

    pub fn namespaced<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn cluster_wide<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::all(self.client.clone())
    }
}

/// Applies every CRD in `crds/` and waits until the apiserver serves them.
pub async fn apply_crds(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = repo_root().join("crds");
    let mut names = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path)?;
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        crds.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying {}", path.display()))?;
        names.push(name);
    }
    for name in names {
        wait_until(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let crd = crds.get(&name).await?;
                    Ok(crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True"))
                }
            },
        )
        .await?;
    }
    Ok(())
}
