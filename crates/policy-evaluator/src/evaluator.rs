//! [`PolicyEvaluator`]: one policy (a module plus its settings and limits) answering requests.

use std::sync::{Arc, OnceLock};

use serde_json::Value;
use wasmtime::{Instance, InstancePre, Memory, Store, TypedFunc};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::admission::DecodedRequest;
use crate::engine::deadline_ticks;
use crate::error::{EvaluationError, classify};
use crate::host::{HostCapabilities, NoHostCapabilities};
use crate::limits::{EvaluationLimits, MemoryLimiter};
use crate::metadata::ExecutionMode;
use crate::module::{PolicyModule, Runtime};
use crate::opa::{self, OpaInstance};
use crate::response::{AdmissionResponse, SettingsValidationResponse, ValidationResponse};
use crate::reuse::{IdleInstances, Reusable};
use crate::wapc::{HostState, WapcCall};
use crate::wasi_stdin::GrowingStdin;

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

/// A request as a caller has it: parsed already, or decoded from a webhook body (its text
/// at hand, parsed only on demand).
enum Request<'a> {
    Parsed(&'a Value),
    Decoded(&'a DecodedRequest),
}

impl Request<'_> {
    fn value(&self) -> &Value {
        match self {
            Request::Parsed(value) => value,
            Request::Decoded(decoded) => decoded.value(),
        }
    }

    /// The `uid` member, if it is a string.
    fn uid(&self) -> Option<&str> {
        match self {
            Request::Parsed(value) => value.get("uid").and_then(Value::as_str),
            Request::Decoded(decoded) => decoded.uid_member(),
        }
    }
}

/// A waPC instance, initialised (`_start`, `wapc_init`) and kept for the next evaluation.
struct WarmInstance {
    store: Store<HostState>,
    guest_call: TypedFunc<(i32, i32), i32>,
    memory: Option<Memory>,
}

impl Reusable for WarmInstance {
    fn memory_bytes(&mut self) -> usize {
        self.memory
            .map_or(0, |memory| memory.data_size(&mut self.store))
    }
}

/// A policy ready to evaluate requests, from any number of threads at once.
///
/// waPC guests run in instances that are reused after a successful evaluation (as upstream
/// does; see [`EvaluatorSettings::reused_instances`]); an instance whose evaluation failed in
/// any way (trap, deadline, memory limit, guest error) is dropped, so the next evaluation gets
/// a fresh one. WASI commands and Rego policies get a fresh instance every time.
#[derive(Clone)]
pub struct PolicyEvaluator {
    module: Arc<PolicyModule>,
    policy_id: Arc<str>,
    settings: Value,
    /// `settings` as JSON text, serialized once: every waPC and WASI payload embeds it.
    settings_json: Arc<[u8]>,
    limits: EvaluationLimits,
    granted: Arc<[String]>,
    host: Arc<dyn HostCapabilities>,
    idle_wapc: Arc<IdleInstances<WarmInstance>>,
    idle_rego: Arc<IdleInstances<OpaInstance>>,
    /// The first Gatekeeper result this policy gave that is not a list of violations.
    unread_result: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for PolicyEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEvaluator")
            .field("policy_id", &self.policy_id)
            .field("module", &self.module)
            .field("limits", &self.limits)
            .field("reused_instances", &self.idle_wapc.capacity())
            .finish_non_exhaustive()
    }
}

impl PolicyEvaluator {
    pub fn new(module: Arc<PolicyModule>, settings: EvaluatorSettings) -> Self {
        let policy_settings = match settings.settings {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(value) => value,
        };
        PolicyEvaluator {
            module,
            policy_id: settings.policy_id.into(),
            settings_json: policy_settings.to_string().into_bytes().into(),
            settings: policy_settings,
            limits: settings.limits,
            granted: settings.host_capabilities.into(),
            host: settings.host,
            idle_wapc: Arc::new(IdleInstances::new(settings.reused_instances)),
            idle_rego: Arc::new(IdleInstances::new(settings.reused_instances)),
            unread_result: Arc::default(),
        }
    }

    /// Linear memory held by this policy's idle instances, in bytes.
    pub fn idle_memory_bytes(&self) -> usize {
        self.idle_wapc.memory_bytes() + self.idle_rego.memory_bytes()
    }

    pub fn module(&self) -> &Arc<PolicyModule> {
        &self.module
    }

    pub fn policy_id(&self) -> &str {
        &self.policy_id
    }

