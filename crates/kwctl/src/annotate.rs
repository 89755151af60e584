//! `kwctl annotate`: writes metadata into a module's `kubewarden_metadata` section, after
//! checking it as the policy-server will.

use std::path::Path;

use anyhow::{Context, Result, bail};
use policy_evaluator::metadata::{ExecutionMode, Metadata, ProtocolVersion, annotate};
use policy_evaluator::{EngineOptions, EvaluatorSettings, PolicyEngine, PolicyEvaluator};

const USAGE_ANNOTATION: &str = "io.kubewarden.policy.usage";
const KWCTL_ANNOTATION: &str = "io.kubewarden.kwctl";

/// Whether the module is Rego compiled by OPA (it exports `opa_*` functions).
fn is_rego(wasm: &[u8]) -> bool {
    // The export names are in the module's text; a false positive would need a waPC module
    // exporting `opa_eval`, which the execution mode check below reports anyway.
    wasm.windows(b"opa_eval".len()).any(|w| w == b"opa_eval")
}

/// The annotated module.
pub fn annotated(wasm: &[u8], metadata_path: &Path, usage_path: Option<&Path>) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(metadata_path)
        .with_context(|| format!("Error opening metadata file {}", metadata_path.display()))?;
    let mut metadata: Metadata = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("Error unmarshalling metadata {}", metadata_path.display()))?;
    let rego = is_rego(wasm);
    match (rego, metadata.execution_mode) {
        (true, ExecutionMode::KubewardenWapc | ExecutionMode::Wasi) => bail!(
            "executionMode is {:?}, but the module is Rego compiled by OPA: set executionMode to opa or gatekeeper",
            metadata.execution_mode
        ),
        (false, ExecutionMode::Opa | ExecutionMode::Gatekeeper) => bail!(
            "executionMode is {:?}, but the module is not Rego compiled by OPA",
            metadata.execution_mode
        ),
        _ => {}
    }
    if metadata.execution_mode == ExecutionMode::KubewardenWapc {
        metadata.protocol_version = protocol_version(wasm, &metadata)?;
    }
    let annotations = metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(
        KWCTL_ANNOTATION.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    if let Some(path) = usage_path {
        let usage = std::fs::read_to_string(path)
            .with_context(|| format!("reading the usage file {}", path.display()))?;
        annotations.insert(USAGE_ANNOTATION.to_string(), usage);
    }
    metadata
        .validate()
        .map_err(|e| anyhow::anyhow!("Metadata is invalid: {e}"))?;
    Ok(annotate(wasm, &metadata)?)
}

/// Asks the waPC guest which protocol it speaks.
fn protocol_version(wasm: &[u8], metadata: &Metadata) -> Result<ProtocolVersion> {
    let engine = PolicyEngine::new(&EngineOptions::default())?;
    let mut assumed = metadata.clone();
    assumed.protocol_version = ProtocolVersion::V1;
    let module = engine
        .load_with_metadata(wasm, assumed)
        .context("the module cannot be compiled")?;
    let evaluator = PolicyEvaluator::new(
        std::sync::Arc::new(module),
        EvaluatorSettings::new("annotate"),
    );
    let answer = evaluator
        .protocol_version()
        .context("the waPC guest does not answer protocol_version")?;
    match answer.as_str() {
        "v1" | "\"v1\"" => Ok(ProtocolVersion::V1),
        other => bail!("the waPC guest speaks protocol {other}, which is not supported"),
    }
}
