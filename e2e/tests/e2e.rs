//! The whole journey, run by `cargo xtask e2e`: policies enforced through the real apiserver by
//! the controller and policy-servers, monitor mode, mutation, namespaced policies, settings
//! roll-outs, deletion, audit reports, in-place policy reloading, and the host network scenarios
//! of the seeds.
//!
//! One test, scenarios in order: they share the stack the first steps bring up.

use std::collections::BTreeMap;
use std::time::Duration;

use api_types::crd::{
    AdmissionPolicy, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup, PolicyServer,
};
use api_types::reports::{ResultOutcome, openreports};
use e2e::{LocalPolicyServers, Mode, NAMESPACE, Processes, fixture_module, start_controller};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use test_cluster::{TestCluster, unique_name, wait_until};

mod in_place;

const WAIT: Duration = Duration::from_secs(120);
/// Label on everything the scenarios create cluster-wide, to clean up after a failed run.
const E2E_LABEL: &str = "kubewarden-rs/e2e";

fn step(text: &str) {
    println!("==> {text}");
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

fn pod(name: &str, labels: Value) -> Pod {
    object(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}
    }))
}

/// Creates a pod, retrying while the webhook is not reachable yet; returns the apiserver's
/// answer once the policy decided (admitted, or refused with `expected_refusal`).
/// The condition of `type_` on an object's status, or `null`.
fn status_condition(object: &Value, type_: &str) -> Value {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_default()
}

async fn create_pod_until(
    api: &Api<Pod>,
    labels: Value,
    expected_refusal: Option<&str>,
) -> Option<Pod> {
    let created = std::sync::Arc::new(std::sync::Mutex::new(None));
    let what = match expected_refusal {
        Some(message) => format!("a pod labelled {labels} refused with {message:?}"),
        None => format!("a pod labelled {labels} admitted"),
    };
    wait_until(&what, WAIT, || {
        let labels = labels.clone();
        let created = created.clone();
        async move {
            let name = unique_name("pod");
            match (
                api.create(&PostParams::default(), &pod(&name, labels))
                    .await,
                expected_refusal,
            ) {
                (Ok(pod), None) => {
                    if let Ok(mut slot) = created.lock() {
                        *slot = Some(pod);
                    }
                    Ok(true)
                }
                (Err(kube::Error::Api(status)), Some(message))
                    if status.message.contains(message) =>
                {
                    Ok(true)
                }
                (Ok(_), Some(_)) => Ok(false),
                (Err(err), _) => Err(err.into()),
            }
        }
    })
    .await
    .expect(&what);
    created.lock().ok().and_then(|mut slot| slot.take())
}

fn cluster_policy(
    name: &str,
    module: &str,
    settings: Value,
    namespace: &str,
    extra: Value,
) -> ClusterAdmissionPolicy {
    let mut spec = json!({
        "module": module,
        "settings": settings,
        "mutating": false,
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "failurePolicy": "Fail",
    });
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    object(json!({
        "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
        "metadata": {"name": name, "labels": {E2E_LABEL: "true"}},
        "spec": spec,
    }))
}

async fn wait_active<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + serde::Serialize,
{
    wait_until(&format!("{name} active"), WAIT, || async {
        let policy = serde_json::to_value(api.get(name).await?)?;
        Ok(policy["status"]["policyStatus"] == "active")
    })
    .await
    .expect("policy active");
}

fn policy_server(name: &str, spec: Value) -> PolicyServer {
    let mut full = json!({"image": e2e::policy_server_image(), "replicas": 1});
    // With pods the test policies come from the fixture server, over HTTP.
    if let Some(host) = e2e::fixture_base().and_then(|b| {
        b.split("://")
            .nth(1)
            .map(|h| h.trim_end_matches('/').to_string())
    }) {
        full["insecureSources"] = json!([host]);
    }
    if let (Some(full), Value::Object(spec)) = (full.as_object_mut(), spec) {
        full.extend(spec);
    }
    object(json!({
        "apiVersion": "policies.kubewarden.io/v1", "kind": "PolicyServer",
        "metadata": {"name": name, "labels": {E2E_LABEL: "true"}},
        "spec": full,
    }))
}

