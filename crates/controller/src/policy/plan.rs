//! What one reconciliation of a policy does, decided from what was observed: the webhook to
//! register or remove, the status to write and when to look again. Pure, so every branch is
//! unit-tested without a cluster; `reconcile` observes before and applies after.

use std::time::Duration;

use api_types::config::PolicyOrGroup;
use api_types::crd::{
    ObservedPolicyMode, PolicyMode, PolicyReloadMode, PolicyServer, PolicyStatusPhase,
};
use api_types::load_status::{
    LoadFailureReason, PolicyLoadStatus, PolicyServerLoadStatus, RejectedUpdate,
};
use api_types::naming::{self, labels};
use api_types::validation::{self, Violation};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::reachability::{self, InPlace};
use super::{Policy, policy_server_of};
use crate::conditions::NewCondition;

/// Condition types, as upstream names them.
pub mod condition {
    pub const ACTIVE: &str = "PolicyActive";
    pub const CONFIGURATION_UP_TO_DATE: &str = "PolicyServerConfigurationUpToDate";
    pub const UNIQUELY_REACHABLE: &str = "PolicyUniquelyReachable";
    /// Whether the policy-servers could load the policy (not in upstream).
    pub const LOADED: &str = "PolicyLoaded";
    /// Present (`False`) while the policy has answered in a shape the policy-servers read as
    /// "admit", as upstream does, although it may mean violations (not in upstream).
    pub const RESULT_UNDERSTOOD: &str = "PolicyResultUnderstood";
}

/// How often a policy whose load state could not be read is looked at again.
pub const LOAD_STATUS_RETRY: Duration = Duration::from_secs(15);

/// How often a loaded policy's status is read again: a policy-server may learn while serving
/// that a policy answers in a shape it does not understand (`resultNotUnderstood`).
pub const LOADED_RECHECK: Duration = Duration::from_secs(300);

/// How often a policy waiting for its policy-server rollout is looked at again (pod events
/// usually come sooner).
pub const ROLLOUT_POLL: Duration = Duration::from_secs(2);

/// What a reconciliation read, as far as the decision needs it (each part is read only when
/// the parts before it allow a decision to go that far).
#[derive(Debug, Default)]
pub struct Observed {
    /// The PolicyServer `spec.policyServer` names; `None` when it does not exist or is being
    /// deleted.
    pub policy_server: Option<PolicyServer>,
    /// The PolicyServer's ConfigMap and Deployment, when both exist.
    pub children: Option<(ConfigMap, Deployment)>,
    /// The PolicyServer's pods.
    pub pods: Vec<Pod>,
    pub serving: Serving,
}

/// What says whether the pods serve the policy, by the PolicyServer's reload mode.
#[derive(Debug, Default)]
pub enum Serving {
    /// Nothing was read (the decision ends before it matters).
    #[default]
    Unread,
    /// After a rollout: the Deployment's ReplicaSets, and what the pods said about loading
    /// the policy (asked only when the latest ReplicaSet serves the configuration).
    Rollout {
        replica_sets: Vec<ReplicaSet>,
        load_status: Option<Result<PolicyLoadStatus, String>>,
    },
    /// In place: each live pod's `GET /status`, by pod name.
    InPlace(Vec<(String, Result<PolicyServerLoadStatus, String>)>),
}

/// What to do about the policy's webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Webhooks {
    /// Leave it as it is (the previous version's stays while the current one cannot load,
    /// or nothing exists yet).
    Keep,
    /// Remove it: the policy is invalid or has no PolicyServer to serve it.
    Remove,
    /// Register it (and remove the one of the other kind): every pod serves the policy.
    Register,
}

/// The outcome of one reconciliation.
#[derive(Debug)]
pub struct Plan {
    pub webhooks: Webhooks,
    pub status: StatusUpdate,
    /// A Warning event to publish about the policy (an invalid spec).
    pub warning: Option<String>,
    pub next: Action,
}