    /// What this Gatekeeper policy answered, the first time its result was not a list of
    /// violations: such a result admits the request, as upstream Kubewarden's runtime does,
    /// so the policy enforces nothing. `None` while every result was understood (and for
    /// every other kind of policy).
    pub fn result_not_understood(&self) -> Option<&str> {
        self.unread_result.get().map(String::as_str)
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
            tracing::debug!(policy = %self.policy_id, error = %err, "the result shape check could not evaluate the policy");
        }
    }

    /// Asks the policy whether its settings are valid.
    /// Rego policies have no such entry point: their settings are always valid, as upstream.
    pub fn validate_settings(&self) -> Result<SettingsValidationResponse, EvaluationError> {
        if let Runtime::Opa(_) = self.module.runtime {
            return Ok(SettingsValidationResponse {
                valid: true,
                message: None,
            });
        }
        let answer = self.call("validate_settings", self.settings_json.to_vec())?;
        serde_json::from_slice(&answer).map_err(|e| EvaluationError::InvalidAnswer {
            expected: "SettingsValidationResponse",
            reason: e.to_string(),
        })
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
        if let Runtime::Opa(_) = self.module.runtime {
            return self.validate_rego(uid, request.value(), false);
        }
        let answer = self.validation_answer(&request)?;
        // Only a mutation needs the object, to diff it against the mutated one.
        let object = match &answer.mutated_object {
            Some(_) => request.value().get("object").unwrap_or(&Value::Null),
            None => &Value::Null,
        };
        Ok(AdmissionResponse::from_validation(uid, object, answer))
    }

    fn validate_document(
        &self,
        request: Request<'_>,
    ) -> Result<AdmissionResponse, EvaluationError> {
        let uid = request.uid().unwrap_or_default();
        if let Runtime::Opa(_) = self.module.runtime {
            return self.validate_rego(uid, request.value(), true);
        }
        let answer = self.validation_answer(&request)?;
        let document = match &answer.mutated_object {
            Some(_) => request.value(),
            None => &Value::Null,
        };
        Ok(AdmissionResponse::from_validation(uid, document, answer))
    }

    /// Evaluates a Rego policy: `opa` policies see `{"request": ...}` as input and their
    /// settings as data and answer an AdmissionReview; `gatekeeper` policies see
    /// `{"parameters": settings, "review": request}` and answer a list of violations.
    fn validate_rego(
        &self,
        uid: &str,
        request: &Value,
        raw: bool,
    ) -> Result<AdmissionResponse, EvaluationError> {
        let Runtime::Opa(module) = &self.module.runtime else {
            return Err(EvaluationError::InvalidRequest(
                "not a Rego policy".to_string(),
            ));
        };
        let gatekeeper = self.module.metadata().execution_mode == ExecutionMode::Gatekeeper;
        if gatekeeper && raw {
            return Err(EvaluationError::InvalidRequest(
                "Gatekeeper policies evaluate Kubernetes admission requests, not raw documents"
                    .to_string(),
            ));
        }
        let engine = self.module.engine.engine();
        let mut instance = match self.idle_rego.take() {
            Some(instance) => instance,
            None if gatekeeper => module.instance(
                engine,
                &self.limits,
                self.policy_id.clone(),
                &opa::EMPTY_DATA,
            )?,
            None => {
                module.instance(engine, &self.limits, self.policy_id.clone(), &self.settings)?
            }
        };
        let context = self
            .host
            .context_objects(&self.policy_id)
            .map_err(|e| EvaluationError::Context(e.to_string()))?;
        // Context-aware policies see the cluster as data, fresh for every evaluation.
        let data = if context.is_empty() {
            None
        } else if gatekeeper {
            Some(serde_json::json!({ "inventory": opa::inventory_data(&context) }))
        } else {
            let mut data = match &self.settings {
                Value::Object(settings) => settings.clone(),
                _ => serde_json::Map::new(),
            };
            data.insert("kubernetes".into(), opa::kubernetes_data(&context));
            Some(Value::Object(data))
        };
        let result = if gatekeeper {
            let input = opa::GatekeeperInput {
                parameters: &self.settings,
                review: request,
            };
            instance.evaluate(&input, data.as_ref(), &self.limits)
        } else {
            instance.evaluate(&opa::OpaInput { request }, data.as_ref(), &self.limits)
        };
        if result.is_ok() {
            self.idle_rego.put_back(instance);
        }
        let result = result?;
        if gatekeeper {
            let verdict = opa::gatekeeper_response(uid, &result);
            if let Some(shape) = verdict.not_understood {
                self.notice_unread_result(shape);
            }
            Ok(verdict.response)
        } else {
            opa::opa_response(uid, &result)
        }
    }

    /// Records a Gatekeeper result that is not a list of violations; the first one is a warning
    /// in the log (the policy admits everything), later ones are debug lines.
    fn notice_unread_result(&self, shape: String) {
        let mut unrecorded = Some(shape);
        let recorded = self
            .unread_result
            .get_or_init(|| unrecorded.take().unwrap_or_default());
        match unrecorded {
            None => tracing::warn!(
                policy = %self.policy_id,
                result = %recorded,
                "the Gatekeeper policy's result is not a list of violations; the request is \
                 admitted, as upstream Kubewarden admits it, so this policy enforces nothing"
            ),
            Some(shape) => tracing::debug!(
                policy = %self.policy_id,
                result = %shape,
                "Gatekeeper result not understood; admitted"
            ),
        }
    }

    /// Asks a waPC or WASI policy about a request.
    fn validation_answer(
        &self,
        request: &Request<'_>,
    ) -> Result<ValidationResponse, EvaluationError> {
        let payload = match request {
            Request::Decoded(decoded) => self.validation_payload(decoded.json()),
            Request::Parsed(value) => self.validation_payload(value.to_string().as_bytes()),
        };
        let answer = self.call("validate", payload)?;
        serde_json::from_slice(&answer).map_err(|e| EvaluationError::InvalidAnswer {
            expected: "ValidationResponse",
            reason: e.to_string(),
        })
    }

    /// The `validate` payload, `{"request": .., "settings": ..}`, put together from JSON text
    /// at hand in one allocation of the exact size.
    fn validation_payload(&self, request_json: &[u8]) -> Vec<u8> {
        const REQUEST: &[u8] = br#"{"request":"#;
        const SETTINGS: &[u8] = br#","settings":"#;
        let mut payload = Vec::with_capacity(
            REQUEST.len() + request_json.len() + SETTINGS.len() + self.settings_json.len() + 1,
        );
        payload.extend_from_slice(REQUEST);
        payload.extend_from_slice(request_json);
        payload.extend_from_slice(SETTINGS);
        payload.extend_from_slice(&self.settings_json);
        payload.push(b'}');
        payload
    }

    /// The waPC protocol version the guest reports (waPC guests only).
    pub fn protocol_version(&self) -> Result<String, EvaluationError> {
        if let Runtime::Opa(_) = self.module.runtime {
            return Err(EvaluationError::InvalidRequest(
                "Rego policies have no waPC protocol version".to_string(),
            ));
        }
        let answer = self.call("protocol_version", Vec::new())?;
        serde_json::from_slice(&answer).map_err(|e| EvaluationError::InvalidAnswer {
            expected: "protocol version",
            reason: e.to_string(),
        })
    }

    /// Runs one operation in a fresh instance, the way the module's execution mode wants.
    fn call(&self, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, EvaluationError> {
        match self.module.metadata().execution_mode {
            ExecutionMode::Wasi => self.call_wasi(operation, payload),
            _ => self.call_wapc(operation, payload),
        }
    }

    fn new_store(&self, wasi: wasmtime_wasi::p1::WasiP1Ctx) -> Store<HostState> {
        let state = HostState {
            wasi,
            limiter: MemoryLimiter::new(self.limits.memory_bytes),
            call: WapcCall::default(),
            policy_id: self.policy_id.clone(),
            granted: self.granted.clone(),
            host: self.host.clone(),
            stdin: None,
        };
        let mut store = Store::new(self.module.engine.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.limits.timeout.map_or(u64::MAX, deadline_ticks));
        store
    }

    fn instantiate(&self, store: &mut Store<HostState>) -> Result<Instance, EvaluationError> {
        self.instance_pre()?
            .instantiate(&mut *store)
            .map_err(|err| match self.classify(err, store) {
                EvaluationError::Trap(message) => EvaluationError::Instantiation(message),
                other => other,
            })
    }

    /// A WASI command: argv names the operation, stdin carries the payload, stdout the answer.
    fn call_wasi(&self, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, EvaluationError> {
        let argument = match operation {
            "validate" => "validate",
            "validate_settings" => "validate-settings",
            other => {
                return Err(EvaluationError::InvalidRequest(format!(
                    "WASI policies do not answer {other}"
                )));
            }
        };
        let stdout = MemoryOutputPipe::new(WASI_OUTPUT_LIMIT);
        let stderr = MemoryOutputPipe::new(WASI_OUTPUT_LIMIT);
        let stdin = GrowingStdin::new(payload);
        let wasi = WasiCtxBuilder::new()
            .args(&["policy.wasm", argument])
            .stdin(stdin.clone())
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build_p1();
        let mut store = self.new_store(wasi);
        store.data_mut().stdin = Some(stdin);
        let instance = self.instantiate(&mut store)?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|_| EvaluationError::MissingExport("_start"))?;
        let exit_code = match start.call(&mut store, ()) {
            Ok(()) => 0,
            Err(err) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(code)) => *code,
                None => return Err(self.classify(err, &store)),
            },
        };
        let errors = String::from_utf8_lossy(&stderr.contents())
            .trim()
            .to_string();
        if !errors.is_empty() {
            tracing::debug!(policy = %self.policy_id, stderr = %errors, "WASI policy wrote to stderr");
        }
        if exit_code != 0 {
            return Err(EvaluationError::Guest(format!(
                "exited with code {exit_code}: {errors}"
            )));
        }
        Ok(stdout.contents().to_vec())
    }

    /// One waPC call, in an idle instance if there is one, else in a new one.
    fn call_wapc(&self, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, EvaluationError> {
        let mut instance = match self.idle_wapc.take() {
            Some(mut instance) => {
                instance
                    .store
                    .set_epoch_deadline(self.limits.timeout.map_or(u64::MAX, deadline_ticks));
                instance
            }
            None => self.new_wapc_instance()?,
        };
        let answer = self.guest_call(&mut instance, operation, payload);
        if answer.is_ok() {
            self.idle_wapc.put_back(instance);
        }
        answer
    }

    /// A new instance, its initialisers run.
    fn new_wapc_instance(&self) -> Result<WarmInstance, EvaluationError> {
        let wasi = WasiCtxBuilder::new()
            .inherit_stdout()
            .inherit_stderr()
            .build_p1();
        let mut store = self.new_store(wasi);
        let instance = self.instantiate(&mut store)?;
        run_start_functions(&mut store, &instance).map_err(|err| self.classify(err, &store))?;
        if instance.get_func(&mut store, "__guest_call").is_none() {
            return Err(EvaluationError::MissingExport("__guest_call"));
        }
        let guest_call = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "__guest_call")
            .map_err(|e| {
                EvaluationError::Instantiation(format!("__guest_call has the wrong signature: {e}"))
            })?;
        let memory = instance.get_memory(&mut store, "memory");
        Ok(WarmInstance {
            store,
            guest_call,
            memory,
        })
    }

    fn guest_call(
        &self,
        instance: &mut WarmInstance,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, EvaluationError> {
        let (op_len, payload_len) = (len_arg(operation.len())?, len_arg(payload.len())?);
        let store = &mut instance.store;
        store.data_mut().call = WapcCall::new(operation, payload);
        let status = instance
            .guest_call
            .call(&mut *store, (op_len, payload_len))
            .map_err(|err| self.classify(err, store))?;
        let call = &mut store.data_mut().call;
        if status == 1 {
            call.guest_response
                .take()
                .ok_or_else(|| EvaluationError::InvalidAnswer {
                    expected: "waPC response",
                    reason: "the policy reported success without a response".into(),
                })
        } else {
            Err(EvaluationError::Guest(
                call.guest_error
                    .take()
                    .unwrap_or_else(|| "the policy failed without an error message".into()),
            ))
        }
    }

    fn instance_pre(&self) -> Result<&InstancePre<HostState>, EvaluationError> {
        match &self.module.runtime {
            Runtime::Wasm(pre) => Ok(pre),
            Runtime::Opa(_) => Err(EvaluationError::InvalidRequest(
                "Rego policies answer no waPC or WASI calls".to_string(),
            )),
        }
    }

    /// Names the cause of a failed call.
    fn classify(&self, err: wasmtime::Error, store: &Store<HostState>) -> EvaluationError {
        classify(err, store.data().limiter.exceeded, &self.limits)
    }
}

