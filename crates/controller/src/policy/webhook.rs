//! The webhook configuration that sends a policy's requests to its policy-server.

use std::collections::BTreeMap;

use api_types::crd::{PolicyRule, RuleScope};
use api_types::defaults;
use api_types::naming::{self, annotations, labels};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kube::ResourceExt;

use super::{Policy, unique_name};
use crate::options::Options;

/// A policy's webhook configuration: validating, or mutating for policies allowed to mutate.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookConfiguration {
    Validating(ValidatingWebhookConfiguration),
    Mutating(MutatingWebhookConfiguration),
}

fn enum_str<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

fn rule(rule: &PolicyRule) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: rule.api_groups.clone(),
        api_versions: Some(rule.api_versions.clone()),
        operations: Some(
            rule.operations
                .iter()
                .map(|o| o.as_str().to_string())
                .collect(),
        ),
        resources: Some(rule.resources.clone()),
        scope: rule.scope.map(|s| {
            match s {
                RuleScope::Cluster => "Cluster",
                RuleScope::Namespaced => "Namespaced",
                RuleScope::All => "*",
            }
            .to_string()
        }),
    }
}

/// Which namespaces a policy's requests come from.
///
/// Namespaced policies see only their own namespace. Cluster-wide ones see every namespace but
/// the controller's own (so a broken policy cannot block repairs), unless
/// `allowInsideAdmissionControllerNamespace` is set; the user's selector is added to that.
/// Upstream drops the user's `matchLabels` in that case; they are kept here.
pub fn namespace_selector<P: Policy>(policy: &P, options: &Options) -> Option<LabelSelector> {
    let Some(cluster) = policy.cluster_fields() else {
        return Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                labels::NAMESPACE_NAME.to_string(),
                policy.namespace().unwrap_or_default(),
            )])),
            match_expressions: None,
        });
    };
    if cluster.allow_inside_admission_controller_namespace {
        return cluster.namespace_selector.clone();
    }
    let user = cluster.namespace_selector.clone().unwrap_or_default();
    let mut expressions = vec![LabelSelectorRequirement {
        key: labels::NAMESPACE_NAME.to_string(),
        operator: "NotIn".to_string(),
        values: Some(vec![options.deployments_namespace.clone()]),
    }];
    expressions.extend(user.match_expressions.into_iter().flatten());
    Some(LabelSelector {
        match_labels: user.match_labels,
        match_expressions: Some(expressions),
    })
}

