//! One accepting and at least one refusing case per check.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::crd::{
    ClusterPolicyGroupMember, ClusterWideFields, GroupVerdict, Operation, PolicyGroupMember,
    PolicyRule,
};

fn fields(violations: &[Violation]) -> Vec<&str> {
    violations.iter().map(|v| v.field.as_str()).collect()
}

fn pods_rule() -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        api_versions: vec!["v1".into()],
        operations: vec![Operation::Create],
        resources: vec!["pods".into()],
        scope: None,
    }
}

fn module() -> PolicyModule {
    PolicyModule {
        module: "registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2".into(),
        settings: None,
        mutating: false,
        timeout_eval_seconds: None,
        message: None,
    }
}

fn ap() -> AdmissionPolicySpec {
    AdmissionPolicySpec {
        common: PolicySpecCommon::new(vec![pods_rule()]),
        module: module(),
    }
}

fn cap() -> ClusterAdmissionPolicySpec {
    ClusterAdmissionPolicySpec {
        common: PolicySpecCommon::new(vec![pods_rule()]),
        module: module(),
        cluster: ClusterWideFields::default(),
        context_aware_resources: None,
    }
}

fn member(timeout: Option<i32>) -> PolicyGroupMember {
    PolicyGroupMember {
        module: "ghcr.io/kubewarden/policies/trusted-repos:v0.2.0".into(),
        settings: None,
        timeout_eval_seconds: timeout,
    }
}

fn apg(expression: &str, members: &[(&str, Option<i32>)]) -> AdmissionPolicyGroupSpec {
    AdmissionPolicyGroupSpec {
        common: PolicySpecCommon::new(vec![pods_rule()]),
        verdict: GroupVerdict {
            expression: expression.into(),
            message: "rejected".into(),
        },
        policies: members
            .iter()
            .map(|(name, timeout)| (name.to_string(), member(*timeout)))
            .collect(),
    }
}

#[test]
fn valid_objects_have_no_violations() {
    let ps = PolicyServerSpec::new("ghcr.io/kubewarden/policy-server:latest", 1);
    assert_eq!(validate_policy_server("default", &ps), []);
    assert_eq!(validate_admission_policy("team-a", "p", &ap()), []);
    assert_eq!(validate_cluster_admission_policy("p", &cap()), []);
    let group = apg("a() && !b()", &[("a", Some(3)), ("b", None)]);
    assert_eq!(validate_admission_policy_group("team-a", "g", &group), []);
    let capg = ClusterAdmissionPolicyGroupSpec {
        common: PolicySpecCommon::new(vec![pods_rule()]),
        verdict: group.verdict.clone(),
        cluster: ClusterWideFields::default(),
        policies: group
            .policies
            .iter()
            .map(|(k, m)| {
                let member = ClusterPolicyGroupMember {
                    member: m.clone(),
                    context_aware_resources: None,
                };
                (k.clone(), member)
            })
            .collect(),
    };
    assert_eq!(validate_cluster_admission_policy_group("g", &capg), []);
}

#[test]
fn policy_server_checks() {
    let mut ps = PolicyServerSpec::new("", -1);
    ps.min_available = Some(IntOrString::Int(1));
    ps.max_unavailable = Some(IntOrString::Int(1));
    ps.webhook_port = 70000;
    ps.readiness_probe_port = 70000;
    ps.metrics_port = Some(0);
    ps.namespaced_policies_capabilities = Some(vec!["oci/*".into(), "oci/v9/*".into()]);
    let q = |s: &str| Quantity(s.to_string());
    ps.limits = Some(BTreeMap::from([
        ("cpu".into(), q("500m")),
        ("memory".into(), q("-1")),
    ]));
    ps.requests = Some(BTreeMap::from([
        ("cpu".into(), q("1")),
        ("gpu".into(), q("lots")),
    ]));
    let violations = validate_policy_server(&"x".repeat(64), &ps);
    assert_eq!(
        fields(&violations),
        [
            "metadata.name",
            "spec.image",
            "spec.replicas",
            "spec.minAvailable",
            "spec.webhookPort",
            "spec.readinessProbePort",
            "spec.metricsPort",
            "spec.readinessProbePort",
            "spec.limits.memory",
            "spec.requests.gpu",
            "spec.requests.cpu",
            "spec.namespacedPoliciesCapabilities[1]",
        ],
        "{}",
        describe(&violations)
    );
    assert!(describe(&violations).contains("must differ from webhookPort (70000)"));
}

#[test]
fn requests_within_limits_are_fine() {
    let mut ps = PolicyServerSpec::new("image", 1);
    let q = |s: &str| Quantity(s.to_string());
    ps.limits = Some(BTreeMap::from([("memory".into(), q("1Gi"))]));
    ps.requests = Some(BTreeMap::from([("memory".into(), q("512Mi"))]));
    assert_eq!(validate_policy_server("default", &ps), []);
}

#[test]
fn rule_checks() {
    let mut spec = cap();
    spec.common.rules = vec![];
    assert_eq!(
        fields(&validate_cluster_admission_policy("p", &spec)),
        ["spec.rules"]
    );
    let mut rule = pods_rule();
    rule.operations.clear();
    rule.api_versions = vec!["".into()];
    rule.resources.clear();
    spec.common.rules = vec![rule];
    assert_eq!(
        fields(&validate_cluster_admission_policy("p", &spec)),
        [
            "spec.rules[0].operations",
            "spec.rules[0].apiVersions",
            "spec.rules[0].resources"
        ]
    );
}

