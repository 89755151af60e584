//! A policy as the policy-server reads it in `policies.yml`.

use std::collections::BTreeMap;

use api_types::config::{
    NamespacedName, PolicyEntry, PolicyGroupEntry, PolicyGroupMemberEntry, PolicyOrGroup,
};
use api_types::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    ContextAwareResource, PolicyGroupMember, PolicyModule, PolicySpecCommon,
};
use kube::ResourceExt;
use serde_json::Value;

/// Capabilities of cluster-wide policies: they are installed by cluster administrators, who
/// already hold every permission a host capability could grant.
const CLUSTER_WIDE_CAPABILITIES: &str = "*";

/// Builds the `policies.yml` entry of a policy.
pub trait ConfigEntry {
    /// `namespaced_capabilities` is the PolicyServer's allow list for namespaced policies.
    fn config_entry(&self, namespaced_capabilities: &[String]) -> PolicyOrGroup;
}

fn namespaced_name(namespace: Option<String>, name: String) -> NamespacedName {
    NamespacedName {
        namespace: namespace.unwrap_or_default(),
        name,
    }
}

fn timeout(seconds: Option<i32>) -> Option<u32> {
    seconds.and_then(|s| u32::try_from(s).ok())
}

/// Upstream always writes the key, `null` when unset, and policies rely on that.
fn settings(settings: &Option<Value>) -> Option<Value> {
    Some(settings.clone().unwrap_or(Value::Null))
}

fn policy_entry(
    name: NamespacedName,
    common: &PolicySpecCommon,
    module: &PolicyModule,
    context_aware_resources: Option<&Vec<ContextAwareResource>>,
    capabilities: Vec<String>,
) -> PolicyOrGroup {
    PolicyOrGroup::Policy(PolicyEntry {
        namespaced_name: Some(name),
        module: module.module.clone(),
        policy_mode: common.mode,
        allowed_to_mutate: module.mutating,
        context_aware_resources: context_aware_resources.cloned(),
        settings: settings(&module.settings),
        message: module.message.clone(),
        timeout_eval_seconds: timeout(module.timeout_eval_seconds),
        host_capabilities: Some(capabilities),
    })
}

fn member_entry(
    member: &PolicyGroupMember,
    context_aware_resources: Option<&Vec<ContextAwareResource>>,
    capabilities: &[String],
) -> PolicyGroupMemberEntry {
    PolicyGroupMemberEntry {
        module: member.module.clone(),
        settings: settings(&member.settings),
        context_aware_resources: context_aware_resources.cloned(),
        timeout_eval_seconds: timeout(member.timeout_eval_seconds),
        host_capabilities: Some(capabilities.to_vec()),
    }
}

fn cluster_wide() -> Vec<String> {
    vec![CLUSTER_WIDE_CAPABILITIES.to_string()]
}

impl ConfigEntry for ClusterAdmissionPolicy {
    fn config_entry(&self, _: &[String]) -> PolicyOrGroup {
        policy_entry(
            namespaced_name(None, self.name_any()),
            &self.spec.common,
            &self.spec.module,
            self.spec.context_aware_resources.as_ref(),
            cluster_wide(),
        )
    }
}

impl ConfigEntry for AdmissionPolicy {
    fn config_entry(&self, namespaced_capabilities: &[String]) -> PolicyOrGroup {
        policy_entry(
            namespaced_name(self.namespace(), self.name_any()),
            &self.spec.common,
            &self.spec.module,
            None,
            namespaced_capabilities.to_vec(),
        )
    }
}

