//! Rego policies (`opa` and `gatekeeper` modes): `opa` policies see `{"request": ...}` as
//! input and their settings as data and answer an AdmissionReview; `gatekeeper` policies see
//! `{"parameters": settings, "review": request}` and answer a list of violations.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::opa::{self, OpaInstance, OpaModule};
use super::{PolicyContext, PolicyRuntime, Request, Target};
use crate::error::EvaluationError;
use crate::response::{AdmissionResponse, SettingsValidationResponse};
use crate::reuse::IdleInstances;

/// One evaluator's Rego runtime: the linked module and the instances kept for reuse (each with
/// the data document loaded).
pub(super) struct RegoRuntime {
    module: Arc<OpaModule>,
    gatekeeper: bool,
    idle: IdleInstances<OpaInstance>,
    /// The first Gatekeeper result this policy gave that is not a list of violations.
    unread_result: OnceLock<String>,
}

impl RegoRuntime {
    pub(super) fn new(module: Arc<OpaModule>, gatekeeper: bool, reused_instances: usize) -> Self {
        RegoRuntime {
            module,
            gatekeeper,
            idle: IdleInstances::new(reused_instances),
            unread_result: OnceLock::new(),
        }
    }

    fn instance(&self, policy: &PolicyContext) -> Result<OpaInstance, EvaluationError> {
        if let Some(instance) = self.idle.take() {
            return Ok(instance);
        }
        let (limits, policy_id) = (&policy.limits, policy.policy_id.clone());
        // Gatekeeper policies get their settings as input `parameters`, not as data.
        if self.gatekeeper {
            self.module.instance(limits, policy_id, &opa::EMPTY_DATA)
        } else {
            self.module.instance(limits, policy_id, &policy.settings)
        }
    }

    /// The data document of a context-aware policy, fresh for every evaluation: the cluster
    /// objects it was granted, beside its settings.
    fn context_data(&self, policy: &PolicyContext) -> Result<Option<Value>, EvaluationError> {
        let context = policy
            .host
            .context_objects(&policy.policy_id)
            .map_err(|e| EvaluationError::Context(e.to_string()))?;
        if context.is_empty() {
            return Ok(None);
        }
        if self.gatekeeper {
            return Ok(Some(
                serde_json::json!({ "inventory": opa::inventory_data(&context) }),
            ));
        }
        let mut data = match &policy.settings {
            Value::Object(settings) => settings.clone(),
            _ => serde_json::Map::new(),
        };
        data.insert("kubernetes".into(), opa::kubernetes_data(&context));
        Ok(Some(Value::Object(data)))
    }

    /// Records a Gatekeeper result that is not a list of violations; the first one is a warning
    /// in the log (the policy admits everything), later ones are debug lines.
    fn notice_unread_result(&self, policy: &PolicyContext, shape: String) {
        let mut unrecorded = Some(shape);
        let recorded = self
            .unread_result
            .get_or_init(|| unrecorded.take().unwrap_or_default());
        match unrecorded {
            None => tracing::warn!(
                policy = %policy.policy_id,
                result = %recorded,
                "the Gatekeeper policy's result is not a list of violations; the request is \
                 admitted, as upstream Kubewarden admits it, so this policy enforces nothing"
            ),
            Some(shape) => tracing::debug!(
                policy = %policy.policy_id,
                result = %shape,
                "Gatekeeper result not understood; admitted"
            ),
        }
    }
}

impl PolicyRuntime for RegoRuntime {
    fn validate(
        &self,
        policy: &PolicyContext,
        uid: &str,
        request: &Request<'_>,
        target: Target,
    ) -> Result<AdmissionResponse, EvaluationError> {
        if self.gatekeeper && target == Target::Document {
            return Err(EvaluationError::InvalidRequest(
                "Gatekeeper policies evaluate Kubernetes admission requests, not raw documents"
                    .to_string(),
            ));
        }
        let request = request.value();
        let mut instance = self.instance(policy)?;
        let data = self.context_data(policy)?;
        let result = if self.gatekeeper {
            let input = opa::GatekeeperInput {
                parameters: &policy.settings,
                review: request,
            };
            instance.evaluate(&input, data.as_ref(), &policy.limits)
        } else {
            instance.evaluate(&opa::OpaInput { request }, data.as_ref(), &policy.limits)
        };
        if result.is_ok() {
            self.idle.put_back(instance);
        }
        let result = result?;
        if !self.gatekeeper {
            return opa::opa_response(uid, &result);
        }
        let verdict = opa::gatekeeper_response(uid, &result);
        if let Some(shape) = verdict.not_understood {
            self.notice_unread_result(policy, shape);
        }
        Ok(verdict.response)
    }

    /// Rego policies have no such entry point: their settings are always valid, as upstream.
    fn validate_settings(
        &self,
        _: &PolicyContext,
    ) -> Result<SettingsValidationResponse, EvaluationError> {
        Ok(SettingsValidationResponse {
            valid: true,
            message: None,
        })
    }

    fn protocol_version(&self, _: &PolicyContext) -> Result<String, EvaluationError> {
        Err(EvaluationError::InvalidRequest(
            "Rego policies have no waPC protocol version".to_string(),
        ))
    }

    fn idle_memory_bytes(&self) -> usize {
        self.idle.memory_bytes()
    }

    fn reused_instances(&self) -> usize {
        self.idle.capacity()
    }

    fn result_not_understood(&self) -> Option<&str> {
        self.unread_result.get().map(String::as_str)
    }
}
