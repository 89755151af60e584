//! The controller against the local control plane (`cargo xtask cluster up`): kube-scheduler
//! places the policy-server pods on kwok nodes, kwok marks them Ready, kube-controller-manager
//! rolls Deployments and collects garbage. The controller runs in-process, on this test's
//! namespace as its deployments namespace.
//!
//! The scenarios run one after the other in one test: a controller reconciles every
//! PolicyServer in the cluster, so two controllers must never run at once.

use std::sync::Arc;
use std::time::Duration;

use api_types::crd::{AdmissionPolicy, ClusterAdmissionPolicy, PolicyServer, PolicyStatusPhase};
use api_types::naming;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubewarden_controller::certs::{CertificateAuthority, IssuedCertificate};
use kubewarden_controller::{Metrics, Options, OwnPorts};
use serde_json::{Value, json};
use test_cluster::{TestCluster, unique_name, wait_until};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(90);
/// Marks the PolicyServers this test creates, so a later run can remove what a failed one left.
const TEST_LABEL: &str = "kubewarden-rs/test";

fn start_controller(cluster: &TestCluster, options: Options) -> JoinHandle<()> {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    tokio::spawn(kubewarden_controller::run(
        cluster.client.clone(),
        options,
        metrics,
    ))
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn ps_condition(
    api: &Api<PolicyServer>,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let ps = api.get_opt(name).await.ok().flatten()?;
    condition(&ps.status?.conditions, type_)
}

/// A rule no request in the test cluster matches (the object selector), so a registered
/// webhook whose policy-server does not really run never blocks anything.
fn harmless_rules() -> Value {
    json!({
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["CREATE"]}],
        "objectSelector": {"matchLabels": {"kubewarden-rs-test/never": "true"}},
        "failurePolicy": "Ignore",
    })
}

