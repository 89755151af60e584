//! Reconciles one PolicyServer: applies its children in order, reports each step as a status
//! condition, and on deletion waits until no webhook points at it any more.

use std::sync::Arc;
use std::time::Duration;

use api_types::config::short_digest;
use api_types::crd::{PolicyReloadMode, PolicyServer};
use api_types::naming::{self, annotations, labels};
use api_types::validation::{self, Violation};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use time::OffsetDateTime;

use super::bound;
use super::desired;
use super::host_ports;
use crate::ca;
use crate::certs::IssuedCertificate;
use crate::conditions::{self, NewCondition};
use crate::context::{Context, apply, delete_if_exists};
use crate::error::{Error, KubeResultExt};
use crate::finalizer;

pub const CONTROLLER_NAME: &str = "policyserver";

/// Condition types, as upstream names them (plus `SpecValid` and the host-port condition).
pub mod condition {
    pub const SPEC_VALID: &str = "SpecValid";
    pub const CERT_SECRET: &str = "CertSecretReconciled";
    pub const CONFIG_MAP: &str = "ConfigMapReconciled";
    pub const DEPLOYMENT: &str = "DeploymentReconciled";
    pub const SERVICE: &str = "ServiceReconciled";
    pub const PDB: &str = "PodDisruptionBudgetReconciled";
    pub const WEBHOOKS_CLEANED_UP: &str = "PolicyWebhooksCleanedUp";
    /// Ours: whether the Deployment's ReplicaSet can create its pods (Pod Security admission,
    /// quotas and admission webhooks refuse them where nobody looks otherwise).
    pub const PODS_CREATED: &str = "PodsCreated";
}

pub const REASON_SUCCEEDED: &str = "ReconciliationSucceeded";
pub const REASON_FAILED: &str = "ReconciliationFailed";
pub const REASON_INVALID: &str = "InvalidSpec";

/// How often a healthy PolicyServer is looked at again, to renew certificates ahead of expiry.
const RESYNC: Duration = Duration::from_secs(3600);
/// How often a deleting PolicyServer checks whether its policies' webhooks are gone.
const CLEANUP_POLL: Duration = Duration::from_secs(2);

pub async fn reconcile(ps: Arc<PolicyServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<PolicyServer> = ctx.cluster();
    if finalizer::is_deleting(ps.as_ref()) {
        return finalize(&ps, &ctx, &api).await;
    }
    if finalizer::ensure(&api, ps.as_ref()).await? {
        // The patch triggers another reconciliation with the finalizer in place.
        return Ok(Action::await_change());
    }

    let mut report = Vec::new();
    let violations = spec_violations(&ps, &ctx).await?;
    if !violations.is_empty() {
        let message = validation::describe(&violations);
        ctx.warn(ps.as_ref(), REASON_INVALID, message.clone()).await;
        report.push(NewCondition::new(
            condition::SPEC_VALID,
            false,
            REASON_INVALID,
            message,
        ));
        write_status(&api, &ps, report, &[]).await?;
        return Ok(Action::await_change());
    }
    report.push(NewCondition::new(
        condition::SPEC_VALID,
        true,
        "SpecAccepted",
        "the spec is valid",
    ));

    let outcome = reconcile_children(&ps, &ctx, &mut report).await;
    let stale = if ctx.options.host_network {
        report.push(host_port_condition(&ps, &ctx).await?);
        vec![]
    } else {
        vec![host_ports::CONDITION]
    };
    write_status(&api, &ps, report, &stale).await?;
    outcome.map(|()| Action::requeue(RESYNC))
}

/// Checks the CRD schema cannot express, and that referenced objects exist.
async fn spec_violations(ps: &PolicyServer, ctx: &Context) -> Result<Vec<Violation>, Error> {
    let mut violations = validation::validate_policy_server(&ps.name_any(), &ps.spec);
    if let Some(secret_name) = &ps.spec.image_pull_secret {
        let secret = ctx
            .namespaced::<Secret>()
            .get_opt(secret_name)
            .await
            .context(|| format!("reading Secret {secret_name}"))?;
        let problem = match secret {
            None => Some(format!(
                "Secret {secret_name} does not exist in namespace {}",
                ctx.options.deployments_namespace
            )),
            Some(s) if s.type_.as_deref() != Some("kubernetes.io/dockerconfigjson") => Some(
                format!("Secret {secret_name} must be of type kubernetes.io/dockerconfigjson"),
            ),
            Some(_) => None,
        };
        violations.extend(problem.map(|message| Violation {
            field: "spec.imagePullSecret".to_string(),
            message,
        }));
    }
    Ok(violations)
}

/// Runs one step, recording its condition; the first failure stops the sequence.
fn record<T>(
    report: &mut Vec<NewCondition>,
    type_: &'static str,
    result: Result<T, Error>,
) -> Result<T, Error> {
    let condition = match &result {
        Ok(_) => NewCondition::new(type_, true, REASON_SUCCEEDED, ""),
        Err(err) => NewCondition::new(type_, false, REASON_FAILED, err.to_string()),
    };
    report.push(condition);
    result
}