/// Builds the webhook configuration of `policy`, trusting `ca_bundle_pem` for the
/// policy-server's certificate.
pub fn desired_webhook<P: Policy>(
    policy: &P,
    options: &Options,
    ca_bundle_pem: &str,
) -> WebhookConfiguration {
    let unique = unique_name(policy);
    let common = policy.common();
    let mut policy_annotations =
        BTreeMap::from([(annotations::POLICY_NAME.to_string(), policy.name_any())]);
    if let Some(namespace) = policy.namespace() {
        policy_annotations.insert(annotations::POLICY_NAMESPACE.to_string(), namespace);
    }
    let metadata = ObjectMeta {
        name: Some(unique.clone()),
        labels: Some(BTreeMap::from([(
            labels::PART_OF.to_string(),
            labels::PART_OF_KUBEWARDEN.to_string(),
        )])),
        annotations: Some(policy_annotations),
        ..ObjectMeta::default()
    };
    let client_config = WebhookClientConfig {
        ca_bundle: Some(ByteString(ca_bundle_pem.as_bytes().to_vec())),
        service: Some(ServiceReference {
            namespace: options.deployments_namespace.clone(),
            name: naming::policy_server_resource_name(&common.policy_server),
            path: Some(naming::validate_path(&unique)),
            port: Some(defaults::SERVICE_WEBHOOK_PORT),
        }),
        url: None,
    };
    let webhook = ValidatingWebhook {
        name: naming::webhook_name(&unique),
        client_config,
        rules: Some(common.rules.iter().map(rule).collect()),
        failure_policy: common.failure_policy.as_ref().and_then(enum_str),
        match_policy: common.match_policy.as_ref().and_then(enum_str),
        match_conditions: common.match_conditions.clone(),
        namespace_selector: namespace_selector(policy, options),
        object_selector: common.object_selector.clone(),
        side_effects: common
            .side_effects
            .as_ref()
            .and_then(enum_str)
            .unwrap_or_else(|| "None".to_string()),
        timeout_seconds: Some(common.timeout_seconds),
        admission_review_versions: vec!["v1".to_string()],
    };
    if policy.mutating() {
        WebhookConfiguration::Mutating(MutatingWebhookConfiguration {
            metadata,
            webhooks: Some(vec![MutatingWebhook {
                name: webhook.name,
                client_config: webhook.client_config,
                rules: webhook.rules,
                failure_policy: webhook.failure_policy,
                match_policy: webhook.match_policy,
                match_conditions: webhook.match_conditions,
                namespace_selector: webhook.namespace_selector,
                object_selector: webhook.object_selector,
                side_effects: webhook.side_effects,
                timeout_seconds: webhook.timeout_seconds,
                admission_review_versions: webhook.admission_review_versions,
                reinvocation_policy: None,
            }]),
        })
    } else {
        WebhookConfiguration::Validating(ValidatingWebhookConfiguration {
            metadata,
            webhooks: Some(vec![webhook]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::crd::{AdmissionPolicy, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup};
    use pretty_assertions::assert_eq;
    use serde_json::{Value, json};

    fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml_ng::from_str(yaml).expect("fixture parses")
    }

    fn to_json<T: serde::Serialize>(value: &T) -> Value {
        serde_json::to_value(value).expect("serialises")
    }

    fn webhook_json(config: WebhookConfiguration) -> (&'static str, Value) {
        match config {
            WebhookConfiguration::Validating(w) => ("validating", to_json(&w)),
            WebhookConfiguration::Mutating(w) => ("mutating", to_json(&w)),
        }
    }

    const RULES: &str = r#"
  rules:
  - apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
    operations: [CREATE, UPDATE]
"#;

    #[test]
    fn cluster_policy_webhook() {
        let policy: ClusterAdmissionPolicy = from_yaml(&format!(
            r#"
apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicy
metadata: {{name: psp}}
spec:
  module: registry://example.com/psp:v1
  mutating: false
  failurePolicy: Ignore
  matchPolicy: Equivalent
  timeoutSeconds: 5
  namespaceSelector:
    matchLabels: {{team: a}}
    matchExpressions: [{{key: env, operator: In, values: [prod]}}]
  objectSelector: {{matchLabels: {{checked: "yes"}}}}
  matchConditions: [{{name: not-system, expression: "true"}}]
{RULES}"#
        ));
        let (kind, json) =
            webhook_json(desired_webhook(&policy, &Options::new("kubewarden"), "CA"));
        assert_eq!(kind, "validating");
        assert_eq!(json["metadata"]["name"], "clusterwide-psp");
        assert_eq!(
            json["metadata"]["labels"],
            json!({"app.kubernetes.io/part-of": "kubewarden"})
        );
        assert_eq!(
            json["metadata"]["annotations"],
            json!({"kubewardenPolicyName": "psp"})
        );
        let webhook = &json["webhooks"][0];
        assert_eq!(webhook["name"], "clusterwide-psp.kubewarden.admission");
        assert_eq!(
            webhook["clientConfig"]["service"],
            json!({"namespace": "kubewarden", "name": "policy-server-default", "path": "/validate/clusterwide-psp", "port": 443})
        );
        assert_eq!(webhook["clientConfig"]["caBundle"], "Q0E=");
        assert_eq!(webhook["failurePolicy"], "Ignore");
        assert_eq!(webhook["matchPolicy"], "Equivalent");
        assert_eq!(webhook["sideEffects"], "None");
        assert_eq!(webhook["timeoutSeconds"], 5);
        assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(
            webhook["objectSelector"],
            json!({"matchLabels": {"checked": "yes"}})
        );
        assert_eq!(webhook["matchConditions"][0]["name"], "not-system");
        assert_eq!(
            webhook["rules"],
            json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE", "UPDATE"]}])
        );
        assert_eq!(
            webhook["namespaceSelector"],
            json!({
                "matchLabels": {"team": "a"},
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kubewarden"]},
                    {"key": "env", "operator": "In", "values": ["prod"]}
                ]
            })
        );
    }

    #[test]
    fn inside_the_controller_namespace_only_when_allowed() {
        let policy: ClusterAdmissionPolicyGroup = from_yaml(&format!(
            r#"
apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicyGroup
metadata: {{name: g}}
spec:
  policyServer: other
  allowInsideAdmissionControllerNamespace: true
  expression: a()
  message: nope
  policies: {{a: {{module: "file:///a.wasm"}}}}
{RULES}"#
        ));
        let (kind, json) =
            webhook_json(desired_webhook(&policy, &Options::new("kubewarden"), "CA"));
        assert_eq!(kind, "validating");
        assert!(json["webhooks"][0].get("namespaceSelector").is_none());
        assert_eq!(
            json["webhooks"][0]["clientConfig"]["service"]["name"],
            "policy-server-other"
        );
        assert_eq!(
            json["webhooks"][0]["clientConfig"]["service"]["path"],
            "/validate/clusterwide-group-g"
        );
    }

    #[test]
    fn namespaced_mutating_policy() {
        let policy: AdmissionPolicy = from_yaml(&format!(
            r#"
apiVersion: policies.kubewarden.io/v1
kind: AdmissionPolicy
metadata: {{name: add-label, namespace: team-a}}
spec:
  module: "file:///m.wasm"
  mutating: true
  sideEffects: NoneOnDryRun
{RULES}"#
        ));
        let (kind, json) =
            webhook_json(desired_webhook(&policy, &Options::new("kubewarden"), "CA"));
        assert_eq!(kind, "mutating");
        assert_eq!(json["metadata"]["name"], "namespaced-team-a-add-label");
        assert_eq!(
            json["metadata"]["annotations"]["kubewardenPolicyNamespace"],
            "team-a"
        );
        let webhook = &json["webhooks"][0];
        assert_eq!(webhook["sideEffects"], "NoneOnDryRun");
        assert_eq!(webhook["timeoutSeconds"], 10);
        assert_eq!(
            webhook["namespaceSelector"],
            json!({"matchLabels": {"kubernetes.io/metadata.name": "team-a"}})
        );
    }
}