/// Most a WASI policy may write to stdout or stderr in one evaluation.
const WASI_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

fn len_arg(len: usize) -> Result<i32, EvaluationError> {
    i32::try_from(len).map_err(|_| {
        EvaluationError::InvalidRequest(format!("{len} bytes is too large for a policy"))
    })
}

/// Runs the initialisers a guest exports, in the order upstream does: `_start` (TinyGo and Go
/// runtimes), then `wapc_init` (Rust SDK). A `_start` that ends with `proc_exit(0)` succeeded.
/// Beyond upstream, a WASI reactor's `_initialize` (without a `_start`, and taking and
/// returning nothing, as WASI defines it) runs where `_start` would: standard Go
/// (`-buildmode=c-shared` with `go:wasmexport`) starts its runtime there; Rust reactors run
/// their static constructors.
fn run_start_functions(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<()> {
    let has_start = instance.get_func(&mut *store, "_start").is_some();
    for name in ["_start", "_initialize", "wapc_init"] {
        // Look the export up before typing it: a missing export would otherwise build an
        // error value per evaluation (with a backtrace when RUST_BACKTRACE is set).
        let Some(export) = instance.get_func(&mut *store, name) else {
            continue;
        };
        if name == "_initialize" {
            let signature = export.ty(&*store);
            if has_start || signature.params().len() != 0 || signature.results().len() != 0 {
                continue;
            }
        }
        let function = instance.get_typed_func::<(), ()>(&mut *store, name)?;
        if let Err(err) = function.call(&mut *store, ()) {
            match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => {}
                _ => return Err(err),
            }
        }
    }
    Ok(())
}
