//! What the policy-server does to a policy's answer before returning it on `/validate`:
//! monitor mode, mutations a policy may not make, custom rejection messages.

use api_types::crd::PolicyMode;
use policy_evaluator::response::{AdmissionResponse, AdmissionStatus, StatusCause, StatusDetails};

/// Applies the policy's configuration to its raw answer.
pub fn shape(
    policy_id: &str,
    mode: PolicyMode,
    allowed_to_mutate: bool,
    custom_message: Option<&str>,
    mut response: AdmissionResponse,
) -> AdmissionResponse {
    if mode == PolicyMode::Monitor {
        tracing::info!(
            policy = policy_id,
            uid = %response.uid,
            allowed = response.allowed,
            mutated = response.patch.is_some(),
            message = response.status.as_ref().and_then(|s| s.message.as_deref()).unwrap_or_default(),
            "policy in monitor mode: decision logged, request accepted"
        );
        response.allowed = true;
        response.patch = None;
        response.patch_type = None;
        response.status = None;
        return response;
    }
    if response.patch.is_some() && !allowed_to_mutate {
        response = AdmissionResponse::rejection(
            &response.uid,
            format!(
                "Request rejected by policy {policy_id}. The policy attempted to mutate the request, but it is currently configured to not allow mutations."
            ),
            None,
        );
    }
    if !response.allowed
        && let Some(message) = custom_message
    {
        let status = response.status.get_or_insert_with(AdmissionStatus::default);
        let original = status.message.replace(message.to_string());
        if let Some(original) = original {
            status
                .details
                .get_or_insert_with(StatusDetails::default)
                .causes
                .push(StatusCause {
                    message: Some(original),
                    ..Default::default()
                });
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched() -> AdmissionResponse {
        AdmissionResponse {
            uid: "u".into(),
            allowed: true,
            patch_type: Some("JSONPatch".into()),
            patch: Some("W10=".into()),
            ..Default::default()
        }
    }

    #[test]
    fn monitor_accepts_and_drops_patch_and_status() {
        let rejected = AdmissionResponse::rejection("u", "no", Some(403));
        let shaped = shape("p", PolicyMode::Monitor, false, None, rejected);
        assert!(shaped.allowed);
        assert_eq!(shaped.status, None);
        let shaped = shape("p", PolicyMode::Monitor, true, None, patched());
        assert_eq!((shaped.patch, shaped.patch_type), (None, None));
    }

    #[test]
    fn mutation_needs_permission() {
        let shaped = shape("clusterwide-x", PolicyMode::Protect, false, None, patched());
        assert!(!shaped.allowed);
        assert_eq!(shaped.patch, None);
        assert!(shaped
            .status
            .and_then(|s| s.message)
            .is_some_and(|m| m.starts_with("Request rejected by policy clusterwide-x. The policy attempted to mutate the request")));
        let allowed = shape("p", PolicyMode::Protect, true, None, patched());
        assert!(allowed.allowed && allowed.patch.is_some());
    }

    #[test]
    fn custom_message_replaces_and_keeps_the_original() {
        let rejected = AdmissionResponse::rejection("u", "label x is not allowed", Some(403));
        let shaped = shape(
            "p",
            PolicyMode::Protect,
            false,
            Some("Ask the platform team"),
            rejected,
        );
        let status = shaped.status.expect("status");
        assert_eq!(status.message.as_deref(), Some("Ask the platform team"));
        assert_eq!(status.code, Some(403));
        assert_eq!(
            status.details.expect("details").causes[0]
                .message
                .as_deref(),
            Some("label x is not allowed")
        );
        // Accepted requests are untouched.
        let accepted = AdmissionResponse {
            uid: "u".into(),
            allowed: true,
            ..Default::default()
        };
        assert_eq!(
            shape("p", PolicyMode::Protect, false, Some("m"), accepted.clone()),
            accepted
        );
    }
}
