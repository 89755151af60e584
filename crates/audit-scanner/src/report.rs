//! One report per audited resource, in either format. Pure: the scanner stores what these
//! functions build.

use std::collections::BTreeMap;

use api_types::crd::PolicyMode;
use api_types::naming::labels;
use api_types::reports::{
    ReportSummary, ResultOutcome, ResultProperties, ResultSeverity, ResultTimestamp, openreports,
    wgpolicy,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use serde::Serialize;

use crate::policies::AuditPolicy;

/// Value of `source` in every result.
pub const SOURCE: &str = "kubewarden";

/// Which report CRDs to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportKind {
    /// `openreports.io/v1alpha1` Report / ClusterReport.
    Openreports,
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport / ClusterPolicyReport.
    Policyreport,
}

/// The resource a report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedResource {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub uid: String,
    pub resource_version: String,
}

/// What a policy said about the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Rejected, with the policy's message.
    Fail(String),
    /// The policy could not be evaluated (unreachable server, timeout, code 500...).
    Error(String),
}

#[derive(Debug, Clone)]
pub struct PolicyResult {
    pub policy: AuditPolicy,
    pub verdict: Verdict,
    pub timestamp: ResultTimestamp,
}

/// A report ready to be stored, in the chosen format and scope.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Report(openreports::Report),
    ClusterReport(openreports::ClusterReport),
    PolicyReport(wgpolicy::PolicyReport),
    ClusterPolicyReport(wgpolicy::ClusterPolicyReport),
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        fn value<T: Serialize>(t: &T) -> serde_json::Value {
            serde_json::to_value(t).unwrap_or_default()
        }
        match self {
            Report::Report(r) => value(r),
            Report::ClusterReport(r) => value(r),
            Report::PolicyReport(r) => value(r),
            Report::ClusterPolicyReport(r) => value(r),
        }
    }
}

fn severity(policy: &AuditPolicy) -> Option<ResultSeverity> {
    if policy.mode == PolicyMode::Monitor {
        return Some(ResultSeverity::Info);
    }
    match policy.severity.as_deref()?.to_ascii_lowercase().as_str() {
        "critical" => Some(ResultSeverity::Critical),
        "high" => Some(ResultSeverity::High),
        "medium" => Some(ResultSeverity::Medium),
        "low" => Some(ResultSeverity::Low),
        "info" => Some(ResultSeverity::Info),
        _ => None,
    }
}

fn properties(policy: &AuditPolicy) -> ResultProperties {
    let mut properties = BTreeMap::new();
    let kind = if policy.mutating {
        "mutating"
    } else {
        "validating"
    };
    properties.insert(kind.to_string(), "true".to_string());
    if policy.context_aware {
        properties.insert("context-aware".to_string(), "true".to_string());
    }
    properties.insert(
        "policy-resource-version".to_string(),
        policy.resource_version.clone(),
    );
    properties.insert("policy-uid".to_string(), policy.uid.clone());
    properties.insert("policy-name".to_string(), policy.name.clone());
    if let Some(namespace) = &policy.namespace {
        properties.insert("policy-namespace".to_string(), namespace.clone());
    }
    properties
}

fn outcome(verdict: &Verdict) -> (ResultOutcome, Option<String>) {
    match verdict {
        Verdict::Pass => (ResultOutcome::Pass, None),
        Verdict::Fail(message) => (ResultOutcome::Fail, Some(message.clone())),
        Verdict::Error(message) => (ResultOutcome::Error, Some(message.clone())),
    }
}

fn summary(results: &[PolicyResult], skipped: i32) -> ReportSummary {
    let count = |f: fn(&Verdict) -> bool| {
        i32::try_from(results.iter().filter(|r| f(&r.verdict)).count()).unwrap_or(i32::MAX)
    };
    ReportSummary {
        pass: count(|v| matches!(v, Verdict::Pass)),
        fail: count(|v| matches!(v, Verdict::Fail(_))),
        warn: 0,
        error: count(|v| matches!(v, Verdict::Error(_))),
        skip: skipped,
    }
}