fn on_node(node: &str) -> Value {
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}})
}

/// The Pod Security admission label that enforces a level on a namespace.
const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// Removes the restricted level a host network scenario puts on the stack's namespace.
async fn allow_host_network(cluster: &TestCluster) {
    let namespaces = cluster.cluster_wide::<Namespace>();
    let _ = namespaces
        .patch(
            NAMESPACE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {PSA_ENFORCE: null}}})),
        )
        .await;
}

async fn remove_leftovers(cluster: &TestCluster) {
    allow_host_network(cluster).await;
    let selector = ListParams::default().labels(E2E_LABEL);
    let policies = cluster.cluster_wide::<ClusterAdmissionPolicy>();
    let servers = cluster.cluster_wide::<PolicyServer>();
    let _ = policies
        .delete_collection(&DeleteParams::default(), &selector)
        .await;
    let groups = cluster.cluster_wide::<ClusterAdmissionPolicyGroup>();
    let _ = groups
        .delete_collection(&DeleteParams::default(), &selector)
        .await;
    let _ = servers
        .delete_collection(&DeleteParams::default(), &selector)
        .await;
    wait_until("leftovers of earlier runs removed", WAIT, || async {
        Ok(policies.list(&selector).await?.items.is_empty()
            && groups.list(&selector).await?.items.is_empty()
            && servers.list(&selector).await?.items.is_empty())
    })
    .await
    .expect("leftovers removed");
}

async fn ensure_stack_namespace(cluster: &TestCluster) {
    let namespaces = cluster.cluster_wide::<Namespace>();
    if namespaces.get_opt(NAMESPACE).await.expect("get").is_none() {
        let ns: Namespace = object(json!({"metadata": {"name": NAMESPACE}}));
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
    }
}