fn policy_server(name: &str, extra: Value) -> PolicyServer {
    let mut spec = json!({"image": "example.invalid/policy-server:test", "replicas": 1});
    merge(&mut spec, extra);
    from_json(json!({
        "apiVersion": "policies.kubewarden.io/v1", "kind": "PolicyServer",
        "metadata": {"name": name, "labels": {TEST_LABEL: "true"}}, "spec": spec
    }))
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

#[tokio::test]
async fn controller_reconciles_policy_servers_and_policies() {
    let Some(cluster) = TestCluster::connect("controller").await else {
        return;
    };
    let ns = cluster.namespace.clone();
    let options = Options {
        own_ports: OwnPorts {
            health_probe: Some(8081),
            metrics: None,
            webhook: None,
        },
        ..Options::new(&ns)
    };

    let expiring_ca = create_expiring_ca(&cluster).await;
    let controller = start_controller(&cluster, options.clone());
    remove_leftovers(&cluster).await;
    lifecycle(&cluster, &expiring_ca).await;
    leaves_scaling_to_an_autoscaler(&cluster).await;
    controller.abort();

    let host_network = Options {
        host_network: true,
        ..options.clone()
    };
    let controller = start_controller(&cluster, host_network);
    let ps_name = host_network_conflicts(&cluster).await;
    controller.abort();

    // Turning host network off reverts the pods to the cluster network.
    let controller = start_controller(&cluster, options);
    let deployments = cluster.namespaced::<Deployment>();
    let resource = naming::policy_server_resource_name(&ps_name);
    wait_until("host network turned off", WAIT, || async {
        let deployment = deployments.get(&resource).await?;
        let pod = deployment
            .spec
            .and_then(|s| s.template.spec)
            .unwrap_or_default();
        // `false` is the default, which the apiserver does not store.
        Ok(!pod.host_network.unwrap_or(false) && pod.dns_policy.as_deref() == Some("ClusterFirst"))
    })
    .await
    .expect("hostNetwork reverted");
    let servers = cluster.cluster_wide::<PolicyServer>();
    wait_until("host-port condition removed", WAIT, || async {
        Ok(ps_condition(&servers, &ps_name, "HostPortsAvailable")
            .await
            .is_none())
    })
    .await
    .expect("condition removed");
    delete_policy_server(&cluster, &ps_name).await;
    controller.abort();

    controller_binary(&cluster).await;
    killed_mid_reconcile(&cluster).await;
    survives_an_apiserver_restart(&cluster).await;
    cluster.cleanup().await;
}

/// A `kubewarden-ca` that expires in 30 days: the controller must renew it at start-up and
/// keep trusting it during the rotation. Returns its certificate.
async fn create_expiring_ca(cluster: &TestCluster) -> String {
    let now = time::OffsetDateTime::now_utc();
    let issued = now - kubewarden_controller::certs::CA_VALIDITY + time::Duration::days(30);
    let ca = CertificateAuthority::generate(issued).expect("CA");
    let secret: Secret = from_json(json!({
        "metadata": {"name": naming::CA_SECRET_NAME},
        "stringData": {"ca.crt": ca.cert_pem(), "ca.key": ca.key_pem()}
    }));
    cluster
        .namespaced::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("CA secret created");
    ca.cert_pem().to_string()
}

/// PolicyServers of an earlier, failed run: the running controller releases their finalizers.
async fn remove_leftovers(cluster: &TestCluster) {
    let servers = cluster.cluster_wide::<PolicyServer>();
    let selector = ListParams::default().labels(TEST_LABEL);
    let _ = servers
        .delete_collection(&DeleteParams::default(), &selector)
        .await;
    wait_until("leftover PolicyServers removed", WAIT, || async {
        Ok(servers.list(&selector).await?.items.is_empty())
    })
    .await
    .expect("leftovers removed");
}

async fn delete_policy_server(cluster: &TestCluster, name: &str) {
    let servers = cluster.cluster_wide::<PolicyServer>();
    let _ = servers.delete(name, &DeleteParams::default()).await;
    wait_until("PolicyServer deleted", WAIT, || async {
        Ok(servers.get_opt(name).await?.is_none())
    })
    .await
    .expect("the finalizer is released");
}

async fn lifecycle(cluster: &TestCluster, expiring_ca: &str) {
    let ns = &cluster.namespace;
    let servers = cluster.cluster_wide::<PolicyServer>();
    let ps_name = unique_name("ps");
    let resource = naming::policy_server_resource_name(&ps_name);
    servers
        .create(&PostParams::default(), &policy_server(&ps_name, json!({})))
        .await
        .expect("PolicyServer created");

    // Children appear and every step reports success.
    for type_ in [
        "CertSecretReconciled",
        "ConfigMapReconciled",
        "DeploymentReconciled",
        "ServiceReconciled",
        "PodDisruptionBudgetReconciled",
        "SpecValid",
    ] {
        wait_until(&format!("{type_} True"), WAIT, || async {
            Ok(ps_condition(&servers, &ps_name, type_).await.map(|c| c.0) == Some("True".into()))
        })
        .await
        .expect("condition");
    }
    let ps = servers.get(&ps_name).await.expect("PolicyServer");
    assert!(ps.finalizers().contains(&naming::FINALIZER.to_string()));
    let service = cluster
        .namespaced::<Service>()
        .get(&resource)
        .await
        .expect("service");
    let port = &service.spec.expect("spec").ports.expect("ports")[0];
    assert_eq!(
        (port.port, port.name.as_deref()),
        (443, Some("policy-server"))
    );
    assert!(
        cluster
            .namespaced::<PodDisruptionBudget>()
            .get_opt(&resource)
            .await
            .expect("get")
            .is_none()
    );

    // The expiring CA was renewed and is still trusted next to the new one; the serving
    // certificate names the Service and chains to the new CA.
    let secrets = cluster.namespaced::<Secret>();
    let text = |secret: &Secret, key: &str| {
        String::from_utf8(secret.data.as_ref().expect("data")[key].0.clone()).expect("utf-8")
    };
    let dns_name = format!("{resource}.{ns}.svc");
    wait_until("certificate from the renewed CA", WAIT, || async {
        let ca_secret = secrets.get(naming::CA_SECRET_NAME).await?;
        let ca = CertificateAuthority::from_pem(
            &text(&ca_secret, "ca.crt"),
            &text(&ca_secret, "ca.key"),
        )?;
        let Some(tls) = secrets.get_opt(&resource).await? else {
            return Ok(false);
        };
        let served = IssuedCertificate {
            cert_pem: text(&tls, "tls.crt"),
            key_pem: text(&tls, "tls.key"),
        };
        let now = time::OffsetDateTime::now_utc();
        Ok(!ca.needs_renewal(now)
            && ca
                .server_certificate_problem(&served, &dns_name, now)
                .is_none())
    })
    .await
    .expect("renewed CA signs the serving certificate");
    let ca_secret = secrets
        .get(naming::CA_SECRET_NAME)
        .await
        .expect("CA secret");
    assert_eq!(text(&ca_secret, "old-ca.crt"), expiring_ca);

    // The audit-scanner's client certificate for mTLS comes from the renewed CA too.
    wait_until("the audit-scanner's client certificate", WAIT, || async {
        let ca_secret = secrets.get(naming::CA_SECRET_NAME).await?;
        let ca = CertificateAuthority::from_pem(
            &text(&ca_secret, "ca.crt"),
            &text(&ca_secret, "ca.key"),
        )?;
        let Some(client) = secrets
            .get_opt(naming::AUDIT_SCANNER_CLIENT_CERT_SECRET_NAME)
            .await?
        else {
            return Ok(false);
        };
        let cert = IssuedCertificate {
            cert_pem: text(&client, "tls.crt"),
            key_pem: text(&client, "tls.key"),
        };
        let now = time::OffsetDateTime::now_utc();
        Ok(ca
            .client_certificate_problem(&cert, naming::AUDIT_SCANNER_CLIENT_COMMON_NAME, now)
            .is_none())
    })
    .await
    .expect("the renewed CA signs the audit-scanner's client certificate");

    // A deleted child comes back at once (the controller watches its children).
    secrets
        .delete(&resource, &DeleteParams::default())
        .await
        .expect("secret deleted");
    wait_until("TLS secret recreated", WAIT, || async {
        Ok(secrets.get_opt(&resource).await?.is_some())
    })
    .await
    .expect("recreated");

    // kwok makes the pod Ready.
    let deployments = cluster.namespaced::<Deployment>();
    wait_until("policy-server ready", WAIT, || async {
        let d = deployments.get(&resource).await?;
        Ok(d.status.and_then(|s| s.ready_replicas) == Some(1))
    })
    .await
    .expect("ready replica");

    // A policy becomes active and its webhook is registered.
    let policies = cluster.cluster_wide::<ClusterAdmissionPolicy>();
    let policy_name = unique_name("cap");
    let unique = format!("clusterwide-{policy_name}");
    let mut spec = json!({"policyServer": ps_name, "module": "registry://example.invalid/p:v1", "mutating": false, "settings": {"v": 1}});
    merge(&mut spec, harmless_rules());
    policies
        .create(
            &PostParams::default(),
            &from_json(
                json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
                "metadata": {"name": policy_name}, "spec": spec}),
            ),
        )
        .await
        .expect("policy created");
    wait_until("policy active", WAIT, || async {
        let p = policies.get(&policy_name).await?;
        Ok(p.status.and_then(|s| s.policy_status) == Some(PolicyStatusPhase::Active))
    })
    .await
    .expect("active");
    let policy = policies.get(&policy_name).await.expect("policy");
    let status = policy.status.expect("status");
    assert_eq!(
        status.mode,
        Some(api_types::crd::ObservedPolicyMode::Protect)
    );
    assert_eq!(
        condition(&status.conditions, "PolicyActive").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(
        condition(&status.conditions, "PolicyUniquelyReachable").map(|c| c.0),
        Some("True".into())
    );

    let validating = cluster.cluster_wide::<ValidatingWebhookConfiguration>();
    let webhook = validating.get(&unique).await.expect("webhook registered");
    let hook = &webhook.webhooks.expect("webhooks")[0];
    let service_ref = hook.client_config.service.as_ref().expect("service ref");
    assert_eq!(service_ref.name, resource);
    assert_eq!(service_ref.namespace, *ns);
    assert_eq!(
        service_ref.path.as_deref(),
        Some(format!("/validate/{unique}").as_str())
    );
    let bundle =
        String::from_utf8(hook.client_config.ca_bundle.clone().expect("caBundle").0).expect("PEM");
    assert!(
        bundle.contains(text(&ca_secret, "ca.crt").trim()),
        "the new CA is trusted"
    );
    assert!(
        bundle.contains(expiring_ca.trim()),
        "the old CA stays trusted during the rotation"
    );

    // A manual edit of the generated webhook is reverted.
    validating
        .patch(
            &unique,
            &PatchParams::default(),
            &Patch::Strategic(json!({"webhooks": [{"name": hook.name, "timeoutSeconds": 29}]})),
        )
        .await
        .expect("edited");
    wait_until("manual edit reverted", WAIT, || async {
        let w = validating.get(&unique).await?;
        Ok(w.webhooks
            .unwrap_or_default()
            .first()
            .and_then(|h| h.timeout_seconds)
            == Some(10))
    })
    .await
    .expect("reverted");

    // New settings: a new ConfigMap version rolls the pods, and the policy follows.
    let config_maps = cluster.namespaced::<ConfigMap>();
    let before = config_maps
        .get(&resource)
        .await
        .expect("config map")
        .resource_version();
    policies
        .patch(
            &policy_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"settings": {"v": 2}}})),
        )
        .await
        .expect("settings changed");
    let replica_sets = cluster.namespaced::<ReplicaSet>();
    wait_until("rollout with the new configuration", WAIT, || async {
        let cm = config_maps.get(&resource).await?;
        let rv = cm.resource_version();
        let listed = cm
            .data
            .unwrap_or_default()
            .get("policies.yml")
            .is_some_and(|t| t.contains(r#""v":2"#));
        let rs = replica_sets
            .list(&ListParams::default().labels(&format!("kubewarden/policy-server={ps_name}")))
            .await?;
        let rolled = rs
            .items
            .iter()
            .any(|r| r.annotations().get("kubewarden/config-version") == rv.as_ref());
        Ok(listed && rv != before && rolled)
    })
    .await
    .expect("rolled");
    wait_until("configuration up to date", WAIT, || async {
        let p = policies.get(&policy_name).await?;
        let s = p.status.unwrap_or_default();
        Ok(s.policy_status == Some(PolicyStatusPhase::Active)
            && condition(&s.conditions, "PolicyServerConfigurationUpToDate").map(|c| c.0)
                == Some("True".into())
            && condition(&s.conditions, "PolicyUniquelyReachable").map(|c| c.0)
                == Some("True".into()))
    })
    .await
    .expect("up to date");

    // A mutating AdmissionPolicy gets a mutating webhook limited to its namespace.
    let admission = cluster.namespaced::<AdmissionPolicy>();
    let ap_name = unique_name("ap");
    let ap_unique = format!("namespaced-{ns}-{ap_name}");
    let mut spec = json!({"policyServer": ps_name, "module": "registry://example.invalid/m:v1", "mutating": true});
    merge(&mut spec, harmless_rules());
    admission
        .create(
            &PostParams::default(),
            &from_json(
                json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "AdmissionPolicy",
            "metadata": {"name": ap_name}, "spec": spec}),
            ),
        )
        .await
        .expect("AdmissionPolicy created");
    let mutating = cluster.cluster_wide::<MutatingWebhookConfiguration>();
    wait_until("mutating webhook registered", WAIT, || async {
        Ok(mutating.get_opt(&ap_unique).await?.is_some())
    })
    .await
    .expect("mutating webhook");
    let hook = &mutating
        .get(&ap_unique)
        .await
        .expect("webhook")
        .webhooks
        .expect("webhooks")[0];
    assert_eq!(
        hook.namespace_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some([("kubernetes.io/metadata.name".to_string(), ns.clone())].into())
    );

    // A namespaced policy matching every resource is refused with a status that says why.
    let bad_name = unique_name("bad");
    admission
        .create(&PostParams::default(), &from_json(json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "AdmissionPolicy",
            "metadata": {"name": bad_name}, "spec": {"policyServer": ps_name, "module": "registry://example.invalid/m:v1", "mutating": false,
            "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "operations": ["CREATE"]}]}})))
        .await
        .expect("created (the schema allows it)");
    wait_until("invalid policy rejected", WAIT, || async {
        let p = admission.get(&bad_name).await?;
        let s = p.status.unwrap_or_default();
        Ok(s.policy_status == Some(PolicyStatusPhase::Rejected)
            && condition(&s.conditions, "PolicyActive")
                .is_some_and(|c| c.1 == "InvalidSpec" && c.2.contains("spec.rules")))
    })
    .await
    .expect("rejected with a reason");
    let cm = config_maps.get(&resource).await.expect("config map");
    assert!(
        !cm.data.unwrap_or_default()["policies.yml"].contains(&bad_name),
        "invalid policies are not served"
    );

    // A PodDisruptionBudget follows minAvailable.
    servers
        .patch(
            &ps_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minAvailable": 1}})),
        )
        .await
        .expect("patched");
    let pdbs = cluster.namespaced::<PodDisruptionBudget>();
    wait_until("PDB created", WAIT, || async {
        Ok(pdbs.get_opt(&resource).await?.is_some())
    })
    .await
    .expect("pdb");
    servers
        .patch(
            &ps_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minAvailable": null}})),
        )
        .await
        .expect("patched");
    wait_until("PDB removed", WAIT, || async {
        Ok(pdbs.get_opt(&resource).await?.is_none())
    })
    .await
    .expect("pdb removed");

    // Deleting the policy removes its webhook, then the policy itself.
    policies
        .delete(&policy_name, &DeleteParams::default())
        .await
        .expect("deleted");
    wait_until("policy and webhook gone", WAIT, || async {
        Ok(policies.get_opt(&policy_name).await?.is_none()
            && validating.get_opt(&unique).await?.is_none())
    })
    .await
    .expect("finalizer released");
    wait_until("policy left the configuration", WAIT, || async {
        let cm = config_maps.get(&resource).await?;
        Ok(!cm.data.unwrap_or_default()["policies.yml"].contains(&unique))
    })
    .await
    .expect("configuration updated");

    // Deleting the PolicyServer first removes the webhooks of its remaining policies; the
    // policies go back to `scheduled` and the children are garbage collected.
    delete_policy_server(cluster, &ps_name).await;
    assert!(mutating.get_opt(&ap_unique).await.expect("get").is_none());
    wait_until("AdmissionPolicy scheduled", WAIT, || async {
        let p = admission.get(&ap_name).await?;
        Ok(p.status.and_then(|s| s.policy_status) == Some(PolicyStatusPhase::Scheduled))
    })
    .await
    .expect("scheduled");
    wait_until("children collected", WAIT, || async {
        Ok(deployments.get_opt(&resource).await?.is_none())
    })
    .await
    .expect("garbage collected");
    for name in [&ap_name, &bad_name] {
        let _ = admission.delete(name, &DeleteParams::default()).await;
    }
    wait_until("AdmissionPolicies gone", WAIT, || async {
        Ok(admission
            .list(&ListParams::default())
            .await?
            .items
            .is_empty())
    })
    .await
    .expect("finalizers released");
}

/// A PolicyServer without `replicas` leaves the Deployment's scale to an autoscaler: what a
/// HorizontalPodAutoscaler writes through the scale subresource stays across reconciles.
async fn leaves_scaling_to_an_autoscaler(cluster: &TestCluster) {
    let servers = cluster.cluster_wide::<PolicyServer>();
    let deployments = cluster.namespaced::<Deployment>();
    let name = unique_name("ps-hpa");
    let resource = naming::policy_server_resource_name(&name);
    servers
        .create(
            &PostParams::default(),
            &policy_server(&name, json!({"replicas": null})),
        )
        .await
        .expect("a PolicyServer without replicas");
    wait_until("its Deployment", WAIT, || async {
        Ok(deployments.get_opt(&resource).await?.is_some())
    })
    .await
    .expect("created");
    // As the HPA controller does it: the scale subresource, under its own field manager.
    let autoscaler = PatchParams {
        field_manager: Some("horizontal-pod-autoscaler-stand-in".into()),
        ..PatchParams::default()
    };
    deployments
        .patch_scale(
            &resource,
            &autoscaler,
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scaled");
    // A change makes the controller apply the Deployment again.
    servers
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"annotations": {"kubewarden-rs/touched": "1"}}})),
        )
        .await
        .expect("edited");
    wait_until("the edit reconciled", WAIT, || async {
        let deployment = deployments.get(&resource).await?;
        let annotations = deployment
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        Ok(annotations.contains_key("kubewarden-rs/touched"))
    })
    .await
    .expect("reconciled");
    let replicas = deployments
        .get(&resource)
        .await
        .expect("Deployment")
        .spec
        .and_then(|s| s.replicas);
    assert_eq!(replicas, Some(3), "the autoscaler's replicas are kept");
    delete_policy_server(cluster, &name).await;
}

