//! Reconciles one policy of any kind: observes the cluster (the shared watches' stores, and
//! the policy-server pods' load status), plans with [`plan`](super::plan::plan) and applies
//! the plan: the webhook only once every policy-server replica serves the policy, then the
//! status.

use std::sync::Arc;

use api_types::crd::{PolicyReloadMode, PolicyStatus};
use api_types::error_text::with_causes;
use api_types::naming::{self, labels};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::plan::{self, Observed, Plan, Serving, StatusUpdate, Webhooks};
use super::webhook::{WebhookConfiguration, desired_webhook};
use super::{Policy, load_status, policy_server_of, reachability, unique_name};
use crate::ca;
use crate::conditions;
use crate::context::{Context, apply, delete_if_exists};
use crate::error::{Error, KubeResultExt};
use crate::finalizer;

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
    let observed = observe(policy.as_ref(), &ctx, &unique).await?;
    let plan = plan::plan(policy.as_ref(), &unique, &observed);
    apply_plan(&api, policy.as_ref(), &ctx, &unique, plan).await
}

/// Reads what [`plan::plan`] decides on, as far as it can get: the PolicyServer, its
/// ConfigMap, Deployment and pods from the shared watches' stores; then, by reload mode, the
/// ReplicaSets and the load status, or each live pod's answer.
async fn observe<P: Policy>(policy: &P, ctx: &Context, unique: &str) -> Result<Observed, Error> {
    let mut observed = Observed::default();
    let ps_name = policy_server_of(policy);
    if !plan::needs_policy_server(&policy.violations(), ps_name) {
        return Ok(observed);
    }
    let stores = &ctx.stores;
    let Some(policy_server) = stores
        .policy_servers
        .listed()
        .await?
        .get(&ObjectRef::new(ps_name))
        .filter(|ps| !finalizer::is_deleting(ps.as_ref()))
    else {
        return Ok(observed);
    };
    let policy_server = Arc::unwrap_or_clone(policy_server);
    let resource = naming::policy_server_resource_name(ps_name);
    let namespace = &ctx.options.deployments_namespace;
    let config_map = stores
        .config_maps
        .listed()
        .await?
        .get(&ObjectRef::new(&resource).within(namespace));
    let deployment = stores
        .deployments
        .listed()
        .await?
        .get(&ObjectRef::new(&resource).within(namespace));
    let (Some(config_map), Some(deployment)) = (config_map, deployment) else {
        observed.policy_server = Some(policy_server);
        return Ok(observed);
    };
    let (config_map, deployment) = (
        Arc::unwrap_or_clone(config_map),
        Arc::unwrap_or_clone(deployment),
    );
    let pods: Vec<_> = stores
        .pods
        .of_policy_server(ps_name)
        .await?
        .into_iter()
        .map(Arc::unwrap_or_clone)
        .collect();
    let readiness_port = policy_server.spec.readiness_probe_port;
    observed.serving = match policy_server.spec.effective_policy_reload_mode() {
        // In place, the pods themselves say which version they serve; after a rollout, the
        // pod template they run does.
        PolicyReloadMode::Rollout => {
            let selector = format!("{}={ps_name}", labels::POLICY_SERVER);
            let replica_sets = ctx
                .namespaced::<ReplicaSet>()
                .list(&ListParams::default().labels(&selector))
                .await
                .context(|| format!("listing ReplicaSets of {resource}"))?
                .items;
            let rollout = reachability::Observed {
                config_map: &config_map,
                deployment: &deployment,
                replica_sets: &replica_sets,
                pods: &pods,
            };
            // Asked only when the answer can matter: the latest ReplicaSet serves the policy.
            let load_status = match reachability::check(unique, &rollout) {
                Ok(()) => Some(
                    ctx.load_status
                        .policy_status(ps_name, &pods, readiness_port, unique)
                        .await,
                ),
                Err(_) => None,
            };
            Serving::Rollout {
                replica_sets,
                load_status,
            }
        }
        PolicyReloadMode::InPlace => {
            Serving::InPlace(load_status::fetch_each(&plan::live_pods(&pods), readiness_port).await)
        }
    };
    observed.policy_server = Some(policy_server);
    observed.children = Some((config_map, deployment));
    observed.pods = pods;
    Ok(observed)
}

/// Publishes the plan's warning, registers or removes the webhook, writes the status. When
/// registering fails, the status says so (`PolicyActive=False`) and the reconciliation is
/// retried; a failed removal still writes the planned status.
async fn apply_plan<P: Policy>(
    api: &Api<P>,
    policy: &P,
    ctx: &Context,
    unique: &str,
    plan: Plan,
) -> Result<Action, Error> {
    if let Some(message) = plan.warning {
        ctx.warn(policy, "InvalidSpec", message).await;
    }
    let (status, changed) = match plan.webhooks {
        Webhooks::Keep => (plan.status, Ok(())),
        Webhooks::Remove => (plan.status, delete_webhooks(ctx, unique).await),
        Webhooks::Register => match register_webhook(policy, ctx, unique).await {
            Ok(()) => (plan.status, Ok(())),
            Err(error) => (
                plan.status.webhook_not_registered(&with_causes(&error)),
                Err(error),
            ),
        },
    };
    let previous = policy.policy_status().cloned().unwrap_or_default();
    write_status(api, policy, &previous, status).await?;
    changed.map(|()| plan.next)
}

async fn register_webhook<P: Policy>(policy: &P, ctx: &Context, unique: &str) -> Result<(), Error> {
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
    Ok(())
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
