//! The policies an audit evaluates, whatever their kind, and which of them apply to a
//! namespace. Pure: the scanner lists the objects, these functions decide.

use std::collections::BTreeMap;

use api_types::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    Operation, PolicyMode, PolicyRule, PolicySpecCommon, PolicyStatusPhase,
};
use api_types::naming::{PolicyKind, annotations, policy_unique_name};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

/// One policy, as much of it as the audit needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPolicy {
    pub kind: PolicyKind,
    pub name: String,
    /// Namespace of AdmissionPolicies and AdmissionPolicyGroups.
    pub namespace: Option<String>,
    pub unique_name: String,
    pub policy_server: String,
    pub mode: PolicyMode,
    pub mutating: bool,
    pub context_aware: bool,
    pub rules: Vec<PolicyRule>,
    pub object_selector: Option<LabelSelector>,
    /// Cluster-wide kinds only.
    pub namespace_selector: Option<LabelSelector>,
    pub background_audit: bool,
    pub active: bool,
    pub category: Option<String>,
    pub severity: Option<String>,
    pub uid: String,
    pub resource_version: String,
}

/// Why a policy is left out of an audit (logged at debug level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotActive,
    BackgroundAuditDisabled,
    NoCreateRule,
    OnlyWildcardRules,
}

impl AuditPolicy {
    fn new<K: kube::Resource<DynamicType = ()>>(
        kind: PolicyKind,
        object: &K,
        common: &PolicySpecCommon,
        phase: Option<PolicyStatusPhase>,
    ) -> Self {
        let namespace = object.namespace();
        let name = object.name_any();
        AuditPolicy {
            kind,
            unique_name: policy_unique_name(kind, namespace.as_deref().unwrap_or(""), &name),
            name,
            namespace,
            policy_server: common.policy_server.clone(),
            mode: common.mode,
            mutating: false,
            context_aware: false,
            rules: common.rules.clone(),
            object_selector: common.object_selector.clone(),
            namespace_selector: None,
            background_audit: common.background_audit,
            active: phase == Some(PolicyStatusPhase::Active),
            category: object
                .annotations()
                .get(annotations::POLICY_CATEGORY)
                .cloned(),
            severity: object
                .annotations()
                .get(annotations::POLICY_SEVERITY)
                .cloned(),
            uid: object.uid().unwrap_or_default(),
            resource_version: object.resource_version().unwrap_or_default(),
        }
    }

    pub fn from_cluster_admission_policy(policy: &ClusterAdmissionPolicy) -> Self {
        let phase = policy.status.as_ref().and_then(|s| s.policy_status);
        AuditPolicy {
            mutating: policy.spec.module.mutating,
            context_aware: policy
                .spec
                .context_aware_resources
                .as_ref()
                .is_some_and(|r| !r.is_empty()),
            namespace_selector: policy.spec.cluster.namespace_selector.clone(),
            ..Self::new(
                PolicyKind::ClusterAdmissionPolicy,
                policy,
                &policy.spec.common,
                phase,
            )
        }
    }

    pub fn from_admission_policy(policy: &AdmissionPolicy) -> Self {
        let phase = policy.status.as_ref().and_then(|s| s.policy_status);
        AuditPolicy {
            mutating: policy.spec.module.mutating,
            ..Self::new(
                PolicyKind::AdmissionPolicy,
                policy,
                &policy.spec.common,
                phase,
            )
        }
    }

    pub fn from_cluster_admission_policy_group(policy: &ClusterAdmissionPolicyGroup) -> Self {
        let phase = policy.status.as_ref().and_then(|s| s.policy_status);
        AuditPolicy {
            context_aware: policy.spec.policies.values().any(|m| {
                m.context_aware_resources
                    .as_ref()
                    .is_some_and(|r| !r.is_empty())
            }),
            namespace_selector: policy.spec.cluster.namespace_selector.clone(),
            ..Self::new(
                PolicyKind::ClusterAdmissionPolicyGroup,
                policy,
                &policy.spec.common,
                phase,
            )
        }
    }

