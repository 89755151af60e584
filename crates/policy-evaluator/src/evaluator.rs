//! [`PolicyEvaluator`]: one policy (a module plus its settings and limits) answering requests.

use std::sync::Arc;

use serde_json::Value;

use crate::admission::DecodedRequest;
use crate::error::EvaluationError;
use crate::host::{HostCapabilities, NoHostCapabilities};
use crate::limits::EvaluationLimits;
use crate::metadata::ExecutionMode;
use crate::module::PolicyModule;
use crate::response::{AdmissionResponse, SettingsValidationResponse};
use crate::runtime::{PolicyContext, PolicyRuntime, Request, Target};

/// How a policy is run, besides its module.
#[derive(Debug, Clone)]
pub struct EvaluatorSettings {
    /// Id the policy is served under; used in logs and host-capability calls.
    pub policy_id: String,
    /// The policy's settings; `None` and `null` are given to the policy as `{}`.
    pub settings: Option<Value>,
    pub limits: EvaluationLimits,
    /// Host capability patterns the policy may call (`*`, `oci/*`, ...); empty grants none.
    pub host_capabilities: Vec<String>,
    pub host: Arc<dyn HostCapabilities>,
    /// waPC instances kept between evaluations to be reused, at most (usually the number of
    /// threads that evaluate this policy). `0` gives every evaluation a fresh instance.
    pub reused_instances: usize,
}

impl EvaluatorSettings {
    pub fn new(policy_id: impl Into<String>) -> Self {
        EvaluatorSettings {
            policy_id: policy_id.into(),
            settings: None,
            limits: EvaluationLimits::default(),
            host_capabilities: Vec::new(),
            host: Arc::new(NoHostCapabilities),
            reused_instances: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// A policy ready to evaluate requests, from any number of threads at once.
///
/// waPC guests run in instances that are reused after a successful evaluation (as upstream
/// does; see [`EvaluatorSettings::reused_instances`]); an instance whose evaluation failed in
/// any way (trap, deadline, memory limit, guest error) is dropped, so the next evaluation gets
/// a fresh one. Rego instances are reused the same way, each evaluation starting from the heap
/// as it was after loading the data document; WASI commands get a fresh instance every time.
#[derive(Clone)]
pub struct PolicyEvaluator {
    module: Arc<PolicyModule>,
    policy: Arc<PolicyContext>,
    /// Picked once, by the module's execution mode.
    runtime: Arc<dyn PolicyRuntime>,
}

impl std::fmt::Debug for PolicyEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEvaluator")
            .field("policy_id", &self.policy.policy_id)
            .field("module", &self.module)
            .field("limits", &self.policy.limits)
            .field("reused_instances", &self.runtime.reused_instances())
            .finish_non_exhaustive()
    }
}

impl PolicyEvaluator {
    pub fn new(module: Arc<PolicyModule>, settings: EvaluatorSettings) -> Self {
        let policy_settings = match settings.settings {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(value) => value,
        };
        let runtime = module.linked().runtime(settings.reused_instances);
        PolicyEvaluator {
            module,
            policy: Arc::new(PolicyContext {
                policy_id: settings.policy_id.into(),
                settings_json: policy_settings.to_string().into_bytes(),
                settings: policy_settings,
                limits: settings.limits,
                granted: settings.host_capabilities.into(),
                host: settings.host,
            }),
            runtime,
        }
    }

    /// Linear memory held by this policy's idle instances, in bytes.
    pub fn idle_memory_bytes(&self) -> usize {
        self.runtime.idle_memory_bytes()
    }

    pub fn module(&self) -> &Arc<PolicyModule> {
        &self.module
    }

    pub fn policy_id(&self) -> &str {
        &self.policy.policy_id
    }

    /// What this Gatekeeper policy answered, the first time its result was not a list of
    /// violations: such a result admits the request, as upstream Kubewarden's runtime does,
    /// so the policy enforces nothing. `None` while every result was understood (and for
    /// every other kind of policy).
    pub fn result_not_understood(&self) -> Option<&str> {
        self.runtime.result_not_understood()
    }

    /// Evaluates a made-up Pod creation once, so that a Gatekeeper policy whose result is not
    /// a list of violations is known (see [`result_not_understood`](Self::result_not_understood))
    /// before the first real request. The usual cause, an entrypoint that is the Rego package
    /// instead of its `violation` rule, gives an object whatever the input. The verdict and any
    /// evaluation error are dropped; other kinds of policy are not evaluated.
    pub fn check_result_shape(&self) {
        if self.module.metadata().execution_mode != ExecutionMode::Gatekeeper {
            return;
        }
        let request = serde_json::json!({
            "uid": "kubewarden-result-shape-check",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "default",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "kubewarden-result-shape-check", "namespace": "default"},
                "spec": {"containers": []},
            },
        });
        if let Err(err) = self.validate(&request) {
            let error = api_types::error_text::with_causes(&err);
            tracing::debug!(policy = %self.policy.policy_id, %error, "the result shape check could not evaluate the policy");
        }
    }

    /// Asks the policy whether its settings are valid.
    /// Rego policies have no such entry point: their settings are always valid, as upstream.
    pub fn validate_settings(&self) -> Result<SettingsValidationResponse, EvaluationError> {
        self.runtime.validate_settings(&self.policy)
    }

    /// Evaluates an AdmissionRequest (the `request` of an AdmissionReview).
    pub fn validate(&self, request: &Value) -> Result<AdmissionResponse, EvaluationError> {
        self.validate_admission(Request::Parsed(request))
    }

    /// [`validate`](Self::validate) for a request decoded from a webhook body: waPC and WASI
    /// policies are given its JSON text as it arrived instead of a serialization of it, and
    /// the request is parsed only if the policy needs it (Rego input, a mutation's diff).
    pub fn validate_request(
        &self,
        request: &DecodedRequest,
    ) -> Result<AdmissionResponse, EvaluationError> {
        self.validate_admission(Request::Decoded(request))
    }

    /// Evaluates a free-form document (raw policies, `/validate_raw`); a mutation is a patch
    /// of the whole document.
    pub fn validate_raw(&self, request: &Value) -> Result<AdmissionResponse, EvaluationError> {
        self.validate_document(Request::Parsed(request))
    }

    /// [`validate_raw`](Self::validate_raw) for a document decoded from a webhook body.
    pub fn validate_raw_request(
        &self,
        request: &DecodedRequest,
    ) -> Result<AdmissionResponse, EvaluationError> {
        self.validate_document(Request::Decoded(request))
    }

    fn validate_admission(
        &self,
        request: Request<'_>,
    ) -> Result<AdmissionResponse, EvaluationError> {
        let uid = request
            .uid()
            .ok_or_else(|| EvaluationError::InvalidRequest("the request has no uid".into()))?;
        self.runtime
            .validate(&self.policy, uid, &request, Target::Admission)
    }

    fn validate_document(
        &self,
        request: Request<'_>,
    ) -> Result<AdmissionResponse, EvaluationError> {
        let uid = request.uid().unwrap_or_default();
        self.runtime
            .validate(&self.policy, uid, &request, Target::Document)
    }

    /// The waPC protocol version the guest reports (waPC guests only).
    pub fn protocol_version(&self) -> Result<String, EvaluationError> {
        self.runtime.protocol_version(&self.policy)
    }
}