#[tokio::test]
async fn the_whole_journey() {
    let Some(mode) = Mode::from_env() else {
        eprintln!("skipped: run through `cargo xtask e2e`");
        return;
    };
    let Some(apps) = TestCluster::connect("e2e-apps").await else {
        return;
    };
    let Some(other) = TestCluster::connect("e2e-other").await else {
        return;
    };
    let logs = e2e::log_dir();

    // The stack.
    let mut processes = Processes::default();
    let mut runner = None;
    if mode == Mode::Local {
        step("starting the controller (host network mode) and the local policy-server runner");
        ensure_stack_namespace(&apps).await;
        processes.push(start_controller(&logs, true).expect("controller starts"));
        runner = Some(
            LocalPolicyServers::new(apps.client.clone(), logs.clone())
                .expect("the policy-server binary")
                .spawn(),
        );
    }
    remove_leftovers(&apps).await;
    let servers = apps.cluster_wide::<PolicyServer>();
    // Fixed name: `cargo xtask e2e` maps its Service name to this host for the audit-scanner.
    let default_ps = "default".to_string();
    // Local mode pins it to one fake node for the host network scenarios. Applied, not
    // created: on kind the defaults chart may already have made a `default` PolicyServer.
    let placement = match mode {
        Mode::Local => json!({"affinity": on_node("kwok-node-0")}),
        Mode::Kind | Mode::RealNode => json!({}),
    };
    let mut default_server = policy_server(&default_ps, placement);
    if mode.runs_in_pods() {
        // The defaults chart owns it: the clean-up of the scenarios' objects must leave it.
        default_server.metadata.labels = None;
    }
    servers
        .patch(
            &default_ps,
            &PatchParams::apply("kubewarden-rs-e2e").force(),
            &Patch::Apply(&default_server),
        )
        .await
        .expect("PolicyServer");

    let ns = apps.namespace.clone();
    let pods = apps.namespaced::<Pod>();
    let policies = apps.cluster_wide::<ClusterAdmissionPolicy>();
    let with_server = |mut policy: ClusterAdmissionPolicy| {
        policy.spec.common.policy_server = default_ps.clone();
        policy
    };

    step("a policy rejecting a pod is enforced through the apiserver");
    let reject = unique_name("e2e-reject");
    let reject_by_label = fixture_module("reject-by-label");
    policies
        .create(
            &PostParams::default(),
            &with_server(cluster_policy(
                &reject,
                &reject_by_label,
                json!({"denied_labels": ["e2e-denied"]}),
                &ns,
                json!({}),
            )),
        )
        .await
        .expect("policy");
    wait_active(&policies, &reject).await;
    create_pod_until(
        &pods,
        json!({"e2e-denied": "yes"}),
        Some("label e2e-denied is not allowed"),
    )
    .await;
    create_pod_until(&pods, json!({"app": "fine"}), None).await;
    if e2e::mtls_mode() {
        // The verdicts above came through the apiserver's webhook client certificate.
        mutual_tls(&apps, &default_ps).await;
    }

    step("a policy that cannot load says so on its status");
    let unloadable = [
        (
            unique_name("e2e-bad-settings"),
            reject_by_label.clone(),
            "SettingsInvalid",
        ),
        (
            unique_name("e2e-bad-module"),
            fixture_module("does-not-exist"),
            "ModuleUnavailable",
        ),
    ];
    for (name, module, _) in &unloadable {
        // Bound to a namespace that does not exist: their code-500 answers reach no request.
        policies
            .create(
                &PostParams::default(),
                &with_server(cluster_policy(
                    name,
                    module,
                    json!({"denied_labels": 3}),
                    "e2e-nowhere",
                    json!({}),
                )),
            )
            .await
            .expect("policy");
    }
    for (name, _, reason) in &unloadable {
        wait_until(&format!("{name} in error, {reason}"), WAIT, || async {
            let policy = serde_json::to_value(policies.get(name).await?)?;
            let loaded = status_condition(&policy, "PolicyLoaded");
            Ok(policy["status"]["policyStatus"] == "error"
                && loaded["status"] == "False"
                && loaded["reason"] == *reason)
        })
        .await
        .expect("the load failure on the policy's status");
    }
    for (name, _, _) in &unloadable {
        policies
            .delete(name, &DeleteParams::default())
            .await
            .expect("deleted");
    }

    step("a Gatekeeper policy answering an object admits, as upstream, and says so");
    // The required-labels template built with its package as the entrypoint: its result is
    // an object holding the violations, which upstream's policy-server reads as none.
    let unread = unique_name("e2e-gatekeeper-package");
    policies
        .create(
            &PostParams::default(),
            &with_server(cluster_policy(
                &unread,
                &fixture_module("gatekeeper-required-labels-package"),
                json!({"labels": [{"key": "e2e-owner"}]}),
                &ns,
                json!({}),
            )),
        )
        .await
        .expect("policy");
    wait_active(&policies, &unread).await;
    wait_until(
        &format!("{unread}: PolicyResultUnderstood=False"),
        WAIT,
        || async {
            let policy = serde_json::to_value(policies.get(&unread).await?)?;
            let understood = status_condition(&policy, "PolicyResultUnderstood");
            Ok(policy["status"]["policyStatus"] == "active"
                && understood["status"] == "False"
                && understood["reason"] == "GatekeeperResultNotAList"
                && understood["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("members [violation]")))
        },
    )
    .await
    .expect("the result shape on the policy's status");
    create_pod_until(&pods, json!({"app": "no-owner"}), None).await;
    policies
        .delete(&unread, &DeleteParams::default())
        .await
        .expect("deleted");

    step("monitor mode lets the request through and logs the decision");
    let monitor = unique_name("e2e-monitor");
    policies
        .create(
            &PostParams::default(),
            &with_server(cluster_policy(
                &monitor,
                &reject_by_label,
                json!({"denied_labels": ["e2e-monitored"]}),
                &ns,
                json!({"mode": "monitor"}),
            )),
        )
        .await
        .expect("policy");
    wait_active(&policies, &monitor).await;
    let monitored = create_pod_until(&pods, json!({"e2e-monitored": "yes"}), None)
        .await
        .expect("admitted");
    if mode == Mode::Local {
        let log = logs.join(format!("policy-server-{default_ps}.log"));
        wait_until(
            "the monitor decision in the policy-server log",
            WAIT,
            || async {
                Ok(std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("monitor mode"))
            },
        )
        .await
        .expect("logged");
    }

    step("a mutating policy changes the created object");
    let mutate = unique_name("e2e-mutate");
    policies
        .create(
            &PostParams::default(),
            &with_server(cluster_policy(
                &mutate,
                &fixture_module("mutate-add-label"),
                Value::Null,
                &ns,
                json!({"mutating": true, "objectSelector": {"matchLabels": {"e2e-mutate": "yes"}}}),
            )),
        )
        .await
        .expect("policy");
    wait_active(&policies, &mutate).await;
    wait_until(
        "the created pod carries the label the policy adds",
        WAIT,
        || async {
            let created = pods
                .create(
                    &PostParams::default(),
                    &pod(&unique_name("mutated"), json!({"e2e-mutate": "yes"})),
                )
                .await?;
            Ok(created
                .labels()
                .get("kubewarden.io/mutated")
                .map(String::as_str)
                == Some("true"))
        },
    )
    .await
    .expect("mutated");

    step("an AdmissionPolicy only affects its own namespace");
    let other_pods = other.namespaced::<Pod>();
    let admission = other.namespaced::<AdmissionPolicy>();
    let ap = unique_name("e2e-ap");
    let ap_object: AdmissionPolicy = object(json!({
        "apiVersion": "policies.kubewarden.io/v1", "kind": "AdmissionPolicy",
        "metadata": {"name": ap},
        "spec": {"policyServer": default_ps, "module": reject_by_label, "settings": {"denied_labels": ["e2e-ap-denied"]}, "mutating": false,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}]}
    }));
    admission
        .create(&PostParams::default(), &ap_object)
        .await
        .expect("AdmissionPolicy");
    wait_active(&admission, &ap).await;
    create_pod_until(
        &other_pods,
        json!({"e2e-ap-denied": "yes"}),
        Some("label e2e-ap-denied is not allowed"),
    )
    .await;
    create_pod_until(&pods, json!({"e2e-ap-denied": "yes"}), None).await;

    step("new settings roll the PolicyServer and the new verdict applies");
    let edited = std::time::Instant::now();
    policies
        .patch(
            &reject,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"settings": {"denied_labels": ["e2e-denied-2"]}}})),
        )
        .await
        .expect("settings changed");
    create_pod_until(
        &pods,
        json!({"e2e-denied-2": "yes"}),
        Some("label e2e-denied-2 is not allowed"),
    )
    .await;
    println!(
        "    the new verdict after {:.1} s (rollout)",
        edited.elapsed().as_secs_f64()
    );
    create_pod_until(&pods, json!({"e2e-denied": "yes"}), None).await;

    step("deleting the policy removes enforcement");
    policies
        .delete(&reject, &DeleteParams::default())
        .await
        .expect("deleted");
    wait_until("policy gone", WAIT, || async {
        Ok(policies.get_opt(&reject).await?.is_none())
    })
    .await
    .expect("finalizer released");
    create_pod_until(&pods, json!({"e2e-denied-2": "yes"}), None).await;

    step("a ClusterAdmissionPolicyGroup combines two policies with its expression");
    let group = unique_name("e2e-group");
    let groups = apps.cluster_wide::<ClusterAdmissionPolicyGroup>();
    let group_object: ClusterAdmissionPolicyGroup = object(json!({
        "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicyGroup",
        "metadata": {"name": group, "labels": {E2E_LABEL: "true"}},
        "spec": {
            "policyServer": default_ps,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "failurePolicy": "Fail",
            "expression": "allowed() && no_team_x()",
            "message": "the group refuses pods of team x",
            "policies": {
                "allowed": {"module": fixture_module("accept-all")},
                "no_team_x": {"module": reject_by_label, "settings": {"denied_labels": ["e2e-team-x"]}},
            },
        }
    }));
    groups
        .create(&PostParams::default(), &group_object)
        .await
        .expect("group");
    wait_active(&groups, &group).await;
    create_pod_until(
        &pods,
        json!({"e2e-team-x": "yes"}),
        Some("the group refuses pods of team x"),
    )
    .await;
    create_pod_until(&pods, json!({"e2e-team": "y"}), None).await;
    groups
        .delete(&group, &DeleteParams::default())
        .await
        .expect("group deleted");
    wait_until("group gone", WAIT, || async {
        Ok(groups.get_opt(&group).await?.is_none())
    })
    .await
    .expect("finalizer released");

    step("the audit-scanner reports on pods that already exist");
    match mode {
        Mode::Local => audit(&apps, &default_ps, &monitor, &monitored).await,
        Mode::Kind | Mode::RealNode => {
            // The group's removal rolls the PolicyServer; the audit must meet the new pods only.
            // The group's finalizer is released before the controller rewrites the ConfigMap,
            // so "rolled out" must be of a configuration without the group.
            wait_rolled_out(&apps, &default_ps, &group).await;
            audit_with_cronjob(&apps, &monitor, &monitored).await
        }
    }

    // Once: the real node's second pass (host network) changes nothing for it.
    if !e2e::host_network_mode() {
        in_place::in_place_reload(&apps, &logs).await;
    }

    match mode {
        Mode::Local => host_network(&apps, &default_ps, "kwok-node-0", true).await,
        // One real node: its ports are really bound, replicas cannot spread.
        Mode::RealNode if e2e::host_network_mode() => {
            host_network(&apps, &default_ps, &real_node(&apps).await, false).await
        }
        Mode::RealNode | Mode::Kind => {}
    }

    step("cleaning up");
    for name in [&monitor, &mutate] {
        let _ = policies.delete(name, &DeleteParams::default()).await;
    }
    let _ = admission.delete(&ap, &DeleteParams::default()).await;
    remove_leftovers(&apps).await;
    if let Some(runner) = runner {
        runner.abort();
    }
    drop(processes);
    other.cleanup().await;
    apps.cleanup().await;
}