async fn reconcile_children(
    ps: &PolicyServer,
    ctx: &Context,
    report: &mut Vec<NewCondition>,
) -> Result<(), Error> {
    let options = ctx.options.as_ref();
    let result = reconcile_secret(ps, ctx).await;
    record(report, condition::CERT_SECRET, result)?;

    let capabilities = ps.spec.effective_namespaced_policies_capabilities();
    let result = async {
        let bound = bound::list(ctx, &ps.name_any(), &capabilities).await?;
        let config_map = desired::desired_config_map(ps, options, &bound::policies_config(&bound));
        apply(&ctx.namespaced::<ConfigMap>(), &config_map).await
    }
    .await;
    let config_map = record(report, condition::CONFIG_MAP, result)?;
    let config_version = desired::config_version(ps, &config_map);

    let result = match desired::desired_pdb(ps, options) {
        Some(pdb) => apply(&ctx.namespaced::<PodDisruptionBudget>(), &pdb)
            .await
            .map(|_| ()),
        None => delete_if_exists(
            &ctx.namespaced::<PodDisruptionBudget>(),
            &desired::resource_name(ps),
        )
        .await
        .map(|_| ()),
    };
    record(report, condition::PDB, result)?;

    let deployment = desired::desired_deployment(ps, options, &config_version);
    let result = apply(&ctx.namespaced::<Deployment>(), &deployment).await;
    let deployment = record(report, condition::DEPLOYMENT, result)?;
    report.push(pods_created_condition(&deployment));

    let service = desired::desired_service(ps, options);
    let result = apply(&ctx.namespaced::<Service>(), &service).await;
    record(report, condition::SERVICE, result)?;
    if ps.spec.effective_policy_reload_mode() == PolicyReloadMode::InPlace {
        prompt_pods_to_reload(ps, ctx, &config_map).await;
    }
    Ok(())
}

/// In place: writes the digest of the policies each running pod should serve on the pod. The
/// update makes the pod's kubelet refresh the mounted ConfigMap at once, where it would
/// otherwise wait for its periodic sync (a minute by default). Failing only delays the
/// reload, so it is logged, not reported.
async fn prompt_pods_to_reload(ps: &PolicyServer, ctx: &Context, config_map: &ConfigMap) {
    let digest = short_digest(desired::config_map_entry(
        config_map,
        naming::POLICIES_CONFIG_KEY,
    ));
    let listed = match ctx.stores.pods.of_policy_server(&ps.name_any()).await {
        Ok(listed) => listed,
        Err(error) => {
            tracing::warn!(policy_server = %ps.name_any(), %error, "cannot read the pods to prompt their reload");
            return;
        }
    };
    let pods = ctx.namespaced::<Pod>();
    for pod in listed {
        if pod.metadata.deletion_timestamp.is_some()
            || pod.annotations().get(annotations::POLICIES_DIGEST) == Some(&digest)
        {
            continue;
        }
        let patch = json!({"metadata": {"annotations": {annotations::POLICIES_DIGEST: digest}}});
        if let Err(error) = pods
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(pod = %pod.name_any(), %error, "cannot prompt the pod to reload its policies");
        }
    }
}

/// `PodsCreated` from the Deployment's `ReplicaFailure` condition, which the Deployment
/// controller copies from the ReplicaSet with the apiserver's refusal (for example `pods
/// "policy-server-default-…" is forbidden: violates PodSecurity "restricted:latest": host
/// namespaces (hostNetwork=true)…`).
pub fn pods_created_condition(deployment: &Deployment) -> NewCondition {
    let failure = deployment
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        });
    match failure {
        Some(failure) => NewCondition::new(
            condition::PODS_CREATED,
            false,
            REASON_PODS_REFUSED,
            failure
                .message
                .clone()
                .unwrap_or_else(|| "the ReplicaSet cannot create pods".to_string()),
        ),
        None => NewCondition::new(
            condition::PODS_CREATED,
            true,
            REASON_SUCCEEDED,
            "the Deployment's pods are created",
        ),
    }
}

pub const REASON_PODS_REFUSED: &str = "FailedCreate";

