//! The four policy kinds share their CRD settings, printer columns and CEL rules; one
//! definition keeps them from drifting apart.

/// Defines the spec of a policy kind. `extra` holds kind-specific `#[kube]` arguments
/// (`namespaced`, a name-length rule) and `mutating_column` the Mutating printer column for the
/// kinds that have the field.
macro_rules! policy_kind {
    (
        kind = $kind:literal, plural = $plural:literal, shortname = $short:literal, doc = $doc:literal,
        extra = [$($extra:tt)*],
        mutating_column = [$($mutating:tt)*],
        $(#[$meta:meta])*
        pub struct $name:ident { $($body:tt)* }
    ) => {
        #[derive(kube::CustomResource, kube::KubeSchema, serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
        #[kube(
            group = "policies.kubewarden.io",
            version = "v1",
            kind = $kind,
            plural = $plural,
            shortname = $short,
            status = "PolicyStatus",
            derive = "PartialEq",
            doc = $doc,
            annotation("helm.sh/resource-policy", "keep"),
            $($extra)*
            printcolumn(name = "Policy Server", type_ = "string", json_path = ".spec.policyServer", description = "Bound to Policy Server"),
            $($mutating)*
            printcolumn(name = "BackgroundAudit", type_ = "boolean", json_path = ".spec.backgroundAudit", description = "Whether the policy is used in audit checks"),
            printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode", description = "Policy deployment mode"),
            printcolumn(name = "Observed mode", type_ = "string", json_path = ".status.mode", description = "Policy deployment mode observed on the assigned Policy Server"),
            printcolumn(name = "Status", type_ = "string", json_path = ".status.policyStatus", description = "Status of the policy"),
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
            printcolumn(name = "Severity", type_ = "string", json_path = ".metadata.annotations.io\\.kubewarden\\.policy\\.severity", description = "Severity of the policy", priority = 1),
            printcolumn(name = "Category", type_ = "string", json_path = ".metadata.annotations.io\\.kubewarden\\.policy\\.category", description = "Category of the policy", priority = 1)
        )]
        #[serde(rename_all = "camelCase")]
        #[x_kube(validation = Rule::new("self.policyServer == oldSelf.policyServer").message("policyServer is immutable"))]
        #[x_kube(validation = Rule::new("!(oldSelf.mode == 'protect' && self.mode == 'monitor')").message("mode cannot change from protect to monitor"))]
        $(#[$meta])*
        pub struct $name { $($body)* }
    };
}
