//! What a policy-server says about the policies it serves, on `GET /status` of its readiness
//! port: the controller reads it to tell on each policy's status whether it could be loaded.
//! (Upstream's policy-server has no such endpoint; a policy that cannot load only shows in its
//! logs and in code-500 rejections.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One incarnation of a pod: its UID and its containers' restarts (`<uid>#<restarts>`). A
/// policy-server loads its policies once per incarnation, so a change of it means a new load.
pub fn pod_incarnation(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    let restarts: i32 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    format!(
        "{}#{restarts}",
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Path of the load status on the readiness port.
pub const STATUS_PATH: &str = "/status";

/// The whole answer of `GET /status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyServerLoadStatus {
    /// Whether loading has finished; until then `policies` is empty.
    pub loaded: bool,
    /// Every policy and group of the configuration, by id (the policy's unique name).
    pub policies: BTreeMap<String, PolicyLoadStatus>,
    /// With in-place reloading: why the newest `policies.yml` could not be read at all (the
    /// previous configuration is still served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_error: Option<String>,
}

/// Whether one policy (or group) is served, and if not, why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyLoadStatus {
    pub loaded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<LoadFailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Set when the policy loaded but has answered in a shape the policy-server does not
    /// understand and reads as upstream Kubewarden does, which admits the request (a
    /// Gatekeeper result that is not a list of violations): what the answer was. Such a
    /// policy enforces nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_not_understood: Option<String>,
    /// The [digest](crate::config::PolicyOrGroup::digest) of the configuration entry served
    /// (absent from older policy-servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// With in-place reloading: a newer entry of this policy that could not be loaded, while
    /// the version of `digest` goes on serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_update: Option<RejectedUpdate>,
}

/// A version of a policy a policy-server could not load in place of the one it serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RejectedUpdate {
    /// The digest of the entry that could not be loaded.
    pub digest: String,
    pub reason: LoadFailureReason,
    pub message: String,
}

impl PolicyLoadStatus {
    pub fn loaded() -> Self {
        PolicyLoadStatus {
            loaded: true,
            reason: None,
            message: None,
            result_not_understood: None,
            digest: None,
            rejected_update: None,
        }
    }

    /// A loaded policy that has answered `result`, a shape read as "admit" (see
    /// [`result_not_understood`](Self::result_not_understood)).
    pub fn loaded_with_result_not_understood(result: impl Into<String>) -> Self {
        PolicyLoadStatus {
            result_not_understood: Some(result.into()),
            ..PolicyLoadStatus::loaded()
        }
    }

    pub fn failed(reason: LoadFailureReason, message: impl Into<String>) -> Self {
        PolicyLoadStatus {
            loaded: false,
            reason: Some(reason),
            message: Some(message.into()),
            ..PolicyLoadStatus::loaded()
        }
    }

    /// This status, saying it is of the entry with `digest`.
    pub fn with_digest(self, digest: impl Into<String>) -> Self {
        PolicyLoadStatus {
            digest: Some(digest.into()),
            ..self
        }
    }
}

/// Why a policy cannot be served; also the reason of its `PolicyLoaded=False` condition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadFailureReason {
    /// The module could not be fetched, verified or compiled.
    ModuleUnavailable,
    /// The policy's settings were refused by the policy (or could not be checked).
    SettingsInvalid,
    /// A group's expression is malformed or names no member.
    InvalidGroup,
}

impl LoadFailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadFailureReason::ModuleUnavailable => "ModuleUnavailable",
            LoadFailureReason::SettingsInvalid => "SettingsInvalid",
            LoadFailureReason::InvalidGroup => "InvalidGroup",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_json() {
        let status = PolicyServerLoadStatus {
            loaded: true,
            policies: BTreeMap::from([
                ("ok".to_string(), PolicyLoadStatus::loaded()),
                (
                    "open".to_string(),
                    PolicyLoadStatus::loaded_with_result_not_understood("an object"),
                ),
                (
                    "bad".to_string(),
                    PolicyLoadStatus::failed(LoadFailureReason::SettingsInvalid, "no"),
                ),
            ]),
            reload_error: None,
        };
        let text = serde_json::to_string(&status).expect("serializes");
        assert_eq!(
            text,
            r#"{"loaded":true,"policies":{"bad":{"loaded":false,"reason":"SettingsInvalid","message":"no"},"ok":{"loaded":true},"open":{"loaded":true,"resultNotUnderstood":"an object"}}}"#
        );
        let back: PolicyServerLoadStatus = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, status);
    }
}