/// Waits until the PolicyServer's ConfigMap no longer serves `removed` (a deleted policy's
/// name), its pod template carries that ConfigMap, every pod runs that template and is ready,
/// no pod of an older one is left, and the Service's endpoints are exactly those pods.
async fn wait_rolled_out(cluster: &TestCluster, policy_server: &str, removed: &str) {
    use api_types::naming::labels::CONFIG_VERSION;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let endpoint_slices: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let name = format!("policy-server-{policy_server}");
    wait_until(&format!("{name} rolled out"), WAIT, || async {
        let config_map = config_maps.get(&name).await?;
        let served = config_map
            .data
            .as_ref()
            .and_then(|d| d.get(api_types::naming::POLICIES_CONFIG_KEY))
            .is_some_and(|policies| policies.contains(removed));
        if served {
            return Ok(false);
        }
        let config = config_map.resource_version();
        let deployment = deployments.get(&name).await?;
        let template_config = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(CONFIG_VERSION))
            .cloned();
        if template_config != config {
            return Ok(false);
        }
        let wanted = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let generation = deployment.metadata.generation;
        let deployment_done = deployment.status.is_some_and(|status| {
            status.observed_generation == generation
                && status.updated_replicas == Some(wanted)
                && status.ready_replicas == Some(wanted)
                && status.replicas == Some(wanted)
        });
        if !deployment_done {
            return Ok(false);
        }
        // The Deployment's status counts a terminating pod out before it is gone and before
        // the Service stops sending it connections: wait for the pods and the endpoints too.
        let pods = pods
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
            .await?
            .items;
        let current: Vec<String> = pods
            .iter()
            .filter(|pod| {
                pod.metadata.deletion_timestamp.is_none()
                    && pod.labels().get(CONFIG_VERSION) == config.as_ref()
                    && pod_ready(pod)
            })
            .filter_map(|pod| pod.status.as_ref()?.pod_ip.clone())
            .collect();
        if pods.len() != current.len() || current.len() != usize::try_from(wanted).unwrap_or(1) {
            return Ok(false);
        }
        let slices = endpoint_slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
            .await?
            .items;
        let endpoints: Vec<&String> = slices
            .iter()
            .flat_map(|slice| &slice.endpoints)
            .flat_map(|endpoint| &endpoint.addresses)
            .collect();
        Ok(endpoints.len() == current.len() && endpoints.iter().all(|ip| current.contains(ip)))
    })
    .await
    .expect("rolled out");
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// mTLS mode: the policy-server turns away a client without a certificate and serves one
/// presenting the audit-scanner's (which the controller issued from kubewarden-ca).
async fn mutual_tls(cluster: &TestCluster, policy_server: &str) {
    use e2e::tls_probe::{ClientIdentity, get_status_line};
    use k8s_openapi::api::core::v1::Service;
    step("mTLS: the policy-server refuses clients without a certificate");
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let data = |secret: Secret, key: &str| -> Vec<u8> {
        secret
            .data
            .and_then(|d| d.get(key).cloned())
            .map(|b| b.0)
            .unwrap_or_default()
    };
    let ca = data(
        secrets.get("kubewarden-ca").await.expect("CA secret"),
        "ca.crt",
    );
    let service_name = format!("policy-server-{policy_server}");
    let ip = services
        .get(&service_name)
        .await
        .expect("the policy-server Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a cluster IP");
    let address: std::net::SocketAddr = format!("{ip}:443").parse().expect("address");
    let server_name = format!("{service_name}.{NAMESPACE}.svc");
    let refused = tokio::task::spawn_blocking({
        let (ca, server_name) = (ca.clone(), server_name.clone());
        move || get_status_line(address, &server_name, &ca, None)
    })
    .await
    .expect("probe");
    let refusal = format!(
        "{:#}",
        refused.expect_err("a client without a certificate is refused")
    );
    assert!(refusal.to_lowercase().contains("certificate"), "{refusal}");
    let client_secret = "kubewarden-audit-scanner-client-cert";
    wait_until("the audit-scanner's client certificate", WAIT, || async {
        Ok(secrets.get_opt(client_secret).await?.is_some())
    })
    .await
    .expect("the controller issues it");
    let client = secrets.get(client_secret).await.expect("client secret");
    let (cert, key) = (data(client.clone(), "tls.crt"), data(client, "tls.key"));
    let status = tokio::task::spawn_blocking(move || {
        let identity = ClientIdentity {
            cert_pem: &cert,
            key_pem: &key,
        };
        get_status_line(address, &server_name, &ca, Some(identity))
    })
    .await
    .expect("probe")
    .expect("the audit-scanner's certificate is accepted");
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
}

