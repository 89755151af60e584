//! The host-port behaviour host network mode relies on, with the real kube-scheduler: two
//! host-network replicas binding the same port cannot share a node, and pod anti-affinity
//! spreads replicas. Needs the default three fake nodes.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use test_cluster::{TestCluster, unique_name, wait_until};

/// A port no other test uses, in a range free of the cluster's own listeners.
fn test_port(offset: u16) -> u16 {
    40000 + (std::process::id() % 1000) as u16 * 10 + offset
}

fn deployment(
    name: &str,
    replicas: i32,
    host_network: bool,
    port: u16,
    nodes: &[&str],
    anti_affinity: bool,
) -> Value {
    let mut affinity = json!({
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}]}
        ]}}
    });
    if anti_affinity {
        affinity["podAntiAffinity"] = json!({"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": name}}, "topologyKey": "kubernetes.io/hostname"}
        ]});
    }
    json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "hostNetwork": host_network,
                    "dnsPolicy": if host_network { "ClusterFirstWithHostNet" } else { "ClusterFirst" },
                    "affinity": affinity,
                    "containers": [{"name": "server", "image": "example.invalid/server:1", "ports": [{"containerPort": port}]}]
                }
            }
        }
    })
}

async fn pods_of(cluster: &TestCluster, app: &str) -> Vec<Pod> {
    let pods = cluster.namespaced::<Pod>();
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// Waits until the app has exactly two pods, scheduled on two different nodes.
async fn wait_for_two_pods_on_two_nodes(cluster: &TestCluster, app: &str) {
    wait_until("two pods on two nodes", Duration::from_secs(60), || async {
        let pods = pods_of(cluster, app).await;
        let nodes: std::collections::BTreeSet<_> = pods.iter().filter_map(node_of).collect();
        Ok(pods.len() == 2 && nodes.len() == 2)
    })
    .await
    .unwrap_or_else(|e| panic!("{app}: {e}"));
}

async fn create_deployment(cluster: &TestCluster, object: Value) {
    let deployment: Deployment = serde_json::from_value(object).expect("deployment");
    cluster
        .namespaced::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment created");
}

#[tokio::test]
async fn same_host_port_on_one_node_leaves_one_replica_pending() {
    let Some(cluster) = TestCluster::connect("host_port_one_node").await else {
        return;
    };
    let name = unique_name("hostnet");
    let port = test_port(1);
    create_deployment(
        &cluster,
        deployment(&name, 2, true, port, &["kwok-node-0"], false),
    )
    .await;

    wait_until(
        "one pod scheduled and one pending",
        Duration::from_secs(60),
        || async {
            let pods = pods_of(&cluster, &name).await;
            let scheduled = pods.iter().filter(|p| node_of(p).is_some()).count();
            Ok(pods.len() == 2 && scheduled == 1)
        },
    )
    .await
    .expect("scheduling");
    let pods = pods_of(&cluster, &name).await;
    let pending = pods
        .iter()
        .find(|p| node_of(p).is_none())
        .expect("a pending pod");
    let running = pods
        .iter()
        .find(|p| node_of(p).is_some())
        .expect("a scheduled pod");
    // kwok gives host-network pods the node's address.
    let pod_ip = running.status.as_ref().and_then(|s| s.pod_ip.clone());
    let host_ip = running.status.as_ref().and_then(|s| s.host_ip.clone());
    wait_until(
        "the scheduled pod has its node's address",
        Duration::from_secs(30),
        || async {
            let pods = pods_of(&cluster, &name).await;
            Ok(pods.iter().any(|p| {
                let s = p.status.as_ref();
                let ip = s.and_then(|s| s.pod_ip.clone());
                ip.is_some() && ip == s.and_then(|s| s.host_ip.clone())
            }))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: pod ip {pod_ip:?} host ip {host_ip:?}"));

    let pending_name = pending.metadata.name.clone().unwrap_or_default();
    let events = cluster.namespaced::<Event>();
    let selector = format!("involvedObject.name={pending_name},reason=FailedScheduling");
    let scheduling_message = || async {
        let list = events
            .list(&ListParams::default().fields(&selector))
            .await
            .ok()?;
        list.items.first().and_then(|e| e.message.clone())
    };
    wait_until(
        "a FailedScheduling event",
        Duration::from_secs(60),
        || async { Ok(scheduling_message().await.is_some()) },
    )
    .await
    .expect("event");
    let message = scheduling_message().await.unwrap_or_default();
    assert!(
        message.contains("free ports"),
        "FailedScheduling says: {message}"
    );
    cluster.cleanup().await;
}

#[tokio::test]
async fn same_host_port_on_two_nodes_schedules_both() {
    let Some(cluster) = TestCluster::connect("host_port_two_nodes").await else {
        return;
    };
    let name = unique_name("hostnet");
    create_deployment(
        &cluster,
        deployment(
            &name,
            2,
            true,
            test_port(2),
            &["kwok-node-1", "kwok-node-2"],
            false,
        ),
    )
    .await;
    wait_for_two_pods_on_two_nodes(&cluster, &name).await;
    cluster.cleanup().await;
}

#[tokio::test]
async fn required_anti_affinity_spreads_replicas() {
    let Some(cluster) = TestCluster::connect("anti_affinity").await else {
        return;
    };
    let name = unique_name("spread");
    // No host ports here: only the anti-affinity keeps the replicas apart.
    create_deployment(
        &cluster,
        deployment(&name, 2, false, 8443, &["kwok-node-1", "kwok-node-2"], true),
    )
    .await;
    wait_for_two_pods_on_two_nodes(&cluster, &name).await;
    // A third replica has nowhere to go among the two allowed nodes.
    let deployments = cluster.namespaced::<Deployment>();
    deployments
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scaled");
    wait_until("third replica pending", Duration::from_secs(60), || async {
        let pods = pods_of(&cluster, &name).await;
        Ok(pods.len() == 3 && pods.iter().filter(|p| node_of(p).is_none()).count() == 1)
    })
    .await
    .expect("pending third replica");
    cluster.cleanup().await;
}
