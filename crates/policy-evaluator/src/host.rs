//! Host capabilities: what a policy may ask the host for through `__host_call`.
//!
//! Every request names a binding (always `kubewarden`), a namespace (`kubernetes`, `oci`,
//! `net`, `crypto`, `tracing`) and an operation. `tracing/log` is always allowed; the others
//! only when one of the policy's `hostCapabilities` patterns grants them. The actual services
//! (Kubernetes reads, registry queries, ...) are provided by the embedder through
//! [`HostCapabilities`].

use std::fmt;

pub use api_types::capabilities::Capability;
use api_types::capabilities::pattern_grants;

/// Provider of host capabilities, shared by every evaluation.
pub trait HostCapabilities: Send + Sync + fmt::Debug {
    /// Answers `capability` for `policy_id`, which was granted it. Errors are plain text
    /// handed to the guest.
    fn call(
        &self,
        policy_id: &str,
        capability: Capability,
        payload: &[u8],
    ) -> Result<Vec<u8>, String>;

    /// The Kubernetes objects a Rego policy sees as data (`data.kubernetes` in the `opa`
    /// mode, `data.inventory` in the `gatekeeper` mode): those of the kinds `policy_id`
    /// declared in its `contextAwareResources`. None by default.
    fn context_objects(&self, _policy_id: &str) -> Result<Vec<KindObjects>, String> {
        Ok(Vec::new())
    }
}

/// The objects of one kind, for Rego policies' context data.
#[derive(Debug, Clone, PartialEq)]
pub struct KindObjects {
    pub api_version: String,
    pub kind: String,
    /// Resource name (`namespaces`, `deployments`): OPA policies address objects by it.
    pub plural: String,
    pub namespaced: bool,
    pub objects: Vec<serde_json::Value>,
}

/// The provider used when the embedder offers no capabilities: every call is refused with a
/// message saying so.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHostCapabilities;

impl HostCapabilities for NoHostCapabilities {
    fn call(&self, _: &str, capability: Capability, _: &[u8]) -> Result<Vec<u8>, String> {
        Err(format!(
            "the host capability '{capability}' is not available on this policy-server"
        ))
    }
}

/// Routes one `__host_call` of a policy: checks the binding and the grant, serves
/// `tracing/log` itself and hands the rest to the provider.
pub(crate) fn dispatch(
    provider: &dyn HostCapabilities,
    policy_id: &str,
    granted: &[String],
    binding: &str,
    namespace: &str,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    if binding != "kubewarden" {
        return Err(format!("unknown binding: {binding}"));
    }
    if namespace == "tracing" {
        return match operation {
            "log" => {
                log_from_guest(policy_id, payload);
                Ok(Vec::new())
            }
            other => Err(format!("unknown operation: {other}")),
        };
    }
    let capability = format!("{namespace}/{operation}");
    if !granted
        .iter()
        .any(|pattern| pattern_grants(pattern, &capability))
    {
        return Err(format!(
            "Policy has not been granted access to the '{capability}' host capability"
        ));
    }
    let capability = Capability::parse(namespace, operation).map_err(|e| e.to_string())?;
    provider.call(policy_id, capability, payload)
}

/// A log line a guest sends through `tracing/log`: `{"level": .., "message": .., ...}`.
fn log_from_guest(policy_id: &str, payload: &[u8]) {
    let entry: serde_json::Value = serde_json::from_slice(payload).unwrap_or_else(
        |_| serde_json::json!({"level": "info", "message": String::from_utf8_lossy(payload)}),
    );
    let message = entry["message"].as_str().unwrap_or_default();
    let level = entry["level"]
        .as_str()
        .unwrap_or("info")
        .to_ascii_lowercase();
    match level.as_str() {
        "trace" => tracing::trace!(policy = policy_id, fields = %entry, "{message}"),
        "debug" => tracing::debug!(policy = policy_id, fields = %entry, "{message}"),
        "warning" | "warn" => tracing::warn!(policy = policy_id, fields = %entry, "{message}"),
        "error" => tracing::error!(policy = policy_id, fields = %entry, "{message}"),
        _ => tracing::info!(policy = policy_id, fields = %entry, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        granted: &[&str],
        binding: &str,
        namespace: &str,
        operation: &str,
    ) -> Result<Vec<u8>, String> {
        let granted: Vec<String> = granted.iter().map(|s| s.to_string()).collect();
        dispatch(
            &NoHostCapabilities,
            "p",
            &granted,
            binding,
            namespace,
            operation,
            b"{}",
        )
    }

    #[test]
    fn grants_and_refusals() {
        assert_eq!(call(&[], "kubewarden", "tracing", "log"), Ok(Vec::new()));
        assert_eq!(
            call(&["*"], "other", "tracing", "log"),
            Err("unknown binding: other".into())
        );
        assert_eq!(
            call(&["oci/*"], "kubewarden", "kubernetes", "can_i"),
            Err(
                "Policy has not been granted access to the 'kubernetes/can_i' host capability"
                    .into()
            )
        );
        let granted_but_unavailable = call(&["kubernetes/*"], "kubewarden", "kubernetes", "can_i");
        assert!(
            granted_but_unavailable
                .expect_err("refused")
                .contains("not available")
        );
    }
}
