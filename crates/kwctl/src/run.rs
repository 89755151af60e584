//! `kwctl run`: evaluates one request with this project's policy-evaluator, exactly as the
//! policy-server would (without its mode and message shaping, as upstream's kwctl).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use policy_evaluator::metadata::{ExecutionMode, Metadata, PolicyType, ProtocolVersion};
use policy_evaluator::response::{AdmissionResponse, AdmissionStatus};
use policy_evaluator::{EngineOptions, EvaluatorSettings, PolicyEngine, PolicyEvaluator};
use policy_server::capabilities::kubernetes::KindRef;
use serde_json::Value;

use crate::host::{Host, Interactions, LiveParts};

/// Where a run's host capabilities come from.
pub struct HostOptions {
    pub interactions: Interactions,
    /// Grants the Kubernetes kinds of the metadata's `contextAwareResources`.
    pub allow_context_aware: bool,
    /// Registry access and trust for the OCI capabilities.
    pub fetcher: policy_server::fetch::Fetcher,
    pub trust_root: policy_server::signatures::TrustRoot,
}

/// What a run needs besides the module.
pub struct RunOptions {
    /// The request file; `-` reads standard input.
    pub request_path: PathBuf,
    pub settings: Option<Value>,
    /// Overrides the execution mode of the module's metadata (needed without metadata).
    pub execution_mode: Option<ExecutionMode>,
    /// Evaluates the request as a free-form document (implied by `policyType: raw`).
    pub raw: bool,
    /// Compile cache directory; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    pub host: HostOptions,
}

/// Settings from a YAML or JSON file, or from a JSON string.
pub fn read_settings(path: Option<&Path>, json: Option<&str>) -> Result<Option<Value>> {
    let settings: Value = match (path, json) {
        (Some(_), Some(_)) => {
            bail!("'settings-path' and 'settings-json' cannot be used at the same time")
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("Error reading settings from {}", path.display()))?;
            serde_yaml_ng::from_str(&text)
                .with_context(|| format!("Error reading settings from {}", path.display()))?
        }
        (None, Some(json)) => serde_json::from_str(json).context("--settings-json is not JSON")?,
        (None, None) => return Ok(None),
    };
    match settings {
        Value::Object(_) | Value::Null => Ok(Some(settings)),
        other => bail!("the settings must be a mapping, not {other}"),
    }
}

/// The metadata the module is run with: its own, with the execution mode overridden when
/// asked; without a metadata section only an explicit execution mode can run it.
fn effective_metadata(wasm: &[u8], uri: &str, mode: Option<ExecutionMode>) -> Result<Metadata> {
    let own = Metadata::from_module(wasm).with_context(|| format!("reading {uri}"))?;
    match (own, mode) {
        (Some(metadata), None) => {
            metadata
                .validate()
                .with_context(|| format!("Policy {uri} cannot be validated"))?;
            Ok(metadata)
        }
        (own, Some(mode)) => {
            let mut metadata = own.unwrap_or_default();
            metadata.execution_mode = mode;
            if mode == ExecutionMode::KubewardenWapc {
                // Every waPC guest of the SDKs speaks v1; a wrong guess fails at its first call.
                metadata.protocol_version = ProtocolVersion::V1;
            }
            Ok(metadata)
        }
        (None, None) => bail!(
            "No Kubewarden metadata found inside of '{uri}'.\nPolicies can be annotated with the `kwctl annotate` command, or run with --execution-mode."
        ),
    }
}

fn read_request(path: &Path) -> Result<Value> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the request from standard input")?;
        text
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("Error opening request file {}", path.display()))?
    };
    let request: Value = serde_json::from_str(&text)
        .with_context(|| format!("the request {} is not JSON", path.display()))?;
    if !request.is_object() {
        bail!(
            "Invalid request object: {} holds no JSON object",
            path.display()
        );
    }
    Ok(request)
}

/// The AdmissionResponse as upstream's kwctl prints it: `auditAnnotations` and `warnings`
/// always present (`null` when empty).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Printed<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a AdmissionStatus>,
    audit_annotations: &'a Option<std::collections::BTreeMap<String, String>>,
    warnings: &'a Option<Vec<String>>,
}