/// The status being built during one reconciliation.
#[derive(Debug)]
pub struct StatusUpdate {
    /// The phase the policy had before this reconciliation.
    pub previous_phase: Option<PolicyStatusPhase>,
    pub phase: PolicyStatusPhase,
    pub mode: ObservedPolicyMode,
    pub report: Vec<NewCondition>,
    /// Condition types that no longer apply.
    pub cleared: Vec<&'static str>,
}

impl StatusUpdate {
    /// This status as it stands when registering the webhook failed with `error`: as before
    /// a registration (`pending`, or `active` for a policy whose earlier webhook serves), with
    /// `PolicyActive=False` saying why, and nothing about loading.
    pub fn webhook_not_registered(mut self, error: &str) -> Self {
        self.phase = match self.previous_phase {
            Some(PolicyStatusPhase::Active) => PolicyStatusPhase::Active,
            _ => PolicyStatusPhase::Pending,
        };
        self.report.retain(|c| {
            ![
                condition::ACTIVE,
                condition::LOADED,
                condition::RESULT_UNDERSTOOD,
            ]
            .contains(&c.type_)
        });
        self.cleared.clear();
        self.condition(
            condition::ACTIVE,
            false,
            "WebhookNotCreated",
            format!("The policy webhook cannot be created: {error}"),
        );
        self
    }

    fn condition(
        &mut self,
        type_: &'static str,
        ok: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.report
            .push(NewCondition::new(type_, ok, reason, message));
    }
}

/// Whether `observe` should read the PolicyServer and its objects for a policy with these
/// violations and this PolicyServer name: not when the decision cannot get that far.
pub fn needs_policy_server(violations: &[Violation], policy_server: &str) -> bool {
    violations.is_empty() && !policy_server.is_empty()
}