/// Returns the name of the PolicyServer left running in host network mode.
async fn host_network_conflicts(cluster: &TestCluster) -> String {
    let servers = cluster.cluster_wide::<PolicyServer>();
    let deployments = cluster.namespaced::<Deployment>();
    let base = 41000 + (std::process::id() % 500) as i32 * 2;

    // Two replicas bound to one node, same host ports: the second cannot be scheduled and the
    // PolicyServer says which port is taken by whom.
    let crowded = unique_name("hn");
    let one_node = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["kwok-node-0"]}]}]}}});
    servers
        .create(&PostParams::default(), &policy_server(&crowded, json!({
            "replicas": 2, "webhookPort": base, "readinessProbePort": base + 1, "affinity": one_node})))
        .await
        .expect("created");
    let resource = naming::policy_server_resource_name(&crowded);
    wait_until("host network Deployment", WAIT, || async {
        let Some(d) = deployments.get_opt(&resource).await? else {
            return Ok(false);
        };
        let pod = d.spec.and_then(|s| s.template.spec).unwrap_or_default();
        Ok(pod.host_network == Some(true)
            && pod.dns_policy.as_deref() == Some("ClusterFirstWithHostNet"))
    })
    .await
    .expect("hostNetwork set");
    wait_until("host-port conflict reported", WAIT, || async {
        let c = ps_condition(&servers, &crowded, "HostPortsAvailable").await;
        Ok(c.is_some_and(|(status, reason, message)| {
            status == "False"
                && reason == "HostPortConflict"
                && message.contains(&format!(
                    "spec.webhookPort {base} is already bound by policy-server-{crowded}"
                ))
                && message.contains("kwok-node-0")
        }))
    })
    .await
    .expect("conflict condition");

    // Anti-affinity is the documented fix: with it and three nodes, both replicas run.
    let spread = json!({"nodeAffinity": null, "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"kubewarden/policy-server": crowded}}, "topologyKey": "kubernetes.io/hostname"}]}});
    servers
        .patch(
            &crowded,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"affinity": spread}})),
        )
        .await
        .expect("patched");
    wait_until("conflict resolved", WAIT, || async {
        let c = ps_condition(&servers, &crowded, "HostPortsAvailable").await;
        let ready = deployments
            .get(&resource)
            .await?
            .status
            .and_then(|s| s.ready_replicas);
        Ok(c.is_some_and(|c| c.0 == "True") && ready == Some(2))
    })
    .await
    .expect("both replicas run");

    // The default readiness port is the controller's own health port on the node.
    let clashing = unique_name("hn-default");
    servers
        .create(
            &PostParams::default(),
            &policy_server(&clashing, json!({"webhookPort": base + 2})),
        )
        .await
        .expect("created");
    wait_until("controller port clash reported", WAIT, || async {
        let c = ps_condition(&servers, &clashing, "HostPortsAvailable").await;
        Ok(c.is_some_and(|(status, reason, message)| {
            status == "False"
                && reason == "ControllerPortConflict"
                && message.contains("spec.readinessProbePort 8081")
        }))
    })
    .await
    .expect("clash condition");
    delete_policy_server(cluster, &clashing).await;
    crowded
}

