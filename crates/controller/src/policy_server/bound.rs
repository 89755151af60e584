//! The policies bound to a PolicyServer, read from the shared watches' stores.

use api_types::config::{PoliciesConfig, PolicyOrGroup};
use api_types::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
};

use crate::context::Context;
use crate::error::Error;
use crate::policy::{Policy, policy_server_of, unique_name};

/// One policy bound to a PolicyServer.
#[derive(Debug, Clone)]
pub struct BoundPolicy {
    pub unique_name: String,
    /// Its `policies.yml` entry; `None` when the spec is invalid and the policy is not served.
    pub entry: Option<PolicyOrGroup>,
}

async fn list_kind<P: Policy>(
    ctx: &Context,
    policy_server: &str,
    namespaced_capabilities: &[String],
    out: &mut Vec<BoundPolicy>,
) -> Result<(), Error> {
    for policy in P::cache(&ctx.stores).listed().await?.state() {
        if policy_server_of(policy.as_ref()) != policy_server {
            continue;
        }
        let entry = policy
            .violations()
            .is_empty()
            .then(|| policy.config_entry(namespaced_capabilities));
        out.push(BoundPolicy {
            unique_name: unique_name(policy.as_ref()),
            entry,
        });
    }
    Ok(())
}

/// Every policy of every kind whose `spec.policyServer` names `policy_server`, including
/// policies being deleted (they are served until their webhook is gone).
pub async fn list(
    ctx: &Context,
    policy_server: &str,
    namespaced_capabilities: &[String],
) -> Result<Vec<BoundPolicy>, Error> {
    let mut bound = Vec::new();
    let caps = namespaced_capabilities;
    list_kind::<ClusterAdmissionPolicy>(ctx, policy_server, caps, &mut bound).await?;
    list_kind::<AdmissionPolicy>(ctx, policy_server, caps, &mut bound).await?;
    list_kind::<ClusterAdmissionPolicyGroup>(ctx, policy_server, caps, &mut bound).await?;
    list_kind::<AdmissionPolicyGroup>(ctx, policy_server, caps, &mut bound).await?;
    // Stores hold no order; what is made of the list (messages) should not change with it.
    bound.sort_by(|a, b| a.unique_name.cmp(&b.unique_name));
    Ok(bound)
}

/// The `policies.yml` of a PolicyServer serving `bound`.
pub fn policies_config(bound: &[BoundPolicy]) -> PoliciesConfig {
    PoliciesConfig(
        bound
            .iter()
            .filter_map(|b| Some((b.unique_name.clone(), b.entry.clone()?)))
            .collect(),
    )
}