/// Decides what a reconciliation of `policy` (served as `unique`) does.
pub fn plan<P: Policy>(policy: &P, unique: &str, observed: &Observed) -> Plan {
    let previous_phase = policy.policy_status().and_then(|s| s.policy_status);
    let mut plan = Plan {
        webhooks: Webhooks::Keep,
        status: StatusUpdate {
            previous_phase,
            phase: previous_phase.unwrap_or(PolicyStatusPhase::Unscheduled),
            mode: ObservedPolicyMode::Unknown,
            report: Vec::new(),
            cleared: Vec::new(),
        },
        warning: None,
        next: Action::await_change(),
    };
    let status = &mut plan.status;

    let violations = policy.violations();
    if !violations.is_empty() {
        let message = validation::describe(&violations);
        plan.warning = Some(message.clone());
        plan.webhooks = Webhooks::Remove;
        status.phase = PolicyStatusPhase::Rejected;
        status.condition(condition::ACTIVE, false, "InvalidSpec", message);
        return plan;
    }

    let ps_name = policy_server_of(policy);
    if ps_name.is_empty() {
        status.phase = PolicyStatusPhase::Unscheduled;
        status.condition(
            condition::ACTIVE,
            false,
            "PolicyServerNotSet",
            "spec.policyServer is empty",
        );
        return plan;
    }
    let Some(policy_server) = &observed.policy_server else {
        plan.webhooks = Webhooks::Remove;
        status.phase = PolicyStatusPhase::Scheduled;
        status.condition(
            condition::ACTIVE,
            false,
            "PolicyServerNotFound",
            format!("PolicyServer {ps_name} does not exist or is being deleted"),
        );
        return plan;
    };

    if status.phase != PolicyStatusPhase::Active {
        status.phase = PolicyStatusPhase::Pending;
    }
    status.condition(
        condition::ACTIVE,
        false,
        "WebhookNotCreated",
        "The policy webhook has not been created",
    );

    let Some((config_map, deployment)) = &observed.children else {
        status.condition(
            condition::CONFIGURATION_UP_TO_DATE,
            false,
            "UnknownConfigurationVersion",
            format!(
                "the ConfigMap or Deployment {} does not exist yet",
                naming::policy_server_resource_name(ps_name)
            ),
        );
        plan.next = Action::requeue(ROLLOUT_POLL);
        return plan;
    };
    let wanted = policy.config_entry(
        &policy_server
            .spec
            .effective_namespaced_policies_capabilities(),
    );
    let mode = policy_server.spec.effective_policy_reload_mode();
    record_configuration(&wanted, mode, config_map, deployment, unique, status);

    let load_status = match &observed.serving {
        Serving::Rollout {
            replica_sets,
            load_status,
        } => {
            let rollout = reachability::Observed {
                config_map,
                deployment,
                replica_sets,
                pods: &observed.pods,
            };
            match (reachability::check(unique, &rollout), load_status) {
                (Ok(()), Some(load_status)) => load_status.clone(),
                (Ok(()), None) => Err("the load status was not read".to_string()),
                (Err(why), _) => {
                    status.condition(
                        condition::UNIQUELY_REACHABLE,
                        false,
                        "LatestReplicaSetIsNotUniquelyReachable",
                        why,
                    );
                    plan.next = Action::requeue(ROLLOUT_POLL);
                    return plan;
                }
            }
        }
        Serving::InPlace(answers) => {
            let live = live_pods(&observed.pods);
            match reachability::check_in_place(unique, &wanted.digest(), &live, answers) {
                InPlace::Served(served) => Ok(served),
                InPlace::Waiting(why) => {
                    status.condition(
                        condition::UNIQUELY_REACHABLE,
                        false,
                        "CurrentVersionNotServedByEveryPod",
                        why,
                    );
                    plan.next = Action::requeue(ROLLOUT_POLL);
                    return plan;
                }
                InPlace::UpdateRejected(rejected) => {
                    record_rejected_update(&rejected, status);
                    plan.next = Action::requeue(LOAD_STATUS_RETRY);
                    return plan;
                }
            }
        }
        Serving::Unread => {
            status.report.push(NewCondition::unknown(
                condition::UNIQUELY_REACHABLE,
                "NotObserved",
                "the policy-server pods were not looked at",
            ));
            plan.next = Action::requeue(ROLLOUT_POLL);
            return plan;
        }
    };
    status.condition(
        condition::UNIQUELY_REACHABLE,
        true,
        "LatestReplicaSetIsUniquelyReachable",
        "every policy-server pod serves the current configuration",
    );

    plan.webhooks = Webhooks::Register;
    status.phase = PolicyStatusPhase::Active;
    status.condition(
        condition::ACTIVE,
        true,
        "WebhookCreated",
        "The policy webhook has been created",
    );
    plan.next = record_load_status(load_status, status);
    plan
}

/// The pods not being deleted: in place, each of them must serve the policy.
pub fn live_pods(pods: &[Pod]) -> Vec<Pod> {
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect()
}

/// In place: the pods could not load the policy's current version and go on serving the
/// previous one, whose webhook stays as it is. An active policy stays active (its previous
/// version enforces); `PolicyLoaded` says why the current one is not served.
fn record_rejected_update(rejected: &RejectedUpdate, status: &mut StatusUpdate) {
    if status.previous_phase == Some(PolicyStatusPhase::Active) {
        status.phase = PolicyStatusPhase::Active;
        status.condition(
            condition::ACTIVE,
            true,
            "WebhookCreated",
            "The webhook of the policy's previous version serves",
        );
    }
    status.condition(
        condition::UNIQUELY_REACHABLE,
        false,
        "CurrentVersionNotLoaded",
        "the policy-servers serve the policy's previous version",
    );
    status.condition(
        condition::LOADED,
        false,
        rejected.reason.as_str(),
        format!(
            "the policy-servers cannot load the policy's current version and go on serving \
             the previous one: {}",
            rejected.message
        ),
    );
}

