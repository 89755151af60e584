//! Reconciles one policy of any kind: decides its status, and registers its webhook only once
//! every policy-server replica serves it.

use std::sync::Arc;
use std::time::Duration;

use api_types::config::PolicyOrGroup;
use api_types::crd::{
    ObservedPolicyMode, PolicyReloadMode, PolicyServer, PolicyStatus, PolicyStatusPhase,
};
use api_types::load_status::{LoadFailureReason, PolicyLoadStatus, RejectedUpdate};
use api_types::naming::{self, labels};
use api_types::validation;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::load_status;
use super::reachability::{self, InPlace, Observed};
use super::webhook::{WebhookConfiguration, desired_webhook};
use super::{Policy, policy_server_of, unique_name};
use crate::ca;
use crate::conditions::{self, NewCondition};
use crate::context::{Context, apply, delete_if_exists};
use crate::error::{Error, KubeResultExt};
use crate::finalizer;

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
const LOAD_STATUS_RETRY: Duration = Duration::from_secs(15);

/// How often a loaded policy's status is read again: a policy-server may learn while serving
/// that a policy answers in a shape it does not understand (`resultNotUnderstood`).
const LOADED_RECHECK: Duration = Duration::from_secs(300);

/// How often a policy waiting for its policy-server rollout is looked at again (pod events
/// usually come sooner).
const ROLLOUT_POLL: Duration = Duration::from_secs(2);

/// The status being built during one reconciliation.
struct StatusUpdate {
    /// The phase the policy had before this reconciliation.
    previous_phase: Option<PolicyStatusPhase>,
    phase: PolicyStatusPhase,
    mode: ObservedPolicyMode,
    report: Vec<NewCondition>,
    /// Condition types that no longer apply.
    cleared: Vec<&'static str>,
}

