//! `kwctl run --allow-context-aware` against the local control plane: context-aware policies
//! (waPC and Rego) read a real Namespace, `can_i` asks the API server through a real
//! SubjectAccessReview, every exchange is recorded, and the recorded session gives the same
//! verdicts with no cluster at all.

mod common;

use common::*;
use serde_json::{Value, json};
use test_cluster::TestCluster;

fn review(namespace: &str) -> Value {
    let mut review = pod_review(json!({}));
    review["request"]["namespace"] = json!(namespace);
    review
}

#[tokio::test]
async fn context_aware_runs_read_the_cluster_and_replay_without_it() {
    let Some(cluster) = TestCluster::connect("kwctl_context_aware").await else {
        return;
    };
    let kubeconfig = std::env::var(test_cluster::KUBECONFIG_ENV).expect("set by connect");
    let dir = scratch("cluster");
    let request = write(&dir, "r.json", &review(&cluster.namespace).to_string());
    let can_i = json!({
        "namespace": "kubernetes",
        "operation": "can_i",
        "payload": {
            "subject_access_review": {
                "user": format!("system:serviceaccount:{}:default", cluster.namespace),
                "resource_attributes": {"namespace": cluster.namespace, "verb": "create", "group": "", "resource": "pods"}
            },
            "disable_cache": false
        }
    })
    .to_string();
    // The test namespace carries `kubewarden-rs/test`, not `team`.
    let cases = [
        (
            "namespace-label",
            r#"{"required_namespace_label": "kubewarden-rs/test"}"#.to_string(),
            true,
        ),
        (
            "namespace-label",
            r#"{"required_namespace_label": "team"}"#.to_string(),
            false,
        ),
        (
            "opa-namespace-label",
            r#"{"required_namespace_label": "kubewarden-rs/test"}"#.to_string(),
            true,
        ),
        (
            "opa-namespace-label",
            r#"{"required_namespace_label": "team"}"#.to_string(),
            false,
        ),
        ("host-call", can_i, true),
    ];
    for (index, (policy, settings, allowed)) in cases.iter().enumerate() {
        let session = dir
            .join(format!("session-{index}.yml"))
            .display()
            .to_string();
        let module = fixture(policy);
        let run = |mode: &str, kubeconfig: &str| {
            let output = kwctl_with_env(
                &dir,
                &[
                    "run",
                    &module,
                    "-r",
                    &request,
                    "--settings-json",
                    settings,
                    "--allow-context-aware",
                    mode,
                    &session,
                ],
                &[("KUBECONFIG", kubeconfig)],
            );
            assert!(
                output.status.success(),
                "{policy} {mode}: {}",
                stderr(&output)
            );
            serde_json::from_str::<Value>(&stdout(&output)).expect("JSON")
        };
        let live = run("--record-host-capabilities-interactions", &kubeconfig);
        assert_eq!(live["allowed"], *allowed, "{policy} {settings}: {live}");
        let recorded = std::fs::read_to_string(&session).expect("recorded");
        let replayed = run(
            "--replay-host-capabilities-interactions",
            "/nonexistent/kubeconfig",
        );
        assert_eq!(
            replayed, live,
            "{policy} {settings}: the session gives the same answer\n{recorded}"
        );
        if *policy == "host-call" {
            assert!(recorded.contains("!KubernetesCanI\n    subject_access_review:\n      apiVersion: authorization.k8s.io/v1"), "{recorded}");
            assert!(
                live["warnings"][0]
                    .as_str()
                    .is_some_and(|w| w.contains("\"allowed\":false")),
                "{live}"
            );
        } else {
            assert!(
                recorded.contains("!KubernetesGetResource")
                    || recorded.contains("!KubernetesListResourceAll"),
                "{recorded}"
            );
        }
    }
    cluster.cleanup().await;
}
