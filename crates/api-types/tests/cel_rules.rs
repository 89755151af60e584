//! Every CEL rule in the CRDs, with an object it accepts and one it refuses, evaluated the way
//! the apiserver evaluates them (defaults first, `oldSelf` on update).

mod support;

use serde_json::{Value, json};
use support::*;

const KINDS: [&str; 5] = [
    "PolicyServer",
    "ClusterAdmissionPolicy",
    "AdmissionPolicy",
    "ClusterAdmissionPolicyGroup",
    "AdmissionPolicyGroup",
];

fn with_spec(file: &str, patch: Value) -> Value {
    let mut object = yaml(file);
    for (key, value) in patch.as_object().expect("patch is an object") {
        if value.is_null() {
            object["spec"].as_object_mut().expect("spec").remove(key);
        } else {
            object["spec"][key] = value.clone();
        }
    }
    object
}

fn refused(kind: &str, object: &Value, old: Option<&Value>, fragment: &str) {
    match admit(kind, object, old) {
        Ok(()) => panic!("{kind} was accepted, expected a refusal mentioning {fragment:?}"),
        Err(message) => assert!(message.contains(fragment), "{kind}: {message}"),
    }
}

fn accepted(kind: &str, object: &Value, old: Option<&Value>) {
    if let Err(message) = admit(kind, object, old) {
        panic!("{kind} was refused: {message}");
    }
}

#[test]
fn every_rule_compiles_within_budget() {
    for kind in KINDS {
        assert_rules_compile(kind, "v1");
        let schema = storage_schema(kind);
        let rules = collect_rules(&schema);
        assert!(!rules.is_empty(), "{kind} has CEL rules");
        for rule in rules {
            let warnings = analyze(&rule, kind);
            assert!(warnings.is_empty(), "{kind}: {rule}: {warnings:?}");
        }
    }
}

fn collect_rules(schema: &Value) -> Vec<String> {
    let mut rules = Vec::new();
    let mut stack = vec![schema];
    while let Some(node) = stack.pop() {
        if let Some(list) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            rules.extend(
                list.iter()
                    .filter_map(|r| r["rule"].as_str().map(String::from)),
            );
        }
        match node {
            Value::Object(map) => stack.extend(map.values()),
            Value::Array(list) => stack.extend(list.iter()),
            _ => {}
        }
    }
    rules
}

#[test]
fn pdb_fields_are_mutually_exclusive() {
    let file = "policyserver-custom-ports.yaml";
    accepted(
        "PolicyServer",
        &with_spec(file, json!({"minAvailable": 1})),
        None,
    );
    accepted(
        "PolicyServer",
        &with_spec(file, json!({"maxUnavailable": "50%"})),
        None,
    );
    refused(
        "PolicyServer",
        &with_spec(file, json!({"minAvailable": 1, "maxUnavailable": 1})),
        None,
        "mutually exclusive",
    );
}

#[test]
fn readiness_port_must_differ_from_webhook_port() {
    let file = "policyserver-custom-ports.yaml";
    accepted("PolicyServer", &yaml(file), None);
    refused(
        "PolicyServer",
        &with_spec(file, json!({"webhookPort": 9081})),
        None,
        "readinessProbePort must differ",
    );
    // The clash also counts when one side comes from the defaults (8443 / 8081).
    refused(
        "PolicyServer",
        &with_spec(
            file,
            json!({"webhookPort": null, "readinessProbePort": 8443}),
        ),
        None,
        "readinessProbePort must differ",
    );
    refused(
        "PolicyServer",
        &with_spec(
            file,
            json!({"webhookPort": 8081, "readinessProbePort": null}),
        ),
        None,
        "readinessProbePort must differ",
    );
}

#[test]
fn policy_server_name_fits_in_a_label() {
    let mut object = yaml("policyserver-custom-ports.yaml");
    object["metadata"]["name"] = "a".repeat(63).into();
    accepted("PolicyServer", &object, None);
    object["metadata"]["name"] = "a".repeat(64).into();
    refused("PolicyServer", &object, None, "at most 63");
}

#[test]
fn policy_server_binding_is_immutable() {
    let cases = [
        ("ClusterAdmissionPolicy", "clusteradmissionpolicy.yaml"),
        ("AdmissionPolicy", "admissionpolicy.yaml"),
        (
            "ClusterAdmissionPolicyGroup",
            "clusteradmissionpolicygroup.yaml",
        ),
        ("AdmissionPolicyGroup", "admissionpolicygroup.yaml"),
    ];
    for (kind, file) in cases {
        let old = yaml(file);
        let unchanged = with_spec(file, json!({"timeoutSeconds": 12}));
        accepted(kind, &unchanged, Some(&old));
        let moved = with_spec(file, json!({"policyServer": "elsewhere"}));
        refused(kind, &moved, Some(&old), "policyServer is immutable");
        // Creating a policy bound to any server is fine.
        accepted(kind, &moved, None);
    }
}

#[test]
fn protect_cannot_become_monitor() {
    let cases = [
        ("ClusterAdmissionPolicy", "clusteradmissionpolicy.yaml"),
        ("AdmissionPolicy", "admissionpolicy.yaml"),
        (
            "ClusterAdmissionPolicyGroup",
            "clusteradmissionpolicygroup.yaml",
        ),
        ("AdmissionPolicyGroup", "admissionpolicygroup.yaml"),
    ];
    for (kind, file) in cases {
        let protect = with_spec(file, json!({"mode": "protect"}));
        let monitor = with_spec(file, json!({"mode": "monitor"}));
        accepted(kind, &protect, Some(&monitor));
        accepted(kind, &monitor, Some(&monitor));
        refused(kind, &monitor, Some(&protect), "protect to monitor");
        // A policy without a mode defaults to protect, so the same applies.
        let defaulted = with_spec(file, json!({"mode": null}));
        refused(kind, &monitor, Some(&defaulted), "protect to monitor");
    }
}

#[test]
fn evaluation_timeout_fits_in_webhook_timeout() {
    for (kind, file) in [
        ("ClusterAdmissionPolicy", "clusteradmissionpolicy.yaml"),
        ("AdmissionPolicy", "admissionpolicy.yaml"),
    ] {
        accepted(
            kind,
            &with_spec(
                file,
                json!({"timeoutSeconds": 10, "timeoutEvalSeconds": 10}),
            ),
            None,
        );
        refused(
            kind,
            &with_spec(file, json!({"timeoutSeconds": 5, "timeoutEvalSeconds": 6})),
            None,
            "timeoutEvalSeconds must not exceed",
        );
        // Against the default timeoutSeconds of 10.
        refused(
            kind,
            &with_spec(
                file,
                json!({"timeoutSeconds": null, "timeoutEvalSeconds": 15}),
            ),
            None,
            "timeoutEvalSeconds must not exceed",
        );
    }
}

#[test]
fn cluster_policy_names_leave_room_for_the_webhook_name() {
    for (kind, file, longest) in [
        ("ClusterAdmissionPolicy", "clusteradmissionpolicy.yaml", 220),
        (
            "ClusterAdmissionPolicyGroup",
            "clusteradmissionpolicygroup.yaml",
            214,
        ),
    ] {
        let mut object = yaml(file);
        object["metadata"]["name"] = "p".repeat(longest).into();
        accepted(kind, &object, None);
        object["metadata"]["name"] = "p".repeat(longest + 1).into();
        refused(kind, &object, None, "must fit in 253");
    }
}