/// Sets `PolicyLoaded` from what the policy-servers said; a policy they could not load is in
/// the `error` phase.
fn record_load_status(
    served: Result<PolicyLoadStatus, String>,
    status: &mut StatusUpdate,
) -> Action {
    match served {
        Ok(PolicyLoadStatus {
            loaded: true,
            result_not_understood,
            ..
        }) => {
            status.condition(
                condition::LOADED,
                true,
                "PolicyLoaded",
                "the policy-servers loaded the policy",
            );
            match result_not_understood {
                Some(result) => status.condition(
                    condition::RESULT_UNDERSTOOD,
                    false,
                    "GatekeeperResultNotAList",
                    format!(
                        "the policy's result is {result}; such a result admits the request, \
                         as upstream Kubewarden reads it, so this policy enforces nothing"
                    ),
                ),
                None => status.cleared.push(condition::RESULT_UNDERSTOOD),
            }
            Action::requeue(LOADED_RECHECK)
        }
        Ok(failed) => {
            status.phase = PolicyStatusPhase::Error;
            status.condition(
                condition::LOADED,
                false,
                failed
                    .reason
                    .map_or("LoadFailed", LoadFailureReason::as_str),
                failed
                    .message
                    .unwrap_or_else(|| "the policy-servers cannot load the policy".into()),
            );
            Action::await_change()
        }
        Err(why) => {
            // A policy known not to load stays in error until a pod says otherwise.
            if status.previous_phase == Some(PolicyStatusPhase::Error) {
                status.phase = PolicyStatusPhase::Error;
            }
            status.report.push(NewCondition::unknown(
                condition::LOADED,
                "LoadStatusUnavailable",
                format!("cannot read the policy-servers' load status: {why}"),
            ));
            Action::requeue(LOAD_STATUS_RETRY)
        }
    }
}

