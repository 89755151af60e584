//! The `policies.kubewarden.io` custom resources.

// kube's `printcolumn(...)` repeats keys such as `type_`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

#[macro_use]
mod macros;
pub mod common;
pub mod group;
pub mod policy;
pub mod policy_server;
pub mod v1alpha2;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

pub use common::{
    ContextAwareResource, FailurePolicy, MatchPolicy, ObservedPolicyMode, Operation, PolicyMode,
    PolicyRule, PolicySpecCommon, PolicyStatus, PolicyStatusPhase, RuleScope, SideEffectClass,
};
pub use group::{
    AdmissionPolicyGroup, AdmissionPolicyGroupSpec, ClusterAdmissionPolicyGroup,
    ClusterAdmissionPolicyGroupSpec, ClusterPolicyGroupMember, GroupVerdict, PolicyGroupMember,
};
pub use policy::{
    AdmissionPolicy, AdmissionPolicySpec, ClusterAdmissionPolicy, ClusterAdmissionPolicySpec,
    ClusterWideFields, PolicyModule,
};
pub use policy_server::{
    PolicyReloadMode, PolicyServer, PolicyServerSecurity, PolicyServerSpec, PolicyServerStatus,
};

/// The storage version of every Kubewarden kind.
pub const STORAGE_VERSION: &str = "v1";

/// Every Kubewarden CRD, with all the versions it serves.
pub fn kubewarden_crds() -> Vec<CustomResourceDefinition> {
    let merged = |crds: Vec<CustomResourceDefinition>| {
        // Merging only fails for CRDs of different kinds or without versions; the inputs are
        // generated from our own types, so that is a programming error caught by the tests.
        merge_crds(crds, STORAGE_VERSION).expect("versions of one kind merge")
    };
    vec![
        merged(vec![PolicyServer::crd(), v1alpha2::PolicyServer::crd()]),
        merged(vec![
            ClusterAdmissionPolicy::crd(),
            v1alpha2::ClusterAdmissionPolicy::crd(),
        ]),
        merged(vec![
            AdmissionPolicy::crd(),
            v1alpha2::AdmissionPolicy::crd(),
        ]),
        ClusterAdmissionPolicyGroup::crd(),
        AdmissionPolicyGroup::crd(),
    ]
}
