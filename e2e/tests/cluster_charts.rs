//! The charts against the real apiserver: every rendered object passes a server-side dry run,
//! and `helm install` brings the controller Deployment up (kwok runs its pod) with the
//! audit-scanner CronJob, then the default PolicyServer.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::Value;
use test_cluster::helm;
use test_cluster::{KUBECONFIG_ENV, TestCluster, unique_name, wait_until};

fn kubeconfig() -> String {
    std::env::var(KUBECONFIG_ENV).expect("kubeconfig")
}

fn kubectl_dry_run(manifest: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .args([
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=chart-test",
            "-f",
            "-",
        ])
        .arg(format!("--kubeconfig={}", kubeconfig()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        anyhow::bail!("{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn rendered_charts_pass_a_server_side_dry_run() {
    let Some(cluster) = TestCluster::connect("charts_dry_run").await else {
        return;
    };
    let Some(helm_bin) = helm::helm("charts_dry_run") else {
        return;
    };
    let ns = cluster.namespace.clone();
    let cases: [(&str, &[&str]); 4] = [
        ("kubewarden-controller", &[]),
        (
            "kubewarden-controller",
            &[
                "--set",
                "hostNetwork=true",
                "--set",
                "telemetry.metrics=true",
                "--set",
                "mTLS.enable=true",
                "--set",
                "mTLS.configMapName=client-ca",
            ],
        ),
        (
            "kubewarden-defaults",
            &[
                "--set",
                "recommendedPolicies.enabled=true",
                "--set",
                "policyServer.minAvailable=1",
            ],
        ),
        (
            "kubewarden-defaults",
            &[
                "--set",
                "policyServer.webhookPort=9443",
                "--set",
                "policyServer.readinessProbePort=9081",
            ],
        ),
    ];
    for (chart, extra) in cases {
        let manifest =
            helm::template(&helm_bin, chart, &unique_name("dry"), &ns, extra).expect("renders");
        let objects = helm::objects(&manifest).expect("parses");
        let applied =
            kubectl_dry_run(&manifest).unwrap_or_else(|e| panic!("{chart} {extra:?}: {e}"));
        assert_eq!(
            applied
                .lines()
                .filter(|l| l.contains("(server dry run)"))
                .count(),
            objects.len(),
            "{chart} {extra:?}: every object accepted:\n{applied}"
        );
    }
    cluster.cleanup().await;
}

#[tokio::test]
async fn helm_install_brings_the_controller_up() {
    let Some(cluster) = TestCluster::connect("charts_install").await else {
        return;
    };
    let Some(helm_bin) = helm::helm("charts_install") else {
        return;
    };
    let ns = cluster.namespace.clone();
    let controller_release = unique_name("kwctl");
    let defaults_release = unique_name("kwdef");
    let policy_server = unique_name("ps");
    let kubeconfig = format!("--kubeconfig={}", kubeconfig());
    let controller_chart = helm::chart("kubewarden-controller").display().to_string();
    let defaults_chart = helm::chart("kubewarden-defaults").display().to_string();

    helm::run(
        &helm_bin,
        &[
            "install",
            &controller_release,
            &controller_chart,
            "--namespace",
            &ns,
            &kubeconfig,
            "--set",
            "hostNetwork=true",
            "--wait",
            "--timeout",
            "90s",
        ],
    )
    .expect("helm install of the controller chart");

    let deployments = cluster.namespaced::<Deployment>();
    let deployment = deployments
        .get(&controller_release)
        .await
        .expect("controller Deployment");
    assert_eq!(deployment.status.and_then(|s| s.ready_replicas), Some(1));
    let pods = cluster.namespaced::<Pod>();
    let selector = format!(
        "app.kubernetes.io/instance={controller_release},app.kubernetes.io/name=kubewarden-controller"
    );
    let pod = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("pods")
        .items
        .remove(0);
    let spec = pod.spec.expect("pod spec");
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    // The apiserver turns host-network container ports into host ports.
    assert_eq!(
        spec.containers[0].ports.as_ref().expect("ports")[0].host_port,
        Some(8081)
    );
    assert!(
        cluster
            .namespaced::<CronJob>()
            .get_opt("audit-scanner")
            .await
            .expect("get")
            .is_some()
    );

    helm::run(
        &helm_bin,
        &[
            "install",
            &defaults_release,
            &defaults_chart,
            "--namespace",
            &ns,
            &kubeconfig,
            "--set",
            &format!("global.policyServer.default.name={policy_server}"),
            "--set",
            "policyServer.webhookPort=9443",
            "--set",
            "policyServer.readinessProbePort=9081",
        ],
    )
    .expect("helm install of the defaults chart");
    let servers: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        cluster.client.clone(),
        &kube::api::ApiResource::erase::<api_types::crd::PolicyServer>(&()),
    );
    wait_until("default PolicyServer", Duration::from_secs(30), || async {
        Ok(servers.get_opt(&policy_server).await?.is_some())
    })
    .await
    .expect("PolicyServer created");
    let ps = servers.get(&policy_server).await.expect("PolicyServer");
    let spec: &Value = &ps.data["spec"];
    assert_eq!(spec["webhookPort"], 9443);
    assert_eq!(spec["readinessProbePort"], 9081);

    for release in [&defaults_release, &controller_release] {
        helm::run(
            &helm_bin,
            &[
                "uninstall",
                release,
                "--namespace",
                &ns,
                &kubeconfig,
                "--wait",
            ],
        )
        .expect("uninstall");
    }
    assert!(
        servers
            .get_opt(&policy_server)
            .await
            .expect("get")
            .is_none(),
        "uninstall removes the PolicyServer"
    );
    cluster.cleanup().await;
}