#[test]
fn namespaced_policies_cannot_target_everything_or_reports() {
    let mut spec = ap();
    spec.common.rules[0].api_versions = vec!["*".into()];
    spec.common.rules[0].resources = vec!["*".into()];
    assert_eq!(
        fields(&validate_admission_policy("ns", "p", &spec)),
        ["spec.rules[0]"]
    );
    // The same rule is fine for a cluster-wide policy.
    let mut cluster = cap();
    cluster.common.rules = spec.common.rules.clone();
    assert_eq!(validate_cluster_admission_policy("p", &cluster), []);

    let mut spec = ap();
    spec.common.rules[0].api_groups = Some(vec!["wgpolicyk8s.io".into()]);
    spec.common.rules[0].resources = vec!["policyreports".into()];
    assert_eq!(
        fields(&validate_admission_policy("ns", "p", &spec)),
        ["spec.rules[0].resources"]
    );
}

#[test]
fn match_condition_checks() {
    let condition = |name: &str, expression: &str| MatchCondition {
        name: name.into(),
        expression: expression.into(),
    };
    let mut spec = cap();
    spec.common.match_conditions = Some(vec![
        condition("example.com/ok", "true"),
        condition("ok", "true"),
        condition("ok", ""),
        condition("-bad", "true"),
    ]);
    assert_eq!(
        fields(&validate_cluster_admission_policy("p", &spec)),
        [
            "spec.matchConditions[2].name",
            "spec.matchConditions[2].expression",
            "spec.matchConditions[3].name"
        ]
    );
    spec.common.match_conditions = Some(
        (0..65)
            .map(|i| condition(&format!("c{i}"), "true"))
            .collect(),
    );
    assert_eq!(
        fields(&validate_cluster_admission_policy("p", &spec)),
        ["spec.matchConditions"]
    );
}

#[test]
fn timeouts() {
    let mut spec = ap();
    spec.common.timeout_seconds = 1;
    spec.module.timeout_eval_seconds = Some(31);
    assert_eq!(
        fields(&validate_admission_policy("ns", "p", &spec)),
        [
            "spec.timeoutSeconds",
            "spec.timeoutEvalSeconds",
            "spec.timeoutEvalSeconds"
        ]
    );
    spec.common.timeout_seconds = 30;
    spec.module.timeout_eval_seconds = Some(30);
    assert_eq!(validate_admission_policy("ns", "p", &spec), []);
}

#[test]
fn module_urls_and_settings() {
    let mut spec = ap();
    for good in [
        "registry://r/p:v1",
        "ghcr.io/org/p:v1",
        "https://h/p.wasm",
        "file:///p.wasm",
    ] {
        spec.module.module = good.into();
        assert_eq!(validate_admission_policy("ns", "p", &spec), [], "{good}");
    }
    for bad in ["", "ftp://h/p.wasm", "https://"] {
        spec.module.module = bad.into();
        assert_eq!(
            fields(&validate_admission_policy("ns", "p", &spec)),
            ["spec.module"],
            "{bad}"
        );
    }
    let mut spec = ap();
    spec.module.settings = Some(serde_json::json!([1, 2]));
    assert_eq!(
        fields(&validate_admission_policy("ns", "p", &spec)),
        ["spec.settings"]
    );
}

#[test]
fn webhook_name_length_includes_the_namespace() {
    let namespace = "n".repeat(63);
    let fits = "p".repeat(253 - ".kubewarden.admission".len() - "namespaced-".len() - 64);
    assert_eq!(validate_admission_policy(&namespace, &fits, &ap()), []);
    let too_long = format!("{fits}p");
    assert_eq!(
        fields(&validate_admission_policy(&namespace, &too_long, &ap())),
        ["metadata.name"]
    );
}

#[test]
fn updates() {
    let old = PolicySpecCommon::new(vec![pods_rule()]);
    let mut new = old.clone();
    new.mode = PolicyMode::Monitor;
    new.policy_server = "other".into();
    assert_eq!(
        fields(&validate_policy_update(&old, &new)),
        ["spec.policyServer", "spec.mode"]
    );
    let mut monitor = old.clone();
    monitor.mode = PolicyMode::Monitor;
    assert_eq!(validate_policy_update(&monitor, &old), []);
}

/// Members of a test group: name and timeoutEvalSeconds.
type Members<'a> = &'a [(&'a str, Option<i32>)];

#[test]
fn group_checks() {
    let cases: [(&str, Members, &[&str]); 6] = [
        ("a()", &[], &["spec.policies", "spec.expression"]),
        ("a() &&", &[("a", None)], &["spec.expression"]),
        ("a() || c()", &[("a", None)], &["spec.expression"]),
        ("if()", &[("if", None)], &["spec.policies.if"]),
        ("true", &[("9lives", None)], &["spec.policies.9lives"]),
        (
            "a() && b()",
            &[("a", Some(8)), ("b", Some(8))],
            &["spec.policies"],
        ),
    ];
    for (expression, members, expected) in cases {
        let spec = apg(expression, members);
        let violations = validate_admission_policy_group("ns", "g", &spec);
        assert_eq!(
            fields(&violations),
            expected,
            "{expression}: {}",
            describe(&violations)
        );
    }
    let mut spec = apg("a()", &[("a", Some(12))]);
    spec.verdict.message = " ".into();
    assert_eq!(
        fields(&validate_admission_policy_group("ns", "g", &spec)),
        [
            "spec.message",
            "spec.policies.a.timeoutEvalSeconds",
            "spec.policies"
        ]
    );
}
