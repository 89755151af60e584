//! `wasi` commands: every operation runs `_start` in a fresh instance, with the operation in
//! argv, the payload on stdin and the answer on stdout (Kubewarden's Go WASI SDK).

use wasmtime::InstancePre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::guest::{self, classify_in};
use super::host_imports::HostState;
use super::wasi_stdin::GrowingStdin;
use super::{PolicyContext, PolicyRuntime, Request, Target};
use crate::error::EvaluationError;
use crate::response::{AdmissionResponse, SettingsValidationResponse};

/// Most a WASI policy may write to stdout or stderr in one evaluation.
const OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

pub(super) struct WasiRuntime {
    pre: InstancePre<HostState>,
}

impl WasiRuntime {
    pub(super) fn new(pre: InstancePre<HostState>) -> Self {
        WasiRuntime { pre }
    }

    /// Runs the command once: `argument` names the operation.
    fn run(
        &self,
        policy: &PolicyContext,
        argument: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, EvaluationError> {
        let stdout = MemoryOutputPipe::new(OUTPUT_LIMIT);
        let stderr = MemoryOutputPipe::new(OUTPUT_LIMIT);
        let stdin = GrowingStdin::new(payload);
        let wasi = WasiCtxBuilder::new()
            .args(&["policy.wasm", argument])
            .stdin(stdin.clone())
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build_p1();
        let mut store = guest::new_store(&self.pre, policy, wasi);
        store.data_mut().stdin = Some(stdin);
        let instance = guest::instantiate(&self.pre, policy, &mut store)?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|_| EvaluationError::MissingExport("_start"))?;
        let exit_code = match start.call(&mut store, ()) {
            Ok(()) => 0,
            Err(err) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(code)) => *code,
                None => return Err(classify_in(&store, err, policy)),
            },
        };
        let errors = String::from_utf8_lossy(&stderr.contents())
            .trim()
            .to_string();
        if !errors.is_empty() {
            tracing::debug!(policy = %policy.policy_id, stderr = %errors, "WASI policy wrote to stderr");
        }
        if exit_code != 0 {
            return Err(EvaluationError::Guest(format!(
                "exited with code {exit_code}: {errors}"
            )));
        }
        Ok(stdout.contents().to_vec())
    }
}

impl PolicyRuntime for WasiRuntime {
    fn validate(
        &self,
        policy: &PolicyContext,
        uid: &str,
        request: &Request<'_>,
        target: Target,
    ) -> Result<AdmissionResponse, EvaluationError> {
        guest::validate(policy, uid, request, target, |_, payload| {
            self.run(policy, "validate", payload)
        })
    }

    fn validate_settings(
        &self,
        policy: &PolicyContext,
    ) -> Result<SettingsValidationResponse, EvaluationError> {
        guest::validate_settings(policy, |_, payload| {
            self.run(policy, "validate-settings", payload)
        })
    }

    fn protocol_version(&self, _: &PolicyContext) -> Result<String, EvaluationError> {
        Err(EvaluationError::InvalidRequest(
            "WASI policies do not answer protocol_version".to_string(),
        ))
    }
}