fn metadata(resource: &AuditedResource, run_uid: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(resource.uid.clone()),
        namespace: resource.namespace.clone(),
        labels: Some(BTreeMap::from([
            (
                labels::MANAGED_BY.to_string(),
                labels::REPORT_MANAGED_BY_VALUE.to_string(),
            ),
            (
                labels::REPORT_VERSION.to_string(),
                labels::REPORT_VERSION_VALUE.to_string(),
            ),
            (labels::AUDIT_RUN_UID.to_string(), run_uid.to_string()),
        ])),
        owner_references: Some(vec![OwnerReference {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            name: resource.name.clone(),
            uid: resource.uid.clone(),
            ..OwnerReference::default()
        }]),
        ..ObjectMeta::default()
    }
}

fn scope(resource: &AuditedResource) -> ObjectReference {
    ObjectReference {
        api_version: Some(resource.api_version.clone()),
        kind: Some(resource.kind.clone()),
        name: Some(resource.name.clone()),
        namespace: resource.namespace.clone(),
        uid: Some(resource.uid.clone()),
        resource_version: Some(resource.resource_version.clone()),
        ..ObjectReference::default()
    }
}

macro_rules! results {
    ($result:ident, $explanation:ident, $subjects:ident, $results:expr) => {
        $results
            .iter()
            .map(|r| {
                let (result, message) = outcome(&r.verdict);
                $result {
                    source: Some(SOURCE.to_string()),
                    policy: r.policy.unique_name.clone(),
                    rule: None,
                    category: r.policy.category.clone(),
                    severity: severity(&r.policy),
                    timestamp: Some(r.timestamp),
                    result: Some(result),
                    scored: true,
                    $subjects: None,
                    resource_selector: Some(LabelSelector::default()),
                    $explanation: message,
                    properties: Some(properties(&r.policy)),
                }
            })
            .collect()
    };
}

/// Builds the report of `resource`: a namespaced report for namespaced resources, a cluster
/// report otherwise. `skipped` counts the policies whose object selector left it out.
pub fn build(
    kind: ReportKind,
    resource: &AuditedResource,
    results: &[PolicyResult],
    skipped: i32,
    run_uid: &str,
) -> Report {
    let metadata = metadata(resource, run_uid);
    let scope = Some(scope(resource));
    let summary = summary(results, skipped);
    let source = Some(SOURCE.to_string());
    let namespaced = resource.namespace.is_some();
    match (kind, namespaced) {
        (ReportKind::Openreports, true) => Report::Report(openreports::Report {
            metadata,
            spec: openreports::ReportFields {
                source,
                scope,
                scope_selector: None,
                summary,
                results: results!(ReportResult, description, subjects, results),
            },
        }),
        (ReportKind::Openreports, false) => Report::ClusterReport(openreports::ClusterReport {
            metadata,
            spec: openreports::ClusterReportFields {
                source,
                scope,
                scope_selector: None,
                summary,
                results: results!(ReportResult, description, subjects, results),
            },
        }),
        (ReportKind::Policyreport, true) => Report::PolicyReport(wgpolicy::PolicyReport {
            metadata,
            spec: wgpolicy::PolicyReportFields {
                source,
                scope,
                scope_selector: None,
                summary,
                results: results!(PolicyReportResult, message, resources, results),
            },
        }),
        (ReportKind::Policyreport, false) => {
            Report::ClusterPolicyReport(wgpolicy::ClusterPolicyReport {
                metadata,
                spec: wgpolicy::ClusterPolicyReportFields {
                    source,
                    scope,
                    scope_selector: None,
                    summary,
                    results: results!(PolicyReportResult, message, resources, results),
                },
            })
        }
    }
}