    pub fn from_admission_policy_group(policy: &AdmissionPolicyGroup) -> Self {
        let phase = policy.status.as_ref().and_then(|s| s.policy_status);
        Self::new(
            PolicyKind::AdmissionPolicyGroup,
            policy,
            &policy.spec.common,
            phase,
        )
    }

    /// Why the policy cannot be audited, if it cannot.
    pub fn skip_reason(&self) -> Option<Skip> {
        if !self.active {
            return Some(Skip::NotActive);
        }
        if !self.background_audit {
            return Some(Skip::BackgroundAuditDisabled);
        }
        let creates = |r: &&PolicyRule| {
            r.operations
                .iter()
                .any(|o| matches!(o, Operation::Create | Operation::All))
        };
        if !self.rules.iter().any(|r| creates(&r)) {
            return Some(Skip::NoCreateRule);
        }
        if self.targets().is_empty() {
            return Some(Skip::OnlyWildcardRules);
        }
        None
    }

    /// The resources the policy's CREATE rules name explicitly. Wildcard groups, versions or
    /// resources and subresources cannot be listed and are left out, as upstream does.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        for rule in &self.rules {
            if !rule
                .operations
                .iter()
                .any(|o| matches!(o, Operation::Create | Operation::All))
            {
                continue;
            }
            let groups = rule
                .api_groups
                .clone()
                .unwrap_or_else(|| vec![String::new()]);
            for group in &groups {
                for version in &rule.api_versions {
                    for resource in &rule.resources {
                        if group == "*"
                            || version == "*"
                            || resource.contains('*')
                            || resource.contains('/')
                        {
                            continue;
                        }
                        let target = Target {
                            group: group.clone(),
                            version: version.clone(),
                            resource: resource.clone(),
                        };
                        if !targets.contains(&target) {
                            targets.push(target);
                        }
                    }
                }
            }
        }
        targets
    }

    /// Whether the policy applies to objects of the namespace with these labels.
    pub fn applies_to_namespace(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        match &self.namespace {
            Some(own) => own == namespace,
            None => self
                .namespace_selector
                .as_ref()
                .is_none_or(|selector| selector_matches(selector, labels)),
        }
    }

    /// Whether the policy applies to an object with these labels.
    pub fn applies_to_object(&self, labels: &BTreeMap<String, String>) -> bool {
        self.object_selector
            .as_ref()
            .is_none_or(|selector| selector_matches(selector, labels))
    }

    pub fn is_cluster_wide(&self) -> bool {
        !self.kind.is_namespaced()
    }
}

/// A resource type named by a policy rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub group: String,
    pub version: String,
    /// Plural resource name, as in the rule.
    pub resource: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}/{}", self.version, self.resource)
        } else {
            write!(f, "{}/{}/{}", self.group, self.version, self.resource)
        }
    }
}