async fn http_get(address: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, response))
}

/// Starts the real binary with leader election, against the test namespace.
fn spawn_binary(cluster: &TestCluster, port: u16) -> tokio::process::Child {
    spawn_binary_exporting(cluster, port, None)
}

/// [`spawn_binary`], exporting traces to the OTLP gRPC endpoint when given.
fn spawn_binary_exporting(
    cluster: &TestCluster,
    port: u16,
    otlp_endpoint: Option<&str>,
) -> tokio::process::Child {
    let kubeconfig = std::env::var(test_cluster::KUBECONFIG_ENV).expect("kubeconfig");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_controller"));
    command
        .args([
            "--leader-elect",
            &format!("--deployments-namespace={}", cluster.namespace),
            &format!("--health-probe-bind-address=127.0.0.1:{port}"),
            &format!("--metrics-bind-address=127.0.0.1:{}", port + 1),
        ])
        .env("KUBECONFIG", kubeconfig)
        .kill_on_drop(true);
    // More of the binaries' logs when a failure needs them.
    if let Ok(level) = std::env::var("KUBEWARDEN_TEST_CONTROLLER_LOG") {
        command.arg(format!("--log-level={level}"));
    }
    if let Some(endpoint) = otlp_endpoint {
        command
            .arg("--enable-tracing")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "200");
    }
    command.spawn().expect("controller starts")
}