use openreports::ReportResult;
use wgpolicy::PolicyReportResult;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::AuditPolicy;
    use api_types::naming::PolicyKind;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    fn policy(name: &str, mode: PolicyMode, mutating: bool) -> AuditPolicy {
        AuditPolicy {
            kind: PolicyKind::ClusterAdmissionPolicy,
            name: name.to_string(),
            namespace: None,
            unique_name: format!("clusterwide-{name}"),
            policy_server: "default".to_string(),
            mode,
            mutating,
            context_aware: false,
            rules: vec![],
            object_selector: None,
            namespace_selector: None,
            background_audit: true,
            active: true,
            category: Some("PSP".to_string()),
            severity: Some("high".to_string()),
            uid: format!("uid-{name}"),
            resource_version: "3".to_string(),
        }
    }

    fn pod() -> AuditedResource {
        AuditedResource {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "nginx".into(),
            namespace: Some("team-a".into()),
            uid: "pod-uid".into(),
            resource_version: "42".into(),
        }
    }

    fn results() -> Vec<PolicyResult> {
        let at = ResultTimestamp {
            seconds: 1700000000,
            nanos: 0,
        };
        vec![
            PolicyResult {
                policy: policy("a", PolicyMode::Protect, false),
                verdict: Verdict::Pass,
                timestamp: at,
            },
            PolicyResult {
                policy: policy("b", PolicyMode::Monitor, true),
                verdict: Verdict::Fail("no".into()),
                timestamp: at,
            },
            PolicyResult {
                policy: policy("c", PolicyMode::Protect, false),
                verdict: Verdict::Error("down".into()),
                timestamp: at,
            },
        ]
    }

    #[test]
    fn openreports_report_for_a_pod() {
        let report = build(ReportKind::Openreports, &pod(), &results(), 1, "run-1").to_json();
        assert_eq!(report["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(report["kind"], "Report");
        assert_eq!(report["metadata"]["name"], "pod-uid");
        assert_eq!(report["metadata"]["namespace"], "team-a");
        assert_eq!(
            report["metadata"]["labels"]["kubewarden.io/audit-scanner-run-uid"],
            "run-1"
        );
        assert_eq!(
            report["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "kubewarden"
        );
        assert_eq!(
            report["metadata"]["labels"]["kubewarden.io/policyreport-version"],
            "v2"
        );
        assert_eq!(
            report["metadata"]["ownerReferences"],
            json!([{"apiVersion": "v1", "kind": "Pod", "name": "nginx", "uid": "pod-uid"}])
        );
        assert_eq!(report["scope"]["kind"], "Pod");
        assert_eq!(
            report["summary"],
            json!({"pass": 1, "fail": 1, "warn": 0, "error": 1, "skip": 1})
        );
        let results = report["results"].as_array().expect("results");
        assert_eq!(results[0]["policy"], "clusterwide-a");
        assert_eq!(results[0]["result"], "pass");
        assert_eq!(results[0]["severity"], "high");
        assert_eq!(results[0]["category"], "PSP");
        assert_eq!(results[0]["source"], "kubewarden");
        assert_eq!(results[0]["scored"], true);
        assert_eq!(results[0]["properties"]["validating"], "true");
        assert_eq!(results[0]["properties"]["policy-uid"], "uid-a");
        assert!(results[0].get("description").is_none());
        assert_eq!(results[1]["result"], "fail");
        assert_eq!(results[1]["severity"], "info", "monitor mode reports info");
        assert_eq!(results[1]["description"], "no");
        assert_eq!(results[1]["properties"]["mutating"], "true");
        assert_eq!(results[2]["result"], "error");
    }

    #[test]
    fn policy_report_formats() {
        let report = build(ReportKind::Policyreport, &pod(), &results(), 0, "r").to_json();
        assert_eq!(report["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(report["kind"], "PolicyReport");
        assert_eq!(report["results"][1]["message"], "no");

        let mut namespace = pod();
        namespace.namespace = None;
        namespace.kind = "Namespace".into();
        let report = build(ReportKind::Policyreport, &namespace, &results(), 0, "r").to_json();
        assert_eq!(report["kind"], "ClusterPolicyReport");
        assert!(report["metadata"].get("namespace").is_none());
        let report = build(ReportKind::Openreports, &namespace, &results(), 0, "r").to_json();
        assert_eq!(report["kind"], "ClusterReport");
    }
}