/// Records the mode the policy-server runs the policy in, and whether its configuration matches
/// the policy's current spec (after a rollout: and the pod template carries that
/// configuration; in place, the pods' own answers are checked afterwards).
fn record_configuration(
    wanted: &PolicyOrGroup,
    mode: PolicyReloadMode,
    config_map: &ConfigMap,
    deployment: &Deployment,
    unique: &str,
    status: &mut StatusUpdate,
) {
    let served = reachability::policies_config(config_map).and_then(|c| c.0.get(unique).cloned());
    status.mode = match served.as_ref().map(|e| e.policy_mode()) {
        Some(PolicyMode::Protect) => ObservedPolicyMode::Protect,
        Some(PolicyMode::Monitor) => ObservedPolicyMode::Monitor,
        None => ObservedPolicyMode::Unknown,
    };
    let template_version = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(labels::CONFIG_VERSION))
        .cloned();
    let template_current = match mode {
        PolicyReloadMode::Rollout => template_version == config_map.resource_version(),
        PolicyReloadMode::InPlace => true,
    };
    let up_to_date = served.as_ref() == Some(wanted) && template_current;
    if up_to_date {
        status.condition(
            condition::CONFIGURATION_UP_TO_DATE,
            true,
            "ConfigurationVersionMatch",
            "the policy-server configuration matches the policy",
        );
    } else {
        status.condition(
            condition::CONFIGURATION_UP_TO_DATE,
            false,
            "ConfigurationVersionMismatch",
            "the policy-server has not picked up the current policy yet",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::config::PoliciesConfig;
    use api_types::crd::{ClusterAdmissionPolicy, PolicyStatus};
    use pretty_assertions::assert_eq;

    use crate::policy::config_entry::ConfigEntry;
    use serde_json::json;

    const UNIQUE: &str = "clusterwide-privileged-pods";

    fn policy(policy_server: &str, phase: Option<PolicyStatusPhase>) -> ClusterAdmissionPolicy {
        let mut policy: ClusterAdmissionPolicy = serde_yaml_ng::from_str(&format!(
            r#"
apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicy
metadata: {{name: privileged-pods, generation: 1}}
spec:
  policyServer: "{policy_server}"
  module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
  rules:
  - apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
    operations: [CREATE]
  mutating: false
"#
        ))
        .expect("fixture parses");
        policy.status = phase.map(|phase| PolicyStatus {
            policy_status: Some(phase),
            ..PolicyStatus::default()
        });
        policy
    }

    fn policy_server(reload: &str) -> PolicyServer {
        serde_yaml_ng::from_str(&format!(
            r#"
apiVersion: policies.kubewarden.io/v1
kind: PolicyServer
metadata: {{name: default}}
spec:
  image: ghcr.io/kubewarden/policy-server:v1.37.0
  replicas: 2
  policyReloadMode: {reload}
"#
        ))
        .expect("fixture parses")
    }

    /// The ConfigMap (resource version `42`) serving `policy`'s current entry, and a
    /// Deployment whose template and latest ReplicaSet carry that version.
    fn children(policy: &ClusterAdmissionPolicy) -> (ConfigMap, Deployment, Vec<ReplicaSet>) {
        let config = PoliciesConfig([(UNIQUE.to_string(), policy.config_entry(&[]))].into());
        let config_map = serde_json::from_value(json!({
            "metadata": {"name": "policy-server-default", "resourceVersion": "42"},
            "data": {"policies.yml": serde_yaml_ng::to_string(&config).expect("yaml")}
        }))
        .expect("config map");
        let deployment = serde_json::from_value(json!({
            "metadata": {"name": "policy-server-default",
                         "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"selector": {}, "template": {"metadata": {"labels": {"kubewarden/config-version": "42"}}}}
        }))
        .expect("deployment");
        let replica_set = serde_json::from_value(json!({
            "metadata": {"name": "policy-server-default-new",
                         "labels": {"pod-template-hash": "new"},
                         "annotations": {"deployment.kubernetes.io/revision": "2",
                                         "kubewarden/config-version": "42"}}
        }))
        .expect("replica set");
        (config_map, deployment, vec![replica_set])
    }

    fn pod(name: &str, hash: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"pod-template-hash": hash}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("pod")
    }

    fn condition<'a>(plan: &'a Plan, type_: &str) -> &'a NewCondition {
        plan.status
            .report
            .iter()
            .rev()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {:?}", plan.status.report))
    }

    /// Observed after a finished rollout, the pods answering `load_status`.
    fn rolled_out(
        policy: &ClusterAdmissionPolicy,
        load_status: Result<PolicyLoadStatus, String>,
    ) -> Observed {
        let (config_map, deployment, replica_sets) = children(policy);
        Observed {
            policy_server: Some(policy_server("rollout")),
            children: Some((config_map, deployment)),
            pods: vec![pod("a", "new"), pod("b", "new")],
            serving: Serving::Rollout {
                replica_sets,
                load_status: Some(load_status),
            },
        }
    }

    #[test]
    fn an_invalid_spec_removes_the_webhook_and_warns() {
        let mut invalid = policy("default", Some(PolicyStatusPhase::Active));
        invalid.spec.common.policy_server = "default".into();
        invalid.spec.common.rules.clear();
        let plan = plan(&invalid, UNIQUE, &Observed::default());
        assert_eq!(plan.webhooks, Webhooks::Remove);
        assert_eq!(plan.status.phase, PolicyStatusPhase::Rejected);
        assert!(plan.warning.is_some());
        assert_eq!(condition(&plan, condition::ACTIVE).reason, "InvalidSpec");
        assert_eq!(plan.next, Action::await_change());
    }

    #[test]
    fn without_its_policy_server_a_policy_is_not_served() {
        let unset = plan(&policy("", None), UNIQUE, &Observed::default());
        assert_eq!(
            (unset.webhooks, unset.status.phase),
            (Webhooks::Keep, PolicyStatusPhase::Unscheduled)
        );
        assert_eq!(
            condition(&unset, condition::ACTIVE).reason,
            "PolicyServerNotSet"
        );

        let missing = plan(
            &policy("default", Some(PolicyStatusPhase::Active)),
            UNIQUE,
            &Observed::default(),
        );
        assert_eq!(
            (missing.webhooks, missing.status.phase),
            (Webhooks::Remove, PolicyStatusPhase::Scheduled)
        );
        assert_eq!(
            condition(&missing, condition::ACTIVE).reason,
            "PolicyServerNotFound"
        );
    }

    #[test]
    fn a_policy_waits_for_the_policy_server_objects() {
        let observed = Observed {
            policy_server: Some(policy_server("rollout")),
            ..Observed::default()
        };
        let plan = plan(&policy("default", None), UNIQUE, &observed);
        assert_eq!(plan.webhooks, Webhooks::Keep);
        assert_eq!(plan.status.phase, PolicyStatusPhase::Pending);
        assert_eq!(
            condition(&plan, condition::CONFIGURATION_UP_TO_DATE).reason,
            "UnknownConfigurationVersion"
        );
        assert_eq!(plan.next, Action::requeue(ROLLOUT_POLL));
    }

    #[test]
    fn served_by_every_pod_after_a_rollout_the_webhook_is_registered() {
        let policy = policy("default", Some(PolicyStatusPhase::Pending));
        let plan = plan(
            &policy,
            UNIQUE,
            &rolled_out(&policy, Ok(PolicyLoadStatus::loaded())),
        );
        assert_eq!(plan.webhooks, Webhooks::Register);
        assert_eq!(plan.status.phase, PolicyStatusPhase::Active);
        assert_eq!(plan.status.mode, ObservedPolicyMode::Protect);
        for type_ in [
            condition::ACTIVE,
            condition::CONFIGURATION_UP_TO_DATE,
            condition::UNIQUELY_REACHABLE,
            condition::LOADED,
        ] {
            assert_eq!(condition(&plan, type_).status, "True", "{type_}");
        }
        assert_eq!(plan.next, Action::requeue(LOADED_RECHECK));
    }

    #[test]
    fn during_a_rollout_the_webhook_waits() {
        let policy = policy("default", Some(PolicyStatusPhase::Pending));
        let mut observed = rolled_out(&policy, Ok(PolicyLoadStatus::loaded()));
        observed.pods.push(pod("c", "old"));
        let plan = plan(&policy, UNIQUE, &observed);
        assert_eq!(plan.webhooks, Webhooks::Keep);
        assert_eq!(plan.status.phase, PolicyStatusPhase::Pending);
        let reachable = condition(&plan, condition::UNIQUELY_REACHABLE);
        assert_eq!(
            (reachable.status, reachable.reason),
            ("False", "LatestReplicaSetIsNotUniquelyReachable")
        );
        assert_eq!(plan.next, Action::requeue(ROLLOUT_POLL));
    }

    #[test]
    fn in_place_a_rejected_update_keeps_the_previous_webhook() {
        let policy = policy("default", Some(PolicyStatusPhase::Active));
        let (config_map, deployment, _) = children(&policy);
        let rejected = PolicyServerLoadStatus {
            loaded: true,
            policies: [(
                UNIQUE.to_string(),
                PolicyLoadStatus {
                    rejected_update: Some(RejectedUpdate {
                        digest: policy.config_entry(&[]).digest(),
                        reason: LoadFailureReason::SettingsInvalid,
                        message: "denied_labels must be a list".into(),
                    }),
                    ..PolicyLoadStatus::loaded().with_digest("previous")
                },
            )]
            .into(),
            reload_error: None,
        };
        let observed = Observed {
            policy_server: Some(policy_server("inPlace")),
            children: Some((config_map, deployment)),
            pods: vec![pod("a", "x")],
            serving: Serving::InPlace(vec![("a".into(), Ok(rejected))]),
        };
        let plan = plan(&policy, UNIQUE, &observed);
        assert_eq!(plan.webhooks, Webhooks::Keep);
        assert_eq!(plan.status.phase, PolicyStatusPhase::Active);
        let loaded = condition(&plan, condition::LOADED);
        assert_eq!((loaded.status, loaded.reason), ("False", "SettingsInvalid"));
        assert_eq!(plan.next, Action::requeue(LOAD_STATUS_RETRY));
    }

    #[test]
    fn a_webhook_that_cannot_be_registered_is_not_reported_active() {
        let pending = policy("default", Some(PolicyStatusPhase::Pending));
        let plan = plan(
            &pending,
            UNIQUE,
            &rolled_out(&pending, Ok(PolicyLoadStatus::loaded())),
        );
        assert_eq!(plan.webhooks, Webhooks::Register);
        let status = plan.status.webhook_not_registered("forbidden");
        assert_eq!(status.phase, PolicyStatusPhase::Pending);
        let active: Vec<_> = status
            .report
            .iter()
            .filter(|c| c.type_ == condition::ACTIVE)
            .collect();
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].status, active[0].reason),
            ("False", "WebhookNotCreated")
        );
        assert!(active[0].message.contains("forbidden"));
        assert!(status.report.iter().all(|c| c.type_ != condition::LOADED));
        assert!(status.cleared.is_empty());

        // An active policy's earlier webhook still serves: it stays active.
        let active = policy("default", Some(PolicyStatusPhase::Active));
        let planned = super::plan(
            &active,
            UNIQUE,
            &rolled_out(&active, Ok(PolicyLoadStatus::loaded())),
        );
        assert_eq!(
            planned.status.webhook_not_registered("forbidden").phase,
            PolicyStatusPhase::Active
        );
    }

    fn update() -> StatusUpdate {
        StatusUpdate {
            previous_phase: Some(PolicyStatusPhase::Active),
            phase: PolicyStatusPhase::Active,
            mode: ObservedPolicyMode::Protect,
            report: Vec::new(),
            cleared: Vec::new(),
        }
    }

    #[test]
    fn a_result_not_understood_is_a_false_condition_on_an_active_policy() {
        let mut status = update();
        record_load_status(
            Ok(PolicyLoadStatus::loaded_with_result_not_understood(
                "an object with the members [violation] instead of a list of violations",
            )),
            &mut status,
        );
        assert_eq!(status.phase, PolicyStatusPhase::Active);
        let understood = &status.report[1];
        assert_eq!(
            (understood.type_, understood.status, understood.reason),
            (
                "PolicyResultUnderstood",
                "False",
                "GatekeeperResultNotAList"
            )
        );
        assert!(understood.message.contains("members [violation]"));
        assert!(understood.message.contains("enforces nothing"));

        let mut status = update();
        let action = record_load_status(Ok(PolicyLoadStatus::loaded()), &mut status);
        assert_eq!(status.cleared, vec!["PolicyResultUnderstood"]);
        // Read again later: a shape only real requests show reaches the condition too.
        assert_eq!(action, Action::requeue(LOADED_RECHECK));
    }

    #[test]
    fn a_policy_that_cannot_load_is_in_error_with_the_reason() {
        let mut status = update();
        let failed = PolicyLoadStatus::failed(
            LoadFailureReason::SettingsInvalid,
            "Policy settings are invalid: denied_labels must be a list",
        );
        record_load_status(Ok(failed), &mut status);
        assert_eq!(status.phase, PolicyStatusPhase::Error);
        let loaded = &status.report[0];
        assert_eq!(
            (loaded.type_, loaded.status, loaded.reason),
            ("PolicyLoaded", "False", "SettingsInvalid")
        );
        assert!(loaded.message.contains("must be a list"));
    }

    #[test]
    fn loaded_and_unknown_keep_the_policy_active() {
        let mut status = update();
        record_load_status(Ok(PolicyLoadStatus::loaded()), &mut status);
        assert_eq!(status.phase, PolicyStatusPhase::Active);
        assert_eq!(status.report[0].status, "True");

        let mut status = update();
        let action = record_load_status(Err("connection refused".into()), &mut status);
        assert_eq!(status.phase, PolicyStatusPhase::Active);
        assert_eq!(status.report[0].status, "Unknown");
        assert!(status.report[0].message.contains("connection refused"));
        assert_eq!(action, Action::requeue(LOAD_STATUS_RETRY));

        // Known not to load: an unreadable status does not make it active again.
        let mut status = update();
        status.previous_phase = Some(PolicyStatusPhase::Error);
        record_load_status(Err("timed out".into()), &mut status);
        assert_eq!(status.phase, PolicyStatusPhase::Error);
    }
}