/// Kubernetes label selector semantics: every `matchLabels` entry and every expression must hold.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // An operator the apiserver would have refused: match nothing rather than everything.
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cap(spec: serde_json::Value, phase: &str) -> ClusterAdmissionPolicy {
        serde_json::from_value(json!({
            "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
            "metadata": {"name": "p", "uid": "u1", "resourceVersion": "7",
                         "annotations": {"io.kubewarden.policy.severity": "high", "io.kubewarden.policy.category": "PSP"}},
            "spec": spec,
            "status": {"policyStatus": phase}
        }))
        .expect("policy")
    }

    fn rules(operations: serde_json::Value, resources: serde_json::Value) -> serde_json::Value {
        json!([{"apiGroups": ["", "apps"], "apiVersions": ["v1"], "resources": resources, "operations": operations}])
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selection_follows_upstream() {
        let base = json!({"module": "m", "mutating": false, "rules": rules(json!(["CREATE"]), json!(["pods", "pods/status", "*"]))});
        let policy = AuditPolicy::from_cluster_admission_policy(&cap(base.clone(), "active"));
        assert_eq!(policy.skip_reason(), None);
        assert_eq!(policy.unique_name, "clusterwide-p");
        assert_eq!(policy.severity.as_deref(), Some("high"));
        assert_eq!(
            policy
                .targets()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["v1/pods", "apps/v1/pods"]
        );

        let pending = AuditPolicy::from_cluster_admission_policy(&cap(base.clone(), "pending"));
        assert_eq!(pending.skip_reason(), Some(Skip::NotActive));

        let mut no_audit = base.clone();
        no_audit["backgroundAudit"] = json!(false);
        let policy = AuditPolicy::from_cluster_admission_policy(&cap(no_audit, "active"));
        assert_eq!(policy.skip_reason(), Some(Skip::BackgroundAuditDisabled));

        let mut updates = base.clone();
        updates["rules"] = rules(json!(["UPDATE", "DELETE"]), json!(["pods"]));
        let policy = AuditPolicy::from_cluster_admission_policy(&cap(updates, "active"));
        assert_eq!(policy.skip_reason(), Some(Skip::NoCreateRule));

        let mut wildcard = base;
        wildcard["rules"] = rules(json!(["*"]), json!(["*"]));
        let policy = AuditPolicy::from_cluster_admission_policy(&cap(wildcard, "active"));
        assert_eq!(policy.skip_reason(), Some(Skip::OnlyWildcardRules));
    }

    #[test]
    fn namespace_and_object_selectors() {
        let spec = json!({"module": "m", "mutating": false, "rules": rules(json!(["CREATE"]), json!(["pods"])),
            "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
            "objectSelector": {"matchLabels": {"audit": "yes"}}});
        let policy = AuditPolicy::from_cluster_admission_policy(&cap(spec, "active"));
        assert!(policy.applies_to_namespace("a", &labels(&[("env", "prod")])));
        assert!(!policy.applies_to_namespace("a", &labels(&[("env", "dev")])));
        assert!(policy.applies_to_object(&labels(&[("audit", "yes")])));
        assert!(!policy.applies_to_object(&labels(&[])));

        let namespaced: AdmissionPolicy = serde_json::from_value(json!({
            "apiVersion": "policies.kubewarden.io/v1", "kind": "AdmissionPolicy",
            "metadata": {"name": "p", "namespace": "team-a"},
            "spec": {"module": "m", "mutating": true, "rules": rules(json!(["CREATE"]), json!(["pods"]))}
        }))
        .expect("policy");
        let policy = AuditPolicy::from_admission_policy(&namespaced);
        assert_eq!(policy.unique_name, "namespaced-team-a-p");
        assert!(policy.applies_to_namespace("team-a", &labels(&[])));
        assert!(!policy.applies_to_namespace("team-b", &labels(&[])));
        assert_eq!(policy.skip_reason(), Some(Skip::NotActive));
    }

    #[test]
    fn selector_operators() {
        let selector: LabelSelector = serde_json::from_value(json!({"matchExpressions": [
            {"key": "a", "operator": "Exists"},
            {"key": "b", "operator": "DoesNotExist"},
            {"key": "c", "operator": "NotIn", "values": ["x"]}
        ]}))
        .expect("selector");
        assert!(selector_matches(&selector, &labels(&[("a", "1")])));
        assert!(selector_matches(
            &selector,
            &labels(&[("a", "1"), ("c", "y")])
        ));
        assert!(!selector_matches(
            &selector,
            &labels(&[("a", "1"), ("c", "x")])
        ));
        assert!(!selector_matches(
            &selector,
            &labels(&[("a", "1"), ("b", "2")])
        ));
        assert!(!selector_matches(&selector, &labels(&[])));
    }
}