impl ConfigEntry for ClusterAdmissionPolicyGroup {
    fn config_entry(&self, _: &[String]) -> PolicyOrGroup {
        let capabilities = cluster_wide();
        let policies: BTreeMap<_, _> = self
            .spec
            .policies
            .iter()
            .map(|(name, m)| {
                let entry =
                    member_entry(&m.member, m.context_aware_resources.as_ref(), &capabilities);
                (name.clone(), entry)
            })
            .collect();
        PolicyOrGroup::Group(PolicyGroupEntry {
            namespaced_name: Some(namespaced_name(None, self.name_any())),
            policy_mode: self.spec.common.mode,
            policies,
            expression: self.spec.verdict.expression.clone(),
            message: self.spec.verdict.message.clone(),
        })
    }
}

impl ConfigEntry for AdmissionPolicyGroup {
    fn config_entry(&self, namespaced_capabilities: &[String]) -> PolicyOrGroup {
        let policies: BTreeMap<_, _> = self
            .spec
            .policies
            .iter()
            .map(|(name, m)| {
                let entry = member_entry(m, None, namespaced_capabilities);
                (name.clone(), entry)
            })
            .collect();
        PolicyOrGroup::Group(PolicyGroupEntry {
            namespaced_name: Some(namespaced_name(self.namespace(), self.name_any())),
            policy_mode: self.spec.common.mode,
            policies,
            expression: self.spec.verdict.expression.clone(),
            message: self.spec.verdict.message.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::config::PoliciesConfig;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml_ng::from_str(yaml).expect("fixture parses")
    }

    #[test]
    fn cluster_policy_entry_matches_upstream_shape() {
        let policy: ClusterAdmissionPolicy = from_yaml(
            r#"
apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicy
metadata: {name: privileged-pods}
spec:
  module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
  rules:
  - apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
    operations: [CREATE, UPDATE]
  mutating: false
  contextAwareResources: [{apiVersion: v1, kind: Namespace}]
  message: no privileged pods
  timeoutEvalSeconds: 3
"#,
        );
        let entry = policy.config_entry(&["oci/*".to_string()]);
        let config = PoliciesConfig([("clusterwide-privileged-pods".to_string(), entry)].into());
        let json: Value = serde_json::from_str(&config.to_json()).expect("json");
        assert_eq!(
            json,
            json!({"clusterwide-privileged-pods": {
                "namespacedName": {"Namespace": "", "Name": "privileged-pods"},
                "module": "registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2",
                "policyMode": "protect",
                "allowedToMutate": false,
                "contextAwareResources": [{"apiVersion": "v1", "kind": "Namespace"}],
                "settings": null,
                "message": "no privileged pods",
                "timeoutEvalSeconds": 3,
                "hostCapabilities": ["*"],
            }})
        );
    }

    #[test]
    fn namespaced_group_gets_the_policy_server_capabilities() {
        let group: AdmissionPolicyGroup = from_yaml(
            r#"
apiVersion: policies.kubewarden.io/v1
kind: AdmissionPolicyGroup
metadata: {name: images, namespace: team-a}
spec:
  mode: monitor
  rules:
  - apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
    operations: [CREATE]
  expression: signed() || trusted()
  message: the image is neither signed nor from a trusted registry
  policies:
    signed: {module: "registry://example.com/signed:v1", settings: {keys: [a]}}
    trusted: {module: "registry://example.com/trusted:v1", timeoutEvalSeconds: 2}
"#,
        );
        let PolicyOrGroup::Group(entry) = group.config_entry(&["oci/v1/*".to_string()]) else {
            panic!("a group yields a group entry");
        };
        assert_eq!(entry.policy_mode.as_str(), "monitor");
        assert_eq!(
            entry.namespaced_name,
            Some(NamespacedName {
                namespace: "team-a".into(),
                name: "images".into()
            })
        );
        let signed = &entry.policies["signed"];
        assert_eq!(signed.settings, Some(json!({"keys": ["a"]})));
        assert_eq!(signed.host_capabilities, Some(vec!["oci/v1/*".to_string()]));
        assert_eq!(entry.policies["trusted"].timeout_eval_seconds, Some(2));
        assert_eq!(entry.policies["trusted"].settings, Some(Value::Null));
    }
}
