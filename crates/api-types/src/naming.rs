//! Names, labels, annotations and finalizers the stack agrees on.
//!
//! Every string another component matches on lives here, so that the controller writing an
//! object and the audit-scanner or policy-server reading it can never drift apart.

/// API group of the Kubewarden custom resources.
pub const GROUP: &str = "policies.kubewarden.io";

/// Finalizer the controller puts on PolicyServers and policies.
pub const FINALIZER: &str = "kubewarden.io/finalizer";
/// Finalizer written by old controller releases; still removed on deletion.
pub const LEGACY_FINALIZER: &str = "kubewarden";

/// Prefix of every object the controller creates for a PolicyServer (`policy-server-<name>`).
pub const POLICY_SERVER_PREFIX: &str = "policy-server-";

/// Name of the Deployment, Service, Secret, ConfigMap and PDB of a PolicyServer.
pub fn policy_server_resource_name(policy_server: &str) -> String {
    format!("{POLICY_SERVER_PREFIX}{policy_server}")
}

/// Name of the Secret holding the CA that signs every policy-server certificate.
pub const CA_SECRET_NAME: &str = "kubewarden-ca";
/// Keys of the CA Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const OLD_CA_CERT_KEY: &str = "old-ca.crt";
/// Secret (type `kubernetes.io/tls`) with the client certificate the audit-scanner presents to
/// policy-servers in mTLS mode, signed by the CA in [`CA_SECRET_NAME`] (upstream's chart name).
pub const AUDIT_SCANNER_CLIENT_CERT_SECRET_NAME: &str = "kubewarden-audit-scanner-client-cert";
/// Common name of the audit-scanner's client certificate (upstream's).
pub const AUDIT_SCANNER_CLIENT_COMMON_NAME: &str = "audit-scanner-client";
/// Keys of a policy-server certificate Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

/// ConfigMap keys read by the policy-server.
pub const POLICIES_CONFIG_KEY: &str = "policies.yml";
pub const SOURCES_CONFIG_KEY: &str = "sources.yml";
/// Key of the verification ConfigMap referenced by `PolicyServer.spec.verificationConfig`.
pub const VERIFICATION_CONFIG_KEY: &str = "verification-config";
/// Key of the ConfigMap referenced by `PolicyServer.spec.sigstoreTrustConfig`.
pub const SIGSTORE_TRUST_CONFIG_KEY: &str = "sigstore-trust-config";

pub mod labels {
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Value of [`COMPONENT`] on everything that belongs to a policy-server.
    pub const COMPONENT_POLICY_SERVER: &str = "policy-server";
    /// Value of [`PART_OF`] on everything Kubewarden creates.
    pub const PART_OF_KUBEWARDEN: &str = "kubewarden";
    /// Value of [`MANAGED_BY`] on objects the controller creates.
    pub const MANAGED_BY_CONTROLLER: &str = "kubewarden-controller";
    /// Names the PolicyServer an object belongs to.
    pub const POLICY_SERVER: &str = "kubewarden/policy-server";
    /// Resource version of the policy-server ConfigMap a pod template was built from.
    pub const CONFIG_VERSION: &str = "kubewarden/config-version";
    /// Selector label of the policy-server Deployment (`kubewarden-policy-server-<name>`).
    pub const APP: &str = "app";
    /// Legacy label of webhook configurations written by old controllers.
    pub const LEGACY_KUBEWARDEN: &str = "kubewarden";
    /// Reports written by the audit-scanner.
    pub const REPORT_MANAGED_BY_VALUE: &str = "kubewarden";
    pub const REPORT_VERSION: &str = "kubewarden.io/policyreport-version";
    pub const REPORT_VERSION_VALUE: &str = "v2";
    pub const AUDIT_RUN_UID: &str = "kubewarden.io/audit-scanner-run-uid";
    /// The label every namespace carries with its own name.
    pub const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";
}

