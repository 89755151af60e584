//! Whether every running policy-server replica serves the current configuration, so a webhook
//! registered now can only reach servers that know the policy.

use api_types::config::PoliciesConfig;
use api_types::load_status::{PolicyLoadStatus, PolicyServerLoadStatus, RejectedUpdate};
use api_types::naming::{self, annotations, labels};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;

/// Label the Deployment controller puts on ReplicaSets and their pods.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// What the check looks at, all read from the deployments namespace.
#[derive(Debug)]
pub struct Observed<'a> {
    pub config_map: &'a ConfigMap,
    pub deployment: &'a Deployment,
    /// ReplicaSets of the policy-server Deployment.
    pub replica_sets: &'a [ReplicaSet],
    /// Pods of the PolicyServer.
    pub pods: &'a [Pod],
}

/// Whether `policies.yml` in the ConfigMap lists `unique_name`.
pub fn config_lists(config_map: &ConfigMap, unique_name: &str) -> bool {
    policies_config(config_map).is_some_and(|c| c.0.contains_key(unique_name))
}

pub fn policies_config(config_map: &ConfigMap) -> Option<PoliciesConfig> {
    let text = config_map.data.as_ref()?.get(naming::POLICIES_CONFIG_KEY)?;
    PoliciesConfig::parse(text).ok()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `Ok(())` when the policy is served by every pod, else why not (for the status condition).
pub fn check(unique_name: &str, observed: &Observed<'_>) -> Result<(), String> {
    if !config_lists(observed.config_map, unique_name) {
        return Err("the policy is not in the policy-server configuration yet".to_string());
    }
    let config_version = observed.config_map.resource_version().unwrap_or_default();
    let revision = observed
        .deployment
        .annotations()
        .get(annotations::DEPLOYMENT_REVISION)
        .cloned()
        .ok_or("the policy-server Deployment has not been rolled out yet")?;
    let latest = observed
        .replica_sets
        .iter()
        .find(|rs| {
            rs.annotations().get(annotations::DEPLOYMENT_REVISION) == Some(&revision)
                && rs.annotations().get(labels::CONFIG_VERSION) == Some(&config_version)
        })
        .ok_or(
            "no ReplicaSet of the policy-server Deployment runs the current configuration yet",
        )?;
    let hash = latest
        .labels()
        .get(POD_TEMPLATE_HASH)
        .cloned()
        .ok_or("the latest ReplicaSet has no pod-template-hash label")?;
    if observed.pods.is_empty() {
        return Err("no policy-server pod exists yet".to_string());
    }
    let outdated = observed
        .pods
        .iter()
        .filter(|p| p.labels().get(POD_TEMPLATE_HASH) != Some(&hash))
        .count();
    if outdated > 0 {
        return Err(format!(
            "{outdated} policy-server pod(s) still run an older configuration"
        ));
    }
    let not_ready = observed.pods.iter().filter(|p| !is_ready(p)).count();
    if not_ready > 0 {
        return Err(format!("{not_ready} policy-server pod(s) are not ready"));
    }
    Ok(())
}

/// Whether the pods of an in-place reloading PolicyServer serve a policy's current version.
#[derive(Debug, PartialEq)]
pub enum InPlace {
    /// Every pod serves the version: its webhook reaches only servers that know it. The load
    /// status is the first pod's (they serve the same version).
    Served(PolicyLoadStatus),
    /// Some pod does not serve it yet: why.
    Waiting(String),
    /// A pod could not load the version and goes on serving the previous one.
    UpdateRejected(RejectedUpdate),
}

/// Checks that every pod of `pods` (the PolicyServer's, none terminating) is Ready and, in
/// `answers` (their `GET /status`, by pod name), serves `unique_name` at `digest`.
pub fn check_in_place(
    unique_name: &str,
    digest: &str,
    pods: &[Pod],
    answers: &[(String, Result<PolicyServerLoadStatus, String>)],
) -> InPlace {
    if pods.is_empty() {
        return InPlace::Waiting("no policy-server pod exists yet".to_string());
    }
    let not_ready = pods.iter().filter(|p| !is_ready(p)).count();
    if not_ready > 0 {
        return InPlace::Waiting(format!("{not_ready} policy-server pod(s) are not ready"));
    }
    let mut served = None;
    let mut waiting = Vec::new();
    for (pod, answer) in answers {
        let status = match answer {
            Ok(status) if status.loaded => status,
            Ok(_) => {
                waiting.push(format!("{pod} is still loading"));
                continue;
            }
            Err(why) => {
                waiting.push(format!("{pod}: {why}"));
                continue;
            }
        };
        match status.policies.get(unique_name) {
            Some(policy) if policy.digest.as_deref() == Some(digest) => {
                served.get_or_insert_with(|| policy.clone());
            }
            Some(policy) => match &policy.rejected_update {
                Some(rejected) if rejected.digest == digest => {
                    return InPlace::UpdateRejected(rejected.clone());
                }
                _ => waiting.push(format!("{pod} serves an older version")),
            },
            None => waiting.push(format!("{pod} does not serve the policy yet")),
        }
    }
    match served {
        Some(status) if waiting.is_empty() => InPlace::Served(status),
        _ if waiting.is_empty() => InPlace::Waiting("no policy-server pod answered".to_string()),
        _ => InPlace::Waiting(format!(
            "not every policy-server pod has reloaded the policy: {}",
            waiting.join("; ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config_map(rv: &str, policies: serde_json::Value) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "policy-server-default", "resourceVersion": rv},
            "data": {"policies.yml": policies.to_string()}
        }))
        .expect("config map")
    }

    fn deployment(revision: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "policy-server-default",
                         "annotations": {"deployment.kubernetes.io/revision": revision}}
        }))
        .expect("deployment")
    }

    fn replica_set(revision: &str, config_version: &str, hash: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("policy-server-default-{hash}"),
                         "labels": {"pod-template-hash": hash},
                         "annotations": {"deployment.kubernetes.io/revision": revision,
                                         "kubewarden/config-version": config_version}}
        }))
        .expect("replica set")
    }

    fn pod(hash: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("pod-{hash}"), "labels": {"pod-template-hash": hash}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .expect("pod")
    }

    fn policies() -> serde_json::Value {
        json!({"clusterwide-p": {"module": "file:///p.wasm"}})
    }

    #[test]
    fn reachable_when_all_pods_run_the_latest_configuration() {
        let cm = config_map("42", policies());
        let deployment = deployment("2");
        let rs = [replica_set("1", "40", "old"), replica_set("2", "42", "new")];
        let pods = [pod("new", true), pod("new", true)];
        let observed = Observed {
            config_map: &cm,
            deployment: &deployment,
            replica_sets: &rs,
            pods: &pods,
        };
        assert_eq!(check("clusterwide-p", &observed), Ok(()));
        let missing = check("clusterwide-other", &observed).expect_err("not configured");
        assert!(missing.contains("not in the policy-server configuration"));
    }

    #[test]
    fn not_reachable_during_a_rollout() {
        let cm = config_map("42", policies());
        let deployment = deployment("2");
        let rs = [replica_set("1", "40", "old"), replica_set("2", "42", "new")];
        let pods = [pod("new", true), pod("old", true)];
        let observed = Observed {
            config_map: &cm,
            deployment: &deployment,
            replica_sets: &rs,
            pods: &pods,
        };
        let why = check("clusterwide-p", &observed).expect_err("rolling");
        assert!(why.contains("older configuration"), "{why}");

        let pods = [pod("new", true), pod("new", false)];
        let observed = Observed {
            pods: &pods,
            ..observed
        };
        let why = check("clusterwide-p", &observed).expect_err("not ready");
        assert!(why.contains("not ready"), "{why}");
    }

    #[test]
    fn not_reachable_before_the_new_replica_set_exists() {
        let cm = config_map("43", policies());
        let deployment = deployment("2");
        let rs = [replica_set("2", "42", "new")];
        let pods = [pod("new", true)];
        let observed = Observed {
            config_map: &cm,
            deployment: &deployment,
            replica_sets: &rs,
            pods: &pods,
        };
        let why = check("clusterwide-p", &observed).expect_err("stale config");
        assert!(why.contains("current configuration"), "{why}");

        let no_pods: [Pod; 0] = [];
        let rs = [replica_set("2", "43", "new")];
        let observed = Observed {
            replica_sets: &rs,
            pods: &no_pods,
            ..observed
        };
        assert!(check("clusterwide-p", &observed).is_err());
    }

    fn answer(
        pod: &str,
        policy: Option<PolicyLoadStatus>,
    ) -> (String, Result<PolicyServerLoadStatus, String>) {
        let status = PolicyServerLoadStatus {
            loaded: true,
            policies: policy
                .into_iter()
                .map(|p| ("clusterwide-p".to_string(), p))
                .collect(),
            reload_error: None,
        };
        (pod.to_string(), Ok(status))
    }

    #[test]
    fn in_place_served_once_every_ready_pod_serves_the_digest() {
        let pods = [pod("a", true), pod("b", true)];
        let current = PolicyLoadStatus::loaded().with_digest("new");
        let answers = [
            answer("a", Some(current.clone())),
            answer("b", Some(current.clone())),
        ];
        assert_eq!(
            check_in_place("clusterwide-p", "new", &pods, &answers),
            InPlace::Served(current.clone())
        );

        let older = PolicyLoadStatus::loaded().with_digest("old");
        let answers = [answer("a", Some(current.clone())), answer("b", Some(older))];
        let InPlace::Waiting(why) = check_in_place("clusterwide-p", "new", &pods, &answers) else {
            panic!("one pod serves the old version");
        };
        assert!(why.contains("b serves an older version"), "{why}");

        let answers = [
            answer("a", Some(current.clone())),
            answer("b", None),
            ("c".to_string(), Err("connection refused".to_string())),
        ];
        let InPlace::Waiting(why) = check_in_place("clusterwide-p", "new", &pods, &answers) else {
            panic!("pods without the policy");
        };
        assert!(why.contains("b does not serve the policy yet"), "{why}");
        assert!(why.contains("c: connection refused"), "{why}");

        let pods = [pod("a", true), pod("b", false)];
        let answers = [
            answer("a", Some(current.clone())),
            answer("b", Some(current)),
        ];
        assert!(matches!(
            check_in_place("clusterwide-p", "new", &pods, &answers),
            InPlace::Waiting(why) if why.contains("not ready")
        ));
    }

    #[test]
    fn in_place_update_rejected_when_a_pod_cannot_load_the_new_version() {
        let rejected = RejectedUpdate {
            digest: "new".to_string(),
            reason: api_types::load_status::LoadFailureReason::SettingsInvalid,
            message: "Policy settings are invalid".to_string(),
        };
        let serving_old = PolicyLoadStatus {
            rejected_update: Some(rejected.clone()),
            ..PolicyLoadStatus::loaded().with_digest("old")
        };
        let pods = [pod("a", true)];
        assert_eq!(
            check_in_place(
                "clusterwide-p",
                "new",
                &pods,
                &[answer("a", Some(serving_old))]
            ),
            InPlace::UpdateRejected(rejected)
        );
    }
}
