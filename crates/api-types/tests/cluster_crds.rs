//! The generated CRDs against a real apiserver: examples are accepted and stored with their
//! defaults, invalid objects are refused with a readable message.

use api_types::crd::{AdmissionPolicy, ClusterAdmissionPolicy, PolicyServer};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use test_cluster::{TestCluster, unique_name};

fn fixture(name: &str) -> Value {
    let path = test_cluster::repo_root()
        .join("crates/api-types/tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).expect("fixture is YAML")
}

/// A fixture with a unique name (cluster-scoped objects are shared by all tests).
fn renamed(file: &str, prefix: &str) -> Value {
    let mut object = fixture(file);
    object["metadata"]["name"] = unique_name(prefix).into();
    object
}

async fn create<K>(api: &Api<K>, object: &Value) -> Result<K, String>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let typed: K = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    api.create(&PostParams::default(), &typed)
        .await
        .map_err(|e| e.to_string())
}

/// Creates the raw object (bypassing our types, as kubectl would) and returns the refusal.
async fn refusal(cluster: &TestCluster, plural: &str, object: &Value) -> String {
    let namespaced = object["metadata"]["namespace"].is_string();
    let gvk = kube::api::GroupVersionKind::gvk(
        "policies.kubewarden.io",
        "v1",
        object["kind"].as_str().unwrap_or_default(),
    );
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<kube::api::DynamicObject> = if namespaced {
        Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource)
    } else {
        Api::all_with(cluster.client.clone(), &resource)
    };
    let dynamic: kube::api::DynamicObject =
        serde_json::from_value(object.clone()).expect("dynamic object");
    match api.create(&PostParams::default(), &dynamic).await {
        Ok(_) => panic!("the apiserver accepted an invalid {plural}: {object}"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn seed_policy_servers_are_accepted_with_defaults() {
    let Some(cluster) = TestCluster::connect("seed_policy_servers").await else {
        return;
    };
    let api: Api<PolicyServer> = cluster.cluster_wide();
    let custom = create(
        &api,
        &renamed("policyserver-custom-ports.yaml", "custom-ports"),
    )
    .await
    .expect("custom-ports accepted");
    assert_eq!(
        (custom.spec.webhook_port, custom.spec.readiness_probe_port),
        (9443, 9081)
    );
    let secondary = create(
        &api,
        &renamed("policyserver-secondary-affinity.yaml", "secondary"),
    )
    .await
    .expect("secondary accepted");
    // Defaults come from the apiserver, not only from our types: read the raw object back.
    let raw: Api<kube::api::DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &kube::api::ApiResource::erase::<PolicyServer>(&()),
    );
    let stored = raw
        .get(&secondary.metadata.name.clone().unwrap_or_default())
        .await
        .expect("read back");
    assert_eq!(stored.data["spec"]["webhookPort"], json!(8443));
    assert_eq!(stored.data["spec"]["readinessProbePort"], json!(8081));
    assert!(stored.data["spec"]["affinity"]["podAntiAffinity"].is_object());
    for ps in [custom, secondary] {
        let _ = api
            .delete(
                &ps.metadata.name.unwrap_or_default(),
                &DeleteParams::default(),
            )
            .await;
    }
    cluster.cleanup().await;
}

#[tokio::test]
async fn invalid_policy_servers_are_refused_by_the_apiserver() {
    let Some(cluster) = TestCluster::connect("invalid_policy_servers").await else {
        return;
    };
    let cases = [
        (
            json!({"webhookPort": 9081}),
            "readinessProbePort must differ from webhookPort",
        ),
        (
            json!({"minAvailable": 1, "maxUnavailable": 1}),
            "minAvailable and maxUnavailable are mutually exclusive",
        ),
        (
            json!({"webhookPort": 70000}),
            "should be less than or equal to 65535",
        ),
    ];
    for (patch, message) in cases {
        let mut object = renamed("policyserver-custom-ports.yaml", "invalid");
        for (key, value) in patch.as_object().expect("object") {
            object["spec"][key] = value.clone();
        }
        let err = refusal(&cluster, "policyservers", &object).await;
        assert!(err.contains(message), "expected {message:?} in: {err}");
    }
    let mut long = fixture("policyserver-custom-ports.yaml");
    long["metadata"]["name"] = "x".repeat(64).into();
    let err = refusal(&cluster, "policyservers", &long).await;
    assert!(err.contains("at most 63 characters"), "{err}");
    cluster.cleanup().await;
}

#[tokio::test]
async fn policies_are_validated_on_create_and_update() {
    let Some(cluster) = TestCluster::connect("policies_validated").await else {
        return;
    };
    let mut ap = fixture("admissionpolicy.yaml");
    ap["metadata"]["namespace"] = cluster.namespace.clone().into();
    let mut no_rules = ap.clone();
    no_rules["spec"]["rules"] = json!([]);
    let err = refusal(&cluster, "admissionpolicies", &no_rules).await;
    assert!(err.contains("spec.rules"), "{err}");
    let mut bad_op = ap.clone();
    bad_op["spec"]["rules"][0]["operations"] = json!(["create"]);
    let err = refusal(&cluster, "admissionpolicies", &bad_op).await;
    assert!(err.contains("Unsupported value: \"create\""), "{err}");
    let mut slow = ap.clone();
    slow["spec"]["timeoutEvalSeconds"] = json!(25);
    let err = refusal(&cluster, "admissionpolicies", &slow).await;
    assert!(
        err.contains("timeoutEvalSeconds must not exceed timeoutSeconds"),
        "{err}"
    );

    // Updates: the PolicyServer binding is immutable, protect cannot become monitor.
    let caps: Api<ClusterAdmissionPolicy> = cluster.cluster_wide();
    let cap = create(&caps, &renamed("clusteradmissionpolicy.yaml", "cap"))
        .await
        .expect("CAP accepted");
    let name = cap.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::default();
    let err = caps
        .patch(
            &name,
            &params,
            &Patch::Merge(json!({"spec": {"policyServer": "other"}})),
        )
        .await
        .expect_err("policyServer changed");
    assert!(
        err.to_string().contains("policyServer is immutable"),
        "{err}"
    );
    let err = caps
        .patch(
            &name,
            &params,
            &Patch::Merge(json!({"spec": {"mode": "monitor"}})),
        )
        .await
        .expect_err("protect to monitor");
    assert!(
        err.to_string()
            .contains("mode cannot change from protect to monitor"),
        "{err}"
    );
    caps.patch(
        &name,
        &params,
        &Patch::Merge(json!({"spec": {"timeoutSeconds": 15}})),
    )
    .await
    .expect("other changes are fine");
    let _ = caps.delete(&name, &DeleteParams::default()).await;

    // A namespaced policy in monitor mode can move to protect.
    let aps: Api<AdmissionPolicy> = cluster.namespaced();
    let created = create(&aps, &ap).await.expect("AP accepted");
    let ap_name = created.metadata.name.unwrap_or_default();
    aps.patch(
        &ap_name,
        &params,
        &Patch::Merge(json!({"spec": {"mode": "protect"}})),
    )
    .await
    .expect("monitor to protect");
    cluster.cleanup().await;
}

#[tokio::test]
async fn v1alpha2_is_still_served() {
    let Some(cluster) = TestCluster::connect("v1alpha2_served").await else {
        return;
    };
    let api: Api<PolicyServer> = cluster.cluster_wide();
    let ps = create(&api, &renamed("policyserver-custom-ports.yaml", "old-api"))
        .await
        .expect("created");
    let name = ps.metadata.name.unwrap_or_default();
    let old: Api<api_types::crd::v1alpha2::PolicyServer> = Api::all(cluster.client.clone());
    let read = old.get(&name).await.expect("readable as v1alpha2");
    assert_eq!(read.spec.replicas, 2);
    let _ = api.delete(&name, &DeleteParams::default()).await;
    cluster.cleanup().await;
}
