//! Wires the reconcilers into kube-runtime controllers: what each one watches and how a change
//! to a watched object finds the objects to reconcile.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_types::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    PolicyServer,
};
use api_types::naming::{annotations, labels, policy_unique_name};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::backoff::watch_backoff;
use crate::ca::{self, Rotation, RotationSignal};
use crate::client_cert;
use crate::context::Context;
use crate::error::Error;
use crate::policy::{Policy, policy_server_of};
use crate::watches::SharedWatches;
use crate::{policy, policy_server};

/// How often the CA and the audit-scanner's client certificate are checked (two reads): often
/// enough that a client certificate Secret removed by an upgrade from upstream's chart, which
/// made it, is back before the next audit.
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// Runs every controller and the shared watches they react to. Watches retry for ever, so
/// this returns only if all of them end. `ctx` reads the stores of `watches`.
pub async fn run(ctx: Arc<Context>, watches: SharedWatches) {
    let rotation = Arc::new(RotationSignal::default());
    // Every subscription is taken before the shared watches start.
    let controllers = futures::future::join5(
        policy_server_controller(ctx.clone(), &watches, &rotation),
        policy_controller::<ClusterAdmissionPolicy>(ctx.clone(), &watches, &rotation),
        policy_controller::<AdmissionPolicy>(ctx.clone(), &watches, &rotation),
        policy_controller::<ClusterAdmissionPolicyGroup>(ctx.clone(), &watches, &rotation),
        policy_controller::<AdmissionPolicyGroup>(ctx.clone(), &watches, &rotation),
    );
    let namespace = ctx.options.deployments_namespace.clone();
    futures::join!(
        controllers,
        watches.run(ctx.client.clone(), &namespace),
        certificate_rotation(ctx.clone(), rotation.clone()),
    );
}

/// Runs `reconcile`, recording metrics, publishing an event on failure and keeping the
/// object's backoff.
async fn instrumented<K, F, Fut>(
    controller: &'static str,
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let started = Instant::now();
    let key = format!("{controller}/{}", ObjectRef::from_obj(object.as_ref()));
    // A trace per reconciliation; the objects it applies are its children.
    let span = tracing::info_span!(
        "reconcile",
        controller,
        object = %key,
        outcome = tracing::field::Empty,
    );
    let result = reconcile(object.clone(), ctx.clone())
        .instrument(span.clone())
        .await;
    span.record(
        "outcome",
        match &result {
            Ok(_) => "ok",
            Err(_) => "error",
        },
    );
    ctx.metrics
        .observe(controller, result.is_ok(), started.elapsed().as_secs_f64());
    match &result {
        Ok(_) => ctx.backoff.succeeded(&key),
        Err(err) => {
            ctx.warn(object.as_ref(), err.reason(), err.to_string())
                .await;
        }
    }
    result
}

fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |object, error, ctx| {
        let key = format!("{controller}/{}", ObjectRef::from_obj(object.as_ref()));
        let delay = ctx.backoff.failed(&key);
        tracing::warn!(object = %key, error = %error, retry_in = ?delay, "reconciliation failed");
        Action::requeue(delay)
    }
}

async fn log_results<K: Resource, E: Debug>(
    controller: &'static str,
    results: impl futures::Stream<Item = Result<(ObjectRef<K>, Action), E>>,
) {
    results
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(controller, %object, "reconciled"),
                Err(err) => tracing::debug!(controller, error = ?err, "reconciliation not run"),
            }
        })
        .await;
}

/// Objects that name their PolicyServer in the `kubewarden/policy-server` label.
fn labelled() -> watcher::Config {
    watcher::Config::default().labels(labels::POLICY_SERVER)
}

fn policy_server_label<K: Resource>(object: &K) -> Option<String> {
    object.labels().get(labels::POLICY_SERVER).cloned()
}

fn owning_policy_server<K: Resource>(object: K) -> Option<ObjectRef<PolicyServer>> {
    policy_server_label(&object).map(|name| ObjectRef::new(&name))
}

fn bound_policy_server<P: Policy>(policy: P) -> Option<ObjectRef<PolicyServer>> {
    Some(ObjectRef::new(policy_server_of(&policy)))
}