/// Keeps the serving certificate while it is sound, issues a new one otherwise.
async fn reconcile_secret(ps: &PolicyServer, ctx: &Context) -> Result<(), Error> {
    let ca = ca::ensure(ctx).await?;
    let secrets = ctx.namespaced::<Secret>();
    let name = desired::resource_name(ps);
    let dns_name = desired::service_dns_name(ps, &ctx.options);
    let now = OffsetDateTime::now_utc();
    let existing = secrets
        .get_opt(&name)
        .await
        .context(|| format!("reading Secret {name}"))?;
    let current_format = existing.as_ref().is_some_and(|s| {
        s.annotations()
            .get(annotations::CERT_FORMAT_VERSION)
            .map(String::as_str)
            == Some(annotations::CERT_FORMAT_VERSION_VALUE)
    });
    let reusable = existing
        .as_ref()
        .and_then(IssuedCertificate::from_secret)
        .filter(|_| current_format)
        .and_then(|cert| {
            match ca.authority.server_certificate_problem(&cert, &dns_name, now) {
                None => Some(cert),
                Some(problem) => {
                    tracing::info!(secret = %name, %problem, "issuing a new policy-server certificate");
                    None
                }
            }
        });
    let cert = match reusable {
        Some(cert) => cert,
        None => ca.authority.issue_server_certificate(&dns_name, now)?,
    };
    apply(&secrets, &desired::desired_secret(ps, &ctx.options, &cert)).await?;
    Ok(())
}

async fn host_port_condition(ps: &PolicyServer, ctx: &Context) -> Result<NewCondition, Error> {
    let options = ctx.options.as_ref();
    if let Some(message) = host_ports::controller_port_clash(ps, options) {
        return Ok(NewCondition::new(
            host_ports::CONDITION,
            false,
            host_ports::REASON_CONTROLLER_PORT,
            message,
        ));
    }
    let pods = ctx
        .namespaced::<Pod>()
        .list(&ListParams::default())
        .await
        .context(|| "listing pods".to_string())?
        .items;
    let (own, neighbours): (Vec<Pod>, Vec<Pod>) = pods
        .into_iter()
        .partition(|pod| pod.labels().get(labels::POLICY_SERVER) == Some(&ps.name_any()));
    Ok(
        match host_ports::pending_pod_conflicts(ps, options, &own, &neighbours) {
            Some(message) => NewCondition::new(
                host_ports::CONDITION,
                false,
                host_ports::REASON_POD_PENDING,
                message,
            ),
            None => NewCondition::new(
                host_ports::CONDITION,
                true,
                host_ports::REASON_FREE,
                "no policy-server pod is waiting for a host port",
            ),
        },
    )
}

/// Merges `report` into the stored conditions and patches the status when it changed.
async fn write_status(
    api: &Api<PolicyServer>,
    ps: &PolicyServer,
    report: Vec<NewCondition>,
    remove: &[&str],
) -> Result<Option<PolicyServer>, Error> {
    let old: Vec<Condition> = ps
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut new = old.clone();
    let now = conditions::now();
    for condition in report {
        conditions::set(&mut new, condition, ps.metadata.generation, &now);
    }
    for type_ in remove {
        conditions::remove(&mut new, type_);
    }
    if new == old {
        return Ok(None);
    }
    let patched = api
        .patch_status(
            &ps.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": new}})),
        )
        .await
        .context(|| format!("updating the status of PolicyServer {}", ps.name_any()))?;
    Ok(Some(patched))
}

/// Deletion: wait until no bound policy has a webhook configuration (the policy reconcilers
/// remove them once they see the PolicyServer going), then release the finalizer. The children
/// go with the PolicyServer through their owner references.
async fn finalize(
    ps: &PolicyServer,
    ctx: &Context,
    api: &Api<PolicyServer>,
) -> Result<Action, Error> {
    let bound = bound::list(ctx, &ps.name_any(), &[]).await?;
    let validating: Api<ValidatingWebhookConfiguration> = ctx.cluster();
    let mutating: Api<MutatingWebhookConfiguration> = ctx.cluster();
    let mut remaining = Vec::new();
    for policy in &bound {
        let name = &policy.unique_name;
        let exists = validating
            .get_opt(name)
            .await
            .context(|| format!("reading ValidatingWebhookConfiguration {name}"))?
            .is_some()
            || mutating
                .get_opt(name)
                .await
                .context(|| format!("reading MutatingWebhookConfiguration {name}"))?
                .is_some();
        if exists {
            remaining.push(name.clone());
        }
    }
    if !remaining.is_empty() {
        let message = format!(
            "Waiting for webhook cleanup of policies: {}",
            remaining.join(", ")
        );
        let condition = NewCondition::new(
            condition::WEBHOOKS_CLEANED_UP,
            false,
            "WebhooksStillPresent",
            message,
        );
        write_status(api, ps, vec![condition], &[]).await?;
        return Ok(Action::requeue(CLEANUP_POLL));
    }
    let condition = NewCondition::new(
        condition::WEBHOOKS_CLEANED_UP,
        true,
        REASON_SUCCEEDED,
        "no policy webhook points at this PolicyServer",
    );
    // The object may vanish as soon as the finalizer goes, so the status comes first.
    let patched = write_status(api, ps, vec![condition], &[]).await?;
    finalizer::release(api, patched.as_ref().unwrap_or(ps)).await?;
    Ok(Action::await_change())
}