/// The binary killed (SIGKILL, lease not released) while it is creating a PolicyServer's
/// objects: a second one takes the lease over when it expires, finishes the job, and there is
/// exactly one of each object.
async fn killed_mid_reconcile(cluster: &TestCluster) {
    let port = 44000 + (std::process::id() % 1000) as u16 * 2;
    let name = unique_name("crash");
    let resource = naming::policy_server_resource_name(&name);
    let mut first = spawn_binary(cluster, port);
    let servers = cluster.cluster_wide::<PolicyServer>();
    servers
        .create(&PostParams::default(), &policy_server(&name, json!({})))
        .await
        .expect("creates the PolicyServer");
    let secrets = cluster.namespaced::<Secret>();
    wait_until(
        "the first controller started on the PolicyServer",
        WAIT,
        || async { Ok(secrets.get_opt(&resource).await?.is_some()) },
    )
    .await
    .expect("secret written");
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;

    let mut second = spawn_binary(cluster, port);
    let deployments = cluster.namespaced::<Deployment>();
    let services = cluster.namespaced::<Service>();
    // The dead controller's lease must expire first (15 s).
    wait_until(
        "the second controller finished the PolicyServer",
        Duration::from_secs(60),
        || async {
            Ok(deployments.get_opt(&resource).await?.is_some()
                && services.get_opt(&resource).await?.is_some())
        },
    )
    .await
    .expect("converged after the crash");
    let counts = [
        count_named(&secrets, &resource).await,
        count_named(&cluster.namespaced::<ConfigMap>(), &resource).await,
        count_named(&deployments, &resource).await,
        count_named(&services, &resource).await,
    ];
    assert_eq!(
        counts,
        [1, 1, 1, 1],
        "one Secret, ConfigMap, Deployment and Service"
    );
    // The finalizer needs a running controller.
    delete_policy_server(cluster, &name).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &second.id().expect("pid").to_string()])
        .status();
    let _ = second.wait().await;
}