pub mod annotations {
    /// Policy a webhook configuration was generated from.
    pub const POLICY_NAME: &str = "kubewardenPolicyName";
    pub const POLICY_NAMESPACE: &str = "kubewardenPolicyNamespace";
    /// Keys of `PolicyServer.spec.annotations` / `.labels` the controller wrote, so it can remove
    /// the ones a user later deletes from the spec.
    pub const MANAGED_ANNOTATION_KEYS: &str = "kubewarden.io/managed-annotation-keys";
    pub const MANAGED_LABEL_KEYS: &str = "kubewarden.io/managed-label-keys";
    /// Version of the certificate format in a policy-server Secret.
    pub const CERT_FORMAT_VERSION: &str = "kubewarden.io/cert-format-version";
    pub const CERT_FORMAT_VERSION_VALUE: &str = "1";
    /// Policy annotations the audit-scanner copies into reports.
    pub const POLICY_SEVERITY: &str = "io.kubewarden.policy.severity";
    pub const POLICY_CATEGORY: &str = "io.kubewarden.policy.category";
    /// Short digest of the `policies.yml` a policy-server pod should serve, written on the pods
    /// of an in-place reloading PolicyServer: updating a pod makes its kubelet refresh the
    /// mounted ConfigMap at once instead of at its next periodic sync (up to a minute).
    pub const POLICIES_DIGEST: &str = "kubewarden.io/policies-digest";
    /// Revision annotation the Deployment controller puts on ReplicaSets.
    pub const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";
}

/// Suffix of the single webhook inside a generated webhook configuration.
pub const WEBHOOK_NAME_SUFFIX: &str = ".kubewarden.admission";

/// Longest name Kubernetes accepts for a webhook inside a webhook configuration (a DNS subdomain).
pub const MAX_WEBHOOK_NAME_LENGTH: usize = 253;

/// The four kinds of policy, which differ in how their unique name is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    ClusterAdmissionPolicy,
    AdmissionPolicy,
    ClusterAdmissionPolicyGroup,
    AdmissionPolicyGroup,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::ClusterAdmissionPolicy,
        PolicyKind::AdmissionPolicy,
        PolicyKind::ClusterAdmissionPolicyGroup,
        PolicyKind::AdmissionPolicyGroup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::ClusterAdmissionPolicy => "ClusterAdmissionPolicy",
            PolicyKind::AdmissionPolicy => "AdmissionPolicy",
            PolicyKind::ClusterAdmissionPolicyGroup => "ClusterAdmissionPolicyGroup",
            PolicyKind::AdmissionPolicyGroup => "AdmissionPolicyGroup",
        }
    }

    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            PolicyKind::AdmissionPolicy | PolicyKind::AdmissionPolicyGroup
        )
    }

    pub fn is_group(self) -> bool {
        matches!(
            self,
            PolicyKind::ClusterAdmissionPolicyGroup | PolicyKind::AdmissionPolicyGroup
        )
    }
}

/// The name a policy is known by in `policies.yml`, in the webhook configuration and in the
/// `/validate/<unique name>` URL.
///
/// `namespace` is ignored for cluster-wide kinds.
pub fn policy_unique_name(kind: PolicyKind, namespace: &str, name: &str) -> String {
    match kind {
        PolicyKind::ClusterAdmissionPolicy => format!("clusterwide-{name}"),
        PolicyKind::AdmissionPolicy => format!("namespaced-{namespace}-{name}"),
        PolicyKind::ClusterAdmissionPolicyGroup => format!("clusterwide-group-{name}"),
        PolicyKind::AdmissionPolicyGroup => format!("namespaced-group-{namespace}-{name}"),
    }
}

/// Name of the webhook inside the configuration generated for a policy.
pub fn webhook_name(unique_name: &str) -> String {
    format!("{unique_name}{WEBHOOK_NAME_SUFFIX}")
}

/// Path the policy-server validates requests for a policy on.
pub fn validate_path(unique_name: &str) -> String {
    format!("/validate/{unique_name}")
}

/// Path the audit-scanner sends synthetic requests to.
pub fn audit_path(unique_name: &str) -> String {
    format!("/audit/{unique_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_follow_upstream_scheme() {
        let cases = [
            (PolicyKind::ClusterAdmissionPolicy, "clusterwide-psp"),
            (PolicyKind::AdmissionPolicy, "namespaced-team-a-psp"),
            (
                PolicyKind::ClusterAdmissionPolicyGroup,
                "clusterwide-group-psp",
            ),
            (
                PolicyKind::AdmissionPolicyGroup,
                "namespaced-group-team-a-psp",
            ),
        ];
        for (kind, expected) in cases {
            assert_eq!(policy_unique_name(kind, "team-a", "psp"), expected);
        }
    }

    #[test]
    fn derived_names() {
        assert_eq!(
            policy_server_resource_name("default"),
            "policy-server-default"
        );
        assert_eq!(
            webhook_name("clusterwide-psp"),
            "clusterwide-psp.kubewarden.admission"
        );
        assert_eq!(
            validate_path("clusterwide-psp"),
            "/validate/clusterwide-psp"
        );
        assert_eq!(audit_path("clusterwide-psp"), "/audit/clusterwide-psp");
    }
}