/// Builds the PolicyServer controller now (taking its subscriptions) and returns it running.
fn policy_server_controller(
    ctx: Arc<Context>,
    watches: &SharedWatches,
    rotation: &RotationSignal,
) -> impl Future<Output = ()> + use<> {
    let client = ctx.client.clone();
    let ns = ctx.options.deployments_namespace.clone();
    let controller = Controller::for_stream(
        watches.policy_servers.subscribe(),
        watches.policy_servers.main_store(),
    )
    .watches_stream(watches.deployments.subscribe(), owning_policy_server)
    .watches(
        Api::<Service>::namespaced(client.clone(), &ns),
        labelled(),
        owning_policy_server,
    )
    .watches_stream(watches.config_maps.subscribe(), owning_policy_server)
    .watches(
        Api::<Secret>::namespaced(client.clone(), &ns),
        labelled(),
        owning_policy_server,
    )
    .watches(
        Api::<PodDisruptionBudget>::namespaced(client, &ns),
        labelled(),
        owning_policy_server,
    )
    .watches_stream(watches.pods.subscribe(), owning_policy_server)
    .watches_stream(
        watches.cluster_admission_policies.subscribe(),
        bound_policy_server,
    )
    .watches_stream(watches.admission_policies.subscribe(), bound_policy_server)
    .watches_stream(
        watches.cluster_admission_policy_groups.subscribe(),
        bound_policy_server,
    )
    .watches_stream(
        watches.admission_policy_groups.subscribe(),
        bound_policy_server,
    )
    .trigger_backoff(watch_backoff())
    .reconcile_all_on(rotation.subscribe());
    let name = policy_server::reconcile::CONTROLLER_NAME;
    let results = controller.run(
        move |ps, ctx| instrumented(name, ps, ctx, policy_server::reconcile::reconcile),
        error_policy(name),
        ctx,
    );
    log_results(name, results)
}

fn bound_policies<P: Policy>(store: &Store<P>, policy_server: &str) -> Vec<ObjectRef<P>> {
    store
        .state()
        .iter()
        .filter(|p| policy_server_of(p.as_ref()) == policy_server)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Maps an object labelled with its PolicyServer (a pod, the ConfigMap) to the policies bound
/// to that PolicyServer.
fn bound_by_label<P: Policy, K: Resource>(store: Store<P>) -> impl Fn(K) -> Vec<ObjectRef<P>> {
    move |object| {
        policy_server_label(&object)
            .map(|ps| bound_policies(&store, &ps))
            .unwrap_or_default()
    }
}

/// The policy a generated webhook configuration belongs to, if it is of kind `P`.
fn webhook_policy<P: Policy, W: Resource>(webhook: &W) -> Option<ObjectRef<P>> {
    let name = webhook.annotations().get(annotations::POLICY_NAME)?;
    let namespace = webhook.annotations().get(annotations::POLICY_NAMESPACE);
    let unique = policy_unique_name(P::KIND, namespace.map(String::as_str).unwrap_or(""), name);
    if webhook.name_any() != unique {
        return None;
    }
    let reference = ObjectRef::new(name);
    Some(match namespace {
        Some(namespace) if P::KIND.is_namespaced() => reference.within(namespace),
        _ => reference,
    })
}

fn controller_name<P: Policy>() -> &'static str {
    P::KIND.as_str()
}

/// Builds the controller of policy kind `P` now (taking its subscriptions) and returns it
/// running.
fn policy_controller<P: Policy>(
    ctx: Arc<Context>,
    watches: &SharedWatches,
    rotation: &RotationSignal,
) -> impl Future<Output = ()> + use<P> {
    let shared = P::shared(watches);
    let store = shared.main_store();
    let by_policy_server = {
        let store = store.clone();
        move |ps: PolicyServer| bound_policies(&store, &ps.name_any())
    };
    let controller = Controller::for_stream(shared.subscribe(), store.clone())
        .watches_stream(watches.pods.subscribe(), bound_by_label(store.clone()))
        .watches_stream(watches.config_maps.subscribe(), bound_by_label(store))
        .watches_stream(watches.policy_servers.subscribe(), by_policy_server)
        .watches_stream(watches.validating_webhooks.subscribe(), |w| {
            webhook_policy::<P, _>(&w)
        })
        .watches_stream(watches.mutating_webhooks.subscribe(), |w| {
            webhook_policy::<P, _>(&w)
        })
        .trigger_backoff(watch_backoff())
        .reconcile_all_on(rotation.subscribe());
    let name = controller_name::<P>();
    let results = controller.run(
        move |p, ctx| instrumented(name, p, ctx, policy::reconcile::reconcile::<P>),
        error_policy(name),
        ctx,
    );
    log_results(name, results)
}

/// Checks the CA and the audit-scanner's client certificate now and then every
/// [`CERT_CHECK_INTERVAL`]; a CA rotation makes every controller reconcile everything,
/// re-issuing certificates and rewriting caBundles.
async fn certificate_rotation(ctx: Arc<Context>, rotation: Arc<RotationSignal>) {
    loop {
        let now = OffsetDateTime::now_utc();
        match ca::rotate_if_needed(&ctx, now).await {
            Ok(Rotation::Unchanged) => {}
            Ok(outcome) => {
                tracing::info!(
                    ?outcome,
                    "CA changed; re-issuing certificates and caBundles"
                );
                rotation.notify();
            }
            Err(err) => tracing::warn!(error = %err, "cannot check the CA"),
        }
        if let Err(err) = client_cert::ensure(&ctx, now).await {
            tracing::warn!(error = %err, "cannot check the audit-scanner's client certificate");
        }
        tokio::time::sleep(CERT_CHECK_INTERVAL).await;
    }
}