/// The binary keeps running through an apiserver outage shorter than its lease (15 s): its
/// watches resume, changes made during and after the outage are reconciled, and it is still
/// the leader, without a restart.
async fn survives_an_apiserver_restart(cluster: &TestCluster) {
    let port = 46000 + (std::process::id() % 1000) as u16 * 2;
    let mut controller = spawn_binary(cluster, port);
    let servers = cluster.cluster_wide::<PolicyServer>();
    let deployments = cluster.namespaced::<Deployment>();
    let before = unique_name("before-outage");
    servers
        .create(&PostParams::default(), &policy_server(&before, json!({})))
        .await
        .expect("creates the PolicyServer");
    let before_resource = naming::policy_server_resource_name(&before);
    wait_until("reconciled before the outage", WAIT, || async {
        Ok(deployments.get_opt(&before_resource).await?.is_some())
    })
    .await
    .expect("deployment before the outage");
    let leases = cluster.namespaced::<k8s_openapi::api::coordination::v1::Lease>();
    let holder = || async {
        let lease = leases
            .get(kubewarden_controller::leader::LEASE_NAME)
            .await?;
        Ok::<_, anyhow::Error>(lease.spec.and_then(|s| s.holder_identity))
    };
    let leader = holder().await.expect("lease").expect("a leader");

    test_cluster::restart_apiserver(Duration::from_secs(3))
        .await
        .expect("apiserver restarted");
    assert!(
        controller.try_wait().expect("status").is_none(),
        "the controller exited during the outage"
    );

    let after = unique_name("after-outage");
    servers
        .create(&PostParams::default(), &policy_server(&after, json!({})))
        .await
        .expect("creates a PolicyServer after the outage");
    servers
        .patch(
            &before,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("edits the earlier PolicyServer");
    let after_resource = naming::policy_server_resource_name(&after);
    let recovering = std::time::Instant::now();
    wait_until(
        "changes after the outage reconciled",
        Duration::from_secs(60),
        || async {
            let scaled = deployments
                .get(&before_resource)
                .await?
                .spec
                .and_then(|s| s.replicas)
                == Some(2);
            Ok(scaled && deployments.get_opt(&after_resource).await?.is_some())
        },
    )
    .await
    .expect("the controller recovered without a restart");
    println!(
        "changes after the apiserver restart reconciled in {:.1} s",
        recovering.elapsed().as_secs_f64()
    );
    assert!(controller.try_wait().expect("status").is_none());
    assert_eq!(
        holder().await.expect("lease"),
        Some(leader),
        "still the leader"
    );

    delete_policy_server(cluster, &before).await;
    delete_policy_server(cluster, &after).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &controller.id().expect("pid").to_string()])
        .status();
    let _ = controller.wait().await;
}