/// Kind mode: a Job from the chart's audit-scanner CronJob, then the monitored pod's report.
async fn audit_with_cronjob(cluster: &TestCluster, monitor: &str, monitored: &Pod) {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    let cronjobs: Api<CronJob> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let cronjob = cronjobs
        .get("audit-scanner")
        .await
        .expect("the chart's CronJob");
    let template = cronjob.spec.expect("spec").job_template;
    let name = unique_name("audit-e2e");
    let job = Job {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("audit Job");
    wait_until(
        "the audit Job succeeds",
        Duration::from_secs(300),
        || async {
            let status = jobs.get(&name).await?.status.unwrap_or_default();
            if status.failed.unwrap_or(0) > 0 {
                anyhow::bail!("the audit Job failed");
            }
            Ok(status.succeeded.unwrap_or(0) > 0)
        },
    )
    .await
    .expect("audit ran");
    check_monitored_report(cluster, monitor, monitored).await;
}

async fn check_monitored_report(cluster: &TestCluster, monitor: &str, monitored: &Pod) {
    let reports: Api<openreports::Report> = cluster.namespaced();
    let report = reports
        .get(&monitored.uid().expect("uid"))
        .await
        .expect("report of the monitored pod");
    let results: BTreeMap<String, ResultOutcome> = report
        .spec
        .results
        .iter()
        .filter_map(|r| Some((r.policy.clone(), r.result?)))
        .collect();
    // The explanations say why a result is not the one expected (an `error` names the
    // audit-scanner's failure to reach the policy-server).
    let explanations: Vec<(&str, Option<&str>)> = report
        .spec
        .results
        .iter()
        .map(|r| (r.policy.as_str(), r.description.as_deref()))
        .collect();
    assert_eq!(
        results.get(&format!("clusterwide-{monitor}")),
        Some(&ResultOutcome::Fail),
        "{results:?}: {explanations:?}"
    );
}

/// Runs the audit-scanner binary on the apps namespace and checks the monitored pod's report.
async fn audit(cluster: &TestCluster, policy_server: &str, monitor: &str, monitored: &Pod) {
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let ca = secrets.get("kubewarden-ca").await.expect("CA secret");
    let ca_pem = ca.data.expect("data")["ca.crt"].0.clone();
    let ca_file = e2e::log_dir().join("kubewarden-ca.crt");
    std::fs::write(&ca_file, ca_pem).expect("CA written");
    // The Service name resolves to this host (xtask e2e writes the network namespace's hosts
    // file); the port is the one the local policy-server process binds.
    let url = format!("https://policy-server-{policy_server}.{NAMESPACE}.svc:8443");
    let output = std::process::Command::new(
        e2e::stack_binary("audit-scanner").expect("audit-scanner binary"),
    )
    .args([
        "-n",
        &cluster.namespace,
        "-k",
        NAMESPACE,
        "--report-kind",
        "openreports",
        "-u",
        &url,
    ])
    .arg("--extra-ca")
    .arg(&ca_file)
    .output()
    .expect("audit-scanner runs");
    assert!(
        output.status.success(),
        "audit-scanner: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    check_monitored_report(cluster, monitor, monitored).await;
}

/// The real node's name (the only node in real-node mode).
async fn real_node(cluster: &TestCluster) -> String {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client.clone());
    let list = nodes.list(&ListParams::default()).await.expect("nodes");
    match list.items.as_slice() {
        [node] => node.name_any(),
        other => panic!("real-node mode expects one node, found {}", other.len()),
    }
}

/// The seeds' host network scenarios, with the controller in host network mode: the default
/// PolicyServer's pods and a second one on custom ports on `node`; with `spread` (several fake
/// nodes) the port-conflict condition and anti-affinity too.
async fn host_network(cluster: &TestCluster, default_ps: &str, node: &str, spread: bool) {
    let servers = cluster.cluster_wide::<PolicyServer>();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let pods_of_stack: Api<Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);

    step("host network propagates to the PolicyServer pods");
    let resource = format!("policy-server-{default_ps}");
    let deployment = deployments.get(&resource).await.expect("Deployment");
    let pod_spec = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    assert_eq!(pod_spec.host_network, Some(true));
    assert_eq!(
        pod_spec.dns_policy.as_deref(),
        Some("ClusterFirstWithHostNet")
    );

    step("a second PolicyServer on ports 9443/9081 shares the node and both serve");
    let second = unique_name("custom-ports");
    servers
        .create(
            &PostParams::default(),
            &policy_server(
                &second,
                json!({"webhookPort": 9443, "readinessProbePort": 9081, "affinity": on_node(node)}),
            ),
        )
        .await
        .expect("second PolicyServer");
    let policies = cluster.cluster_wide::<ClusterAdmissionPolicy>();
    let on_second = unique_name("e2e-second");
    let mut policy = cluster_policy(
        &on_second,
        &fixture_module("reject-by-label"),
        json!({"denied_labels": ["e2e-second"]}),
        &cluster.namespace,
        json!({}),
    );
    policy.spec.common.policy_server = second.clone();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy");
    wait_active(&policies, &on_second).await;
    let pods = cluster.namespaced::<Pod>();
    create_pod_until(
        &pods,
        json!({"e2e-second": "yes"}),
        Some("label e2e-second is not allowed"),
    )
    .await;
    let nodes = |selector: String| {
        let pods_of_stack = pods_of_stack.clone();
        async move {
            let list = pods_of_stack
                .list(&ListParams::default().labels(&selector))
                .await
                .expect("pods");
            list.items
                .iter()
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        nodes(format!("kubewarden/policy-server={default_ps}")).await,
        [node]
    );
    assert_eq!(
        nodes(format!("kubewarden/policy-server={second}")).await,
        [node]
    );
    let _ = policies.delete(&on_second, &DeleteParams::default()).await;

    step(
        "in a namespace enforcing the restricted Pod Security Standard, host network pods are refused and the PolicyServer says why",
    );
    let namespaces = cluster.cluster_wide::<Namespace>();
    namespaces
        .patch(
            NAMESPACE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {PSA_ENFORCE: "restricted"}}})),
        )
        .await
        .expect("namespace labelled");
    let refused = unique_name("psa-refused");
    servers
        .create(
            &PostParams::default(),
            &policy_server(
                &refused,
                json!({"webhookPort": 9643, "readinessProbePort": 9281}),
            ),
        )
        .await
        .expect("PolicyServer");
    wait_until("PodsCreated False with the PSA message", WAIT, || async {
        let conditions = servers
            .get(&refused)
            .await?
            .status
            .map(|s| s.conditions)
            .unwrap_or_default();
        Ok(conditions.iter().any(|c| {
            c.type_ == "PodsCreated"
                && c.status == "False"
                && c.message
                    .contains("violates PodSecurity \"restricted:latest\"")
                && c.message.contains("hostNetwork=true")
        }))
    })
    .await
    .expect("refusal reported");
    allow_host_network(cluster).await;
    let _ = servers.delete(&refused, &DeleteParams::default()).await;
    if !spread {
        return;
    }

    step(
        "two replicas with the same ports on one node: one Pending, and the PolicyServer says why",
    );
    let crowded = unique_name("crowded");
    servers
        .create(&PostParams::default(), &policy_server(&crowded, json!({"replicas": 2, "webhookPort": 9543, "readinessProbePort": 9181, "affinity": on_node("kwok-node-1")})))
        .await
        .expect("crowded PolicyServer");
    wait_until("host-port condition", WAIT, || async {
        let ps = servers.get(&crowded).await?;
        let conditions = ps.status.map(|s| s.conditions).unwrap_or_default();
        Ok(conditions.iter().any(|c| {
            c.type_ == "HostPortsAvailable"
                && c.status == "False"
                && c.message.contains("spec.webhookPort 9543 is already bound")
        }))
    })
    .await
    .expect("conflict reported");

    step("anti-affinity spreads the replicas");
    servers
        .patch(&crowded, &PatchParams::default(), &Patch::Merge(json!({"spec": {"affinity": {"nodeAffinity": null, "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"kubewarden/policy-server": crowded}}, "topologyKey": "kubernetes.io/hostname"}]}}}})))
        .await
        .expect("patched");
    wait_until("both replicas ready on two nodes", WAIT, || async {
        let ready = deployments
            .get(&format!("policy-server-{crowded}"))
            .await?
            .status
            .and_then(|s| s.ready_replicas);
        let mut spread = nodes(format!("kubewarden/policy-server={crowded}")).await;
        spread.sort();
        spread.dedup();
        Ok(ready == Some(2) && spread.len() == 2)
    })
    .await
    .expect("spread");
    wait_until("the host-port condition clears", WAIT, || async {
        let status = servers.get(&crowded).await?.status;
        Ok(status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "HostPortsAvailable" && c.status == "True")
        }))
    })
    .await
    .expect("condition cleared");
}