/// One line of compact JSON.
pub fn print_response(response: &AdmissionResponse) -> Result<String> {
    Ok(serde_json::to_string(&Printed {
        uid: &response.uid,
        allowed: response.allowed,
        patch_type: response.patch_type.as_deref(),
        patch: response.patch.as_deref(),
        status: response.status.as_ref(),
        audit_annotations: &response.audit_annotations,
        warnings: &response.warnings,
    })?)
}

/// A policy ready to evaluate its request: its settings validated, the request read.
pub struct Prepared {
    pub evaluator: PolicyEvaluator,
    /// The AdmissionRequest (or, raw, the document).
    pub request: Value,
    pub raw: bool,
    /// Its host capabilities: [`Host::finish`] once the evaluations are over.
    pub host: Host,
}

/// The host capabilities of a run of a policy with `metadata`.
fn host(uri: &str, metadata: &Metadata, options: &HostOptions) -> Result<Host> {
    let kinds = if options.allow_context_aware {
        metadata
            .context_aware_resources
            .iter()
            .map(|resource| KindRef {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            })
            .collect()
    } else {
        if !metadata.context_aware_resources.is_empty() {
            tracing::warn!(
                "the policy wants to read Kubernetes resources ({}), but --allow-context-aware was not given: it is run without access to them",
                metadata
                    .context_aware_resources
                    .iter()
                    .map(|r| format!("{}/{}", r.api_version, r.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Default::default()
    };
    Host::new(
        uri,
        &options.interactions,
        LiveParts {
            fetcher: options.fetcher.clone(),
            trust_root: options.trust_root.clone(),
            kinds,
        },
    )
}

impl Prepared {
    /// Compiles the module, validates the settings and reads the request. `reused_instances`
    /// as in the policy-server: 0 gives every evaluation a fresh instance.
    pub fn new(
        uri: &str,
        module: &Path,
        options: &RunOptions,
        reused_instances: usize,
    ) -> Result<Self> {
        let wasm =
            std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
        let metadata = effective_metadata(&wasm, uri, options.execution_mode)?;
        let raw = options.raw || metadata.policy_type == PolicyType::Raw;
        let host = host(uri, &metadata, &options.host)?;
        let engine = PolicyEngine::new(&EngineOptions {
            cache_dir: options.cache_dir.clone(),
            pooling: None,
        })?;
        let module = engine
            .load_with_metadata(&wasm, metadata)
            .with_context(|| format!("loading {uri}"))?;
        let mut settings = EvaluatorSettings::new(uri);
        settings.settings = options.settings.clone();
        settings.reused_instances = reused_instances;
        // kwctl restricts no capability, as upstream's; Kubernetes reads are limited by the
        // grants of `host`.
        settings.host_capabilities = vec!["*".to_string()];
        settings.host = host.provider.clone();
        let evaluator = PolicyEvaluator::new(Arc::new(module), settings);
        let answer = evaluator
            .validate_settings()
            .with_context(|| format!("Error running policy {uri}"))?;
        if !answer.valid {
            bail!(
                "Provided settings are not valid: {:?}",
                answer.message.unwrap_or_default()
            );
        }
        let mut request = read_request(&options.request_path)?;
        if request["kind"] == "AdmissionReview" {
            request = request
                .get("request")
                .cloned()
                .context("the AdmissionReview has no request")?;
        }
        Ok(Prepared {
            evaluator,
            request,
            raw,
            host,
        })
    }

    /// The policy's AdmissionResponse to the request.
    pub fn evaluate(&self, uri: &str) -> Result<AdmissionResponse> {
        let response = if self.raw {
            self.evaluator.validate_raw(&self.request)
        } else {
            self.evaluator.validate(&self.request)
        };
        response.with_context(|| format!("Error running policy {uri}"))
    }
}

/// Validates the settings, then evaluates the request: the policy's AdmissionResponse.
pub fn run(uri: &str, module: &Path, options: &RunOptions) -> Result<AdmissionResponse> {
    let prepared = Prepared::new(uri, module, options, 0)?;
    let response = prepared.evaluate(uri);
    prepared.host.finish()?;
    response
}
