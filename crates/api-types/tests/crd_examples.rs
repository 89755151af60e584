//! The seed and upstream example manifests deserialize into our types, get the same defaults
//! the apiserver would give them from our CRDs, pass the CRDs' CEL rules, and re-serialize
//! without losing anything.

mod support;

use api_types::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    PolicyMode, PolicyServer,
};
use api_types::defaults;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use support::*;

/// Deserializes a fixture, checks the round trip, and returns the typed object.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    file: &str,
    kind: &str,
) -> T {
    let raw = yaml(file);
    let typed: T = serde_json::from_value(raw.clone())
        .unwrap_or_else(|e| panic!("{file} does not deserialize: {e}"));
    let written = serde_json::to_value(&typed).expect("serializes");
    // Nothing the user wrote is lost...
    assert_contained(&raw, &written, file);
    // ...the defaults our types fill in are exactly those the CRD makes the apiserver fill in...
    pretty_assertions::assert_eq!(written, defaulted(kind, &raw), "{file}: defaults differ");
    // ...the stored object passes the CEL rules, and reads back identical.
    admit(kind, &written, None).unwrap_or_else(|e| panic!("{file} refused: {e}"));
    let again: T = serde_json::from_value(written).expect("reads back");
    assert_eq!(again, typed, "{file}: second round trip differs");
    typed
}

#[test]
fn seed_custom_ports_policy_server() {
    let ps: PolicyServer = round_trip("policyserver-custom-ports.yaml", "PolicyServer");
    assert_eq!(ps.spec.webhook_port, 9443);
    assert_eq!(ps.spec.readiness_probe_port, 9081);
    assert_eq!(ps.spec.metrics_port, None);
    assert_eq!(ps.spec.effective_metrics_port(defaults::METRICS_PORT), 8080);
    assert_eq!(ps.spec.replicas, Some(2));
}

#[test]
fn seed_secondary_policy_server_with_affinity() {
    let ps: PolicyServer = round_trip("policyserver-secondary-affinity.yaml", "PolicyServer");
    // Ports not given take the documented defaults.
    assert_eq!(ps.spec.webhook_port, 8443);
    assert_eq!(ps.spec.readiness_probe_port, 8081);
    let term = &ps
        .spec
        .affinity
        .and_then(|a| a.pod_anti_affinity)
        .and_then(|p| p.required_during_scheduling_ignored_during_execution)
        .expect("anti-affinity")[0];
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    let expression = &term
        .label_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref())
        .expect("expressions")[0];
    assert_eq!(expression.key, "app.kubernetes.io/component");
    assert_eq!(
        expression.values.as_deref(),
        Some(
            &[
                "policy-server".to_string(),
                "kubewarden-controller".to_string()
            ][..]
        )
    );
}

#[test]
fn policy_server_with_every_field() {
    let ps: PolicyServer = round_trip("policyserver-full.yaml", "PolicyServer");
    assert_eq!(ps.spec.metrics_port, Some(9090));
    assert_eq!(
        ps.spec.effective_namespaced_policies_capabilities(),
        ["oci/*", "kubernetes/can_i"]
    );
}

#[test]
fn cluster_admission_policy() {
    let cap: ClusterAdmissionPolicy =
        round_trip("clusteradmissionpolicy.yaml", "ClusterAdmissionPolicy");
    assert_eq!(cap.spec.common.policy_server, "default");
    assert_eq!(cap.spec.common.mode, PolicyMode::Protect);
    assert!(cap.spec.common.background_audit);
    assert_eq!(cap.spec.common.timeout_seconds, 10);
    assert!(!cap.spec.cluster.allow_inside_admission_controller_namespace);
    assert!(cap.spec.module.mutating);
}

#[test]
fn admission_policy() {
    let ap: AdmissionPolicy = round_trip("admissionpolicy.yaml", "AdmissionPolicy");
    assert_eq!(ap.spec.common.mode, PolicyMode::Monitor);
    assert_eq!(ap.spec.module.timeout_eval_seconds, Some(5));
    assert_eq!(ap.spec.module.settings, None);
}

#[test]
fn policy_groups() {
    let capg: ClusterAdmissionPolicyGroup = round_trip(
        "clusteradmissionpolicygroup.yaml",
        "ClusterAdmissionPolicyGroup",
    );
    assert_eq!(capg.spec.policies.len(), 3);
    assert_eq!(
        capg.spec.policies["signed_by_bob"]
            .member
            .timeout_eval_seconds,
        Some(4)
    );
    let apg: AdmissionPolicyGroup = round_trip("admissionpolicygroup.yaml", "AdmissionPolicyGroup");
    assert_eq!(apg.spec.verdict.expression, "trusted() && not_latest()");
}

#[test]
fn explicit_null_settings_survive() {
    let mut raw = yaml("admissionpolicy.yaml");
    raw["spec"]["settings"] = Value::Null;
    let ap: AdmissionPolicy = serde_json::from_value(raw).expect("deserializes");
    assert_eq!(ap.spec.module.settings, Some(Value::Null));
    let written = serde_json::to_value(&ap).expect("serializes");
    assert_eq!(written["spec"]["settings"], Value::Null);
    assert!(
        written["spec"]
            .as_object()
            .expect("object")
            .contains_key("settings")
    );
}

#[test]
fn v1alpha2_manifests_still_deserialize() {
    let mut raw = yaml("admissionpolicy.yaml");
    raw["apiVersion"] = "policies.kubewarden.io/v1alpha2".into();
    for key in ["timeoutEvalSeconds", "message"] {
        raw["spec"].as_object_mut().expect("object").remove(key);
    }
    let ap: api_types::crd::v1alpha2::AdmissionPolicy =
        serde_json::from_value(raw).expect("v1alpha2 deserializes");
    assert_eq!(
        ap.spec.fields.policy_server,
        "reserved-instance-for-tenant-a"
    );
}