impl StatusUpdate {
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

pub async fn reconcile<P: Policy>(policy: Arc<P>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = P::api(ctx.client.clone(), policy.namespace().as_deref());
    let unique = unique_name(policy.as_ref());
    if finalizer::is_deleting(policy.as_ref()) {
        delete_webhooks(&ctx, &unique).await?;
        finalizer::release(&api, policy.as_ref()).await?;
        return Ok(Action::await_change());
    }
    if finalizer::ensure(&api, policy.as_ref()).await? {
        return Ok(Action::await_change());
    }

    let previous = policy.policy_status().cloned().unwrap_or_default();
    let mut status = StatusUpdate {
        previous_phase: previous.policy_status,
        phase: previous
            .policy_status
            .unwrap_or(PolicyStatusPhase::Unscheduled),
        mode: ObservedPolicyMode::Unknown,
        report: Vec::new(),
        cleared: Vec::new(),
    };
    let action = decide(policy.as_ref(), &ctx, &unique, &mut status).await;
    write_status(&api, policy.as_ref(), &previous, status).await?;
    action
}

async fn decide<P: Policy>(
    policy: &P,
    ctx: &Context,
    unique: &str,
    status: &mut StatusUpdate,
) -> Result<Action, Error> {
    let violations = policy.violations();
    if !violations.is_empty() {
        let message = validation::describe(&violations);
        ctx.warn(policy, "InvalidSpec", message.clone()).await;
        delete_webhooks(ctx, unique).await?;
        status.phase = PolicyStatusPhase::Rejected;
        status.condition(condition::ACTIVE, false, "InvalidSpec", message);
        return Ok(Action::await_change());
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
        return Ok(Action::await_change());
    }
    let policy_server = ctx
        .cluster::<PolicyServer>()
        .get_opt(ps_name)
        .await
        .context(|| format!("reading PolicyServer {ps_name}"))?;
    let Some(policy_server) = policy_server.filter(|ps| !finalizer::is_deleting(ps)) else {
        delete_webhooks(ctx, unique).await?;
        status.phase = PolicyStatusPhase::Scheduled;
        status.condition(
            condition::ACTIVE,
            false,
            "PolicyServerNotFound",
            format!("PolicyServer {ps_name} does not exist or is being deleted"),
        );
        return Ok(Action::await_change());
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

    let resource = naming::policy_server_resource_name(ps_name);
    let config_map = ctx
        .namespaced::<ConfigMap>()
        .get_opt(&resource)
        .await
        .context(|| format!("reading ConfigMap {resource}"))?;
    let deployment = ctx
        .namespaced::<Deployment>()
        .get_opt(&resource)
        .await
        .context(|| format!("reading Deployment {resource}"))?;
    let (Some(config_map), Some(deployment)) = (config_map, deployment) else {
        status.condition(
            condition::CONFIGURATION_UP_TO_DATE,
            false,
            "UnknownConfigurationVersion",
            format!("the ConfigMap or Deployment {resource} does not exist yet"),
        );
        return Ok(Action::requeue(ROLLOUT_POLL));
    };
    let wanted = policy.config_entry(
        &policy_server
            .spec
            .effective_namespaced_policies_capabilities(),
    );
    let mode = policy_server.spec.effective_policy_reload_mode();
    record_configuration(&wanted, mode, &config_map, &deployment, unique, status);

    let selector = format!("{}={ps_name}", labels::POLICY_SERVER);
    let list = ListParams::default().labels(&selector);
    let pods = ctx
        .namespaced::<Pod>()
        .list(&list)
        .await
        .context(|| format!("listing pods of {resource}"))?
        .items;
    // In place, the pods themselves say which version they serve; after a rollout, the
    // pod template they run does.
    let in_place_status = match mode {
        PolicyReloadMode::Rollout => {
            let replica_sets = ctx
                .namespaced::<ReplicaSet>()
                .list(&list)
                .await
                .context(|| format!("listing ReplicaSets of {resource}"))?
                .items;
            let observed = Observed {
                config_map: &config_map,
                deployment: &deployment,
                replica_sets: &replica_sets,
                pods: &pods,
            };
            if let Err(why) = reachability::check(unique, &observed) {
                status.condition(
                    condition::UNIQUELY_REACHABLE,
                    false,
                    "LatestReplicaSetIsNotUniquelyReachable",
                    why,
                );
                return Ok(Action::requeue(ROLLOUT_POLL));
            }
            None
        }
        PolicyReloadMode::InPlace => {
            let live: Vec<Pod> = pods
                .iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                .cloned()
                .collect();
            let answers =
                load_status::fetch_each(&live, policy_server.spec.readiness_probe_port).await;
            match reachability::check_in_place(unique, &wanted.digest(), &live, &answers) {
                InPlace::Served(served) => Some(served),
                InPlace::Waiting(why) => {
                    status.condition(
                        condition::UNIQUELY_REACHABLE,
                        false,
                        "CurrentVersionNotServedByEveryPod",
                        why,
                    );
                    return Ok(Action::requeue(ROLLOUT_POLL));
                }
                InPlace::UpdateRejected(rejected) => {
                    record_rejected_update(&rejected, status);
                    return Ok(Action::requeue(LOAD_STATUS_RETRY));
                }
            }
        }
    };
    status.condition(
        condition::UNIQUELY_REACHABLE,
        true,
        "LatestReplicaSetIsUniquelyReachable",
        "every policy-server pod serves the current configuration",
    );

    let ca = ca::ensure(ctx).await?;
    match desired_webhook(policy, &ctx.options, &ca.bundle_pem) {
        WebhookConfiguration::Validating(webhook) => {
            apply(&ctx.cluster::<ValidatingWebhookConfiguration>(), &webhook).await?;
            delete_if_exists(&ctx.cluster::<MutatingWebhookConfiguration>(), unique).await?;
        }
        WebhookConfiguration::Mutating(webhook) => {
            apply(&ctx.cluster::<MutatingWebhookConfiguration>(), &webhook).await?;
            delete_if_exists(&ctx.cluster::<ValidatingWebhookConfiguration>(), unique).await?;
        }
    }
    status.phase = PolicyStatusPhase::Active;
    status.condition(
        condition::ACTIVE,
        true,
        "WebhookCreated",
        "The policy webhook has been created",
    );
    let served = match in_place_status {
        Some(served) => Ok(served),
        None => {
            ctx.load_status
                .policy_status(
                    ps_name,
                    &pods,
                    policy_server.spec.readiness_probe_port,
                    unique,
                )
                .await
        }
    };
    Ok(record_load_status(served, status))
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
        Some(api_types::crd::PolicyMode::Protect) => ObservedPolicyMode::Protect,
        Some(api_types::crd::PolicyMode::Monitor) => ObservedPolicyMode::Monitor,
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

async fn delete_webhooks(ctx: &Context, unique: &str) -> Result<(), Error> {
    delete_if_exists(&ctx.cluster::<ValidatingWebhookConfiguration>(), unique).await?;
    delete_if_exists(&ctx.cluster::<MutatingWebhookConfiguration>(), unique).await?;
    Ok(())
}

async fn write_status<P: Policy>(
    api: &Api<P>,
    policy: &P,
    previous: &PolicyStatus,
    update: StatusUpdate,
) -> Result<(), Error> {
    let mut new = PolicyStatus {
        policy_status: Some(update.phase),
        mode: Some(update.mode),
        conditions: previous.conditions.clone(),
    };
    let now = conditions::now();
    for type_ in update.cleared {
        conditions::remove(&mut new.conditions, type_);
    }
    for condition in update.report {
        conditions::set(
            &mut new.conditions,
            condition,
            policy.meta().generation,
            &now,
        );
    }
    if &new == previous {
        return Ok(());
    }
    api.patch_status(
        &policy.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": new })),
    )
    .await
    .context(|| {
        format!(
            "updating the status of {} {}",
            P::KIND.as_str(),
            policy.name_any()
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::load_status::LoadFailureReason;

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
