//! The four policy kinds behind one trait, so one reconciler and one set of builders serve
//! ClusterAdmissionPolicy, AdmissionPolicy and both group kinds.

pub mod config_entry;
pub mod load_status;
pub mod plan;
pub mod reachability;
pub mod reconcile;
pub mod webhook;

use std::fmt::Debug;

use api_types::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    ClusterWideFields, PolicySpecCommon, PolicyStatus,
};
use api_types::naming::{PolicyKind, policy_unique_name};
use api_types::validation::{self, Violation};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::watches::{Cache, Shared, SharedWatches, Stores};

/// What the controller needs to know about any policy kind.
pub trait Policy:
    config_entry::ConfigEntry
    + Resource<DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: PolicyKind;

    fn common(&self) -> &PolicySpecCommon;

    /// Whether the policy may change requests (groups never do).
    fn mutating(&self) -> bool {
        false
    }

    /// Namespace selection of cluster-wide kinds; `None` for namespaced ones.
    fn cluster_fields(&self) -> Option<&ClusterWideFields> {
        None
    }

    fn policy_status(&self) -> Option<&PolicyStatus>;

    /// Everything wrong with the spec that the CRD schema cannot express.
    fn violations(&self) -> Vec<Violation>;

    /// Api handle for objects of this kind in `namespace` (ignored by cluster-wide kinds).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;

    /// The shared watch of this kind.
    fn shared(watches: &SharedWatches) -> &Shared<Self>;

    /// The cache of this kind's shared watch, for reconcilers.
    fn cache(stores: &Stores) -> &Cache<Self>;
}

/// The id the policy is served under: its `policies.yml` key, webhook name and URL path.
pub fn unique_name<P: Policy>(policy: &P) -> String {
    policy_unique_name(
        P::KIND,
        policy.namespace().as_deref().unwrap_or_default(),
        &policy.name_any(),
    )
}

/// The PolicyServer a policy is bound to.
pub fn policy_server_of<P: Policy>(policy: &P) -> &str {
    &policy.common().policy_server
}

fn namespace_of<P: Policy>(policy: &P) -> String {
    policy.namespace().unwrap_or_default()
}

impl Policy for ClusterAdmissionPolicy {
    const KIND: PolicyKind = PolicyKind::ClusterAdmissionPolicy;

    fn shared(watches: &SharedWatches) -> &Shared<Self> {
        &watches.cluster_admission_policies
    }

    fn cache(stores: &Stores) -> &Cache<Self> {
        &stores.cluster_admission_policies
    }

    fn common(&self) -> &PolicySpecCommon {
        &self.spec.common
    }

    fn mutating(&self) -> bool {
        self.spec.module.mutating
    }

    fn cluster_fields(&self) -> Option<&ClusterWideFields> {
        Some(&self.spec.cluster)
    }

    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }

    fn violations(&self) -> Vec<Violation> {
        validation::validate_cluster_admission_policy(&self.name_any(), &self.spec)
    }

    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

impl Policy for AdmissionPolicy {
    const KIND: PolicyKind = PolicyKind::AdmissionPolicy;

    fn shared(watches: &SharedWatches) -> &Shared<Self> {
        &watches.admission_policies
    }

    fn cache(stores: &Stores) -> &Cache<Self> {
        &stores.admission_policies
    }

    fn common(&self) -> &PolicySpecCommon {
        &self.spec.common
    }

    fn mutating(&self) -> bool {
        self.spec.module.mutating
    }

    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }

    fn violations(&self) -> Vec<Violation> {
        validation::validate_admission_policy(&namespace_of(self), &self.name_any(), &self.spec)
    }

    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        }
    }
}

impl Policy for ClusterAdmissionPolicyGroup {
    const KIND: PolicyKind = PolicyKind::ClusterAdmissionPolicyGroup;

    fn shared(watches: &SharedWatches) -> &Shared<Self> {
        &watches.cluster_admission_policy_groups
    }

    fn cache(stores: &Stores) -> &Cache<Self> {
        &stores.cluster_admission_policy_groups
    }

    fn common(&self) -> &PolicySpecCommon {
        &self.spec.common
    }

    fn cluster_fields(&self) -> Option<&ClusterWideFields> {
        Some(&self.spec.cluster)
    }

    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }

    fn violations(&self) -> Vec<Violation> {
        validation::validate_cluster_admission_policy_group(&self.name_any(), &self.spec)
    }

    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

impl Policy for AdmissionPolicyGroup {
    const KIND: PolicyKind = PolicyKind::AdmissionPolicyGroup;

    fn shared(watches: &SharedWatches) -> &Shared<Self> {
        &watches.admission_policy_groups
    }

    fn cache(stores: &Stores) -> &Cache<Self> {
        &stores.admission_policy_groups
    }

    fn common(&self) -> &PolicySpecCommon {
        &self.spec.common
    }

    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }

    fn violations(&self) -> Vec<Violation> {
        validation::validate_admission_policy_group(
            &namespace_of(self),
            &self.name_any(),
            &self.spec,
        )
    }

    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        }
    }
}