/// Objects of `api` whose names start with `prefix`.
async fn count_named<K>(api: &Api<K>, prefix: &str) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .expect("lists")
        .items
        .iter()
        .filter(|object| object.name_any().starts_with(prefix))
        .count()
}

/// A PolicyServer's reconciliation reaches the collector as a `reconcile` span with an
/// `apply` child per object it applies.
async fn reconciliation_is_traced(
    cluster: &TestCluster,
    collector: &test_cluster::otel_collector::Collector,
) {
    use test_cluster::otel_collector::{attribute, spans};
    let name = unique_name("traced");
    let servers = cluster.cluster_wide::<PolicyServer>();
    servers
        .create(&PostParams::default(), &policy_server(&name, json!({})))
        .await
        .expect("PolicyServer created");
    // The reconciliation that applied the children (the first one only adds the finalizer).
    let traced = |documents: &[Value]| {
        let spans = spans(documents);
        spans
            .iter()
            .filter(|span| {
                span["name"] == "reconcile"
                    && attribute(span, "object")
                        .and_then(|o| o.as_str().map(|o| o.contains(&name)))
                        .unwrap_or(false)
                    && attribute(span, "outcome") == Some(json!("ok"))
            })
            .find_map(|reconcile| {
                let applied: Vec<String> = spans
                    .iter()
                    .filter(|span| {
                        span["name"] == "apply"
                            && span["parentSpanId"] == reconcile["spanId"]
                            && span["traceId"] == reconcile["traceId"]
                    })
                    .filter_map(|span| attribute(span, "kind")?.as_str().map(str::to_string))
                    .collect();
                applied
                    .contains(&"Deployment".to_string())
                    .then(|| (reconcile.clone(), applied))
            })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let (reconcile, applied) = loop {
        if let Some(found) = traced(&collector.exported()) {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconcile trace of {name} within {WAIT:?}; collector log:\n{}",
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        attribute(&reconcile["resource"], "service.name"),
        Some(json!("kubewarden-controller"))
    );
    for kind in ["Secret", "ConfigMap", "Deployment", "Service"] {
        assert!(applied.iter().any(|k| k == kind), "{kind} in {applied:?}");
    }
    delete_policy_server(cluster, &name).await;
}

/// The real binary: leader election through the Lease, health and metrics endpoints, the
/// trace of a reconciliation exported to a real OpenTelemetry Collector (with
/// `--enable-tracing`), and the lease handed back on SIGTERM.
async fn controller_binary(cluster: &TestCluster) {
    let port = 42000 + (std::process::id() % 1000) as u16 * 2;
    let health = format!("127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{}", port + 1);
    let dir = std::env::temp_dir().join(format!("controller-otel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let collector = test_cluster::otel_collector::start_collector(&dir, None);
    let endpoint = collector
        .as_ref()
        .map(|c| format!("http://127.0.0.1:{}", c.grpc_port));
    let mut child = spawn_binary_exporting(cluster, port, endpoint.as_deref());
    let leases = cluster.namespaced::<k8s_openapi::api::coordination::v1::Lease>();
    let lease_holder = || async {
        let lease = leases
            .get_opt(kubewarden_controller::leader::LEASE_NAME)
            .await?;
        Ok::<_, anyhow::Error>(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
    };
    wait_until("the binary holds the lease", WAIT, || async {
        Ok(lease_holder().await?.is_some())
    })
    .await
    .expect("leader");
    wait_until("ready", WAIT, || async {
        Ok(http_get(&health, "/readyz").await?.0 == 200)
    })
    .await
    .expect("readyz");
    assert_eq!(http_get(&health, "/healthz").await.expect("healthz").0, 200);
    let (status, body) = http_get(&metrics, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(body.contains("kubewarden_controller_leader 1"), "{body}");
    if let Some(collector) = &collector {
        reconciliation_is_traced(cluster, collector).await;
    }

    let pid = child.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(exit.success(), "clean exit on SIGTERM: {exit}");
    assert_eq!(lease_holder().await.expect("lease"), None, "lease released");
}
