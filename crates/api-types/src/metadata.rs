//! The `io.kubewarden.metadata` custom section every policy module carries: how to run the
//! module (execution mode, waPC protocol version) and what it is for (rules, mutating,
//! context-aware resources). Reading, validating and writing it.

use std::collections::BTreeMap;

use crate::crd::ContextAwareResource;
use serde::{Deserialize, Serialize};

/// Name of the custom section.
pub const METADATA_SECTION: &str = "io.kubewarden.metadata";

/// The Kubewarden release whose policies this engine runs; modules asking for a newer one
/// are refused.
pub const KUBEWARDEN_COMPATIBILITY_VERSION: (u64, u64) = (1, 36);

/// waPC protocol a module speaks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProtocolVersion {
    #[default]
    Unknown,
    #[serde(rename = "v1")]
    V1,
}

/// How the module is run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutionMode {
    /// A waPC guest (Rust, TinyGo, Go wasip1, ... SDKs).
    #[default]
    #[serde(rename = "kubewarden-wapc")]
    KubewardenWapc,
    /// A WASI command reading the request on stdin.
    #[serde(rename = "wasi")]
    Wasi,
    /// Rego compiled for OPA.
    #[serde(rename = "opa")]
    Opa,
    /// Rego compiled for Gatekeeper.
    #[serde(rename = "gatekeeper")]
    Gatekeeper,
}

/// Whether the module evaluates Kubernetes admission requests or free-form documents.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PolicyType {
    #[default]
    Kubernetes,
    Raw,
}

/// A rule the module's authors suggest for its webhook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetadataRule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub api_versions: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub operations: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// The content of the metadata section. Unknown fields are ignored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub protocol_version: ProtocolVersion,
    #[serde(default)]
    pub rules: Vec<MetadataRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub mutating: bool,
    #[serde(default = "default_true")]
    pub background_audit: bool,
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    #[serde(default)]
    pub policy_type: PolicyType,
    #[serde(default)]
    pub context_aware_resources: Vec<ContextAwareResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_kubewarden_version: Option<String>,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            protocol_version: ProtocolVersion::Unknown,
            rules: Vec::new(),
            annotations: None,
            mutating: false,
            background_audit: true,
            execution_mode: ExecutionMode::KubewardenWapc,
            policy_type: PolicyType::Kubernetes,
            context_aware_resources: Vec::new(),
            host_capabilities: None,
            minimum_kubewarden_version: None,
        }
    }
}

/// Why a module's metadata cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("the module is not valid WebAssembly: {0}")]
    InvalidModule(String),
    #[error("the {METADATA_SECTION} section is not valid JSON metadata: {0}")]
    InvalidJson(String),
    #[error(
        "the module has no {METADATA_SECTION} section: annotate it (kwctl annotate) before running it"
    )]
    Missing,
    #[error("the module has more than one {METADATA_SECTION} section")]
    Duplicate,
    #[error(
        "the policy is missing the waPC protocol version: a kubewarden-wapc module must declare protocolVersion \"v1\" (rebuild it with a current SDK and annotate it)"
    )]
    MissingProtocolVersion,
    #[error("the policy requires Kubewarden {required} or newer, this policy-server is compatible with {}.{}", KUBEWARDEN_COMPATIBILITY_VERSION.0, KUBEWARDEN_COMPATIBILITY_VERSION.1)]
    TooNew { required: String },
    #[error("minimumKubewardenVersion {0:?} is not a version (major.minor[.patch])")]
    InvalidVersion(String),
    #[error("rules[{index}]: {message}")]
    InvalidRule { index: usize, message: String },
}

impl Metadata {
    /// Reads the metadata section of a module. `Ok(None)` when the module has none.
    pub fn from_module(wasm: &[u8]) -> Result<Option<Metadata>, MetadataError> {
        let mut found = None;
        for section in custom_sections(wasm)? {
            if section.name != METADATA_SECTION {
                continue;
            }
            if found.is_some() {
                return Err(MetadataError::Duplicate);
            }
            let data = &wasm[section.data.clone()];
            let metadata: Metadata = serde_json::from_slice(data)
                .map_err(|e| MetadataError::InvalidJson(e.to_string()))?;
            found = Some(metadata);
        }
        Ok(found)
    }

    /// Reads and validates the metadata a module must carry to be run.
    pub fn required_from_module(wasm: &[u8]) -> Result<Metadata, MetadataError> {
        let metadata = Self::from_module(wasm)?.ok_or(MetadataError::Missing)?;
        metadata.validate()?;
        Ok(metadata)
    }

    /// Checks what the upstream policy-server checks before running a module.
    pub fn validate(&self) -> Result<(), MetadataError> {
        if self.execution_mode == ExecutionMode::KubewardenWapc
            && self.protocol_version != ProtocolVersion::V1
        {
            return Err(MetadataError::MissingProtocolVersion);
        }
        if let Some(required) = &self.minimum_kubewarden_version {
            let (major, minor) = parse_major_minor(required)?;
            if (major, minor) > KUBEWARDEN_COMPATIBILITY_VERSION {
                return Err(MetadataError::TooNew {
                    required: required.clone(),
                });
            }
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let lists = [
                ("apiGroups", &rule.api_groups),
                ("apiVersions", &rule.api_versions),
                ("resources", &rule.resources),
                ("operations", &rule.operations),
            ];
            for (name, values) in lists {
                if values.is_empty() {
                    return Err(MetadataError::InvalidRule {
                        index,
                        message: format!("{name} must not be empty"),
                    });
                }
                if values.len() > 1 && values.iter().any(|v| v == "*") {
                    return Err(MetadataError::InvalidRule {
                        index,
                        message: format!("'*' must be the only entry of {name}"),
                    });
                }
            }
            if let Some(op) = rule.operations.iter().find(|op| {
                !matches!(
                    op.as_str(),
                    "CREATE" | "UPDATE" | "DELETE" | "CONNECT" | "*"
                )
            }) {
                return Err(MetadataError::InvalidRule {
                    index,
                    message: format!("unknown operation {op:?}"),
                });
            }
        }
        Ok(())
    }
}

fn parse_major_minor(version: &str) -> Result<(u64, u64), MetadataError> {
    let invalid = || MetadataError::InvalidVersion(version.to_string());
    let trimmed = version.trim().trim_start_matches('v');
    let mut parts = trimmed.split('.');
    let major = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(invalid)?;
    let minor = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(invalid)?;
    // The patch level is ignored, as upstream does; only check it is a number if present.
    if let Some(patch) = parts.next()
        && patch
            .split(['-', '+'])
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .is_none()
    {
        return Err(invalid());
    }
    Ok((major, minor))
}

struct CustomSection<'a> {
    name: &'a str,
    /// Byte range of the section's payload (after the name) within the module.
    data: std::ops::Range<usize>,
    /// Byte range of the whole section (id, size, name, payload).
    whole: std::ops::Range<usize>,
}

/// Reads an unsigned LEB128 number at `*pos`, advancing it.
fn read_leb128(wasm: &[u8], pos: &mut usize) -> Option<usize> {
    let mut value: usize = 0;
    for shift in (0..35).step_by(7) {
        let byte = *wasm.get(*pos)?;
        *pos += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The custom sections of a module. Only the top-level section layout is read (header, then
/// id / size / payload); compiling the module validates the rest.
fn custom_sections(wasm: &[u8]) -> Result<Vec<CustomSection<'_>>, MetadataError> {
    let invalid = |what: &str| MetadataError::InvalidModule(what.to_string());
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(invalid("missing the \\0asm header"));
    }
    if wasm[4..8] != [1, 0, 0, 0] {
        return Err(invalid("not a WebAssembly 1.0 core module"));
    }
    let mut sections = Vec::new();
    let mut pos = 8;
    while pos < wasm.len() {
        let start = pos;
        let id = wasm[pos];
        pos += 1;
        let size = read_leb128(wasm, &mut pos).ok_or_else(|| invalid("truncated section size"))?;
        let end = pos
            .checked_add(size)
            .filter(|end| *end <= wasm.len())
            .ok_or_else(|| invalid("a section runs past the end"))?;
        if id == 0 {
            let mut name_pos = pos;
            let name_len = read_leb128(wasm, &mut name_pos)
                .ok_or_else(|| invalid("truncated custom section name"))?;
            let name_end = name_pos
                .checked_add(name_len)
                .filter(|e| *e <= end)
                .ok_or_else(|| invalid("custom section name runs past the section"))?;
            let name = std::str::from_utf8(&wasm[name_pos..name_end])
                .map_err(|_| invalid("custom section name is not UTF-8"))?;
            sections.push(CustomSection {
                name,
                data: name_end..end,
                whole: start..end,
            });
        }
        pos = end;
    }
    Ok(sections)
}

fn leb128(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Returns the module with `metadata` as its only metadata section (what `kwctl annotate`
/// does): existing metadata sections are removed, the new one is appended.
pub fn annotate(wasm: &[u8], metadata: &Metadata) -> Result<Vec<u8>, MetadataError> {
    let sections = custom_sections(wasm)?;
    let mut out = Vec::with_capacity(wasm.len() + 512);
    let mut copied = 0;
    for section in sections.iter().filter(|s| s.name == METADATA_SECTION) {
        out.extend_from_slice(&wasm[copied..section.whole.start]);
        copied = section.whole.end;
    }
    out.extend_from_slice(&wasm[copied..]);
    let json =
        serde_json::to_vec(metadata).map_err(|e| MetadataError::InvalidJson(e.to_string()))?;
    let mut payload = Vec::with_capacity(json.len() + 32);
    leb128(METADATA_SECTION.len(), &mut payload);
    payload.extend_from_slice(METADATA_SECTION.as_bytes());
    payload.extend_from_slice(&json);
    out.push(0);
    leb128(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid module: magic and version.
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn wapc_metadata() -> Metadata {
        Metadata {
            protocol_version: ProtocolVersion::V1,
            rules: vec![MetadataRule {
                api_groups: vec!["".into()],
                api_versions: vec!["v1".into()],
                resources: vec!["pods".into()],
                operations: vec!["CREATE".into()],
            }],
            ..Metadata::default()
        }
    }

    #[test]
    fn annotate_then_read_back() {
        let annotated = annotate(EMPTY_MODULE, &wapc_metadata()).expect("annotate");
        assert_eq!(
            Metadata::required_from_module(&annotated),
            Ok(wapc_metadata())
        );
        // Annotating again replaces the section instead of adding a second one.
        let mut other = wapc_metadata();
        other.mutating = true;
        let twice = annotate(&annotated, &other).expect("annotate again");
        assert_eq!(Metadata::from_module(&twice), Ok(Some(other)));
        // A large section (multi-byte LEB128 sizes) round-trips too.
        let mut big = wapc_metadata();
        big.annotations = Some(
            [(
                "io.kubewarden.policy.description".to_string(),
                "x".repeat(5000),
            )]
            .into(),
        );
        let big_module = annotate(&twice, &big).expect("annotate big");
        assert_eq!(Metadata::from_module(&big_module), Ok(Some(big.clone())));
        let small_again = annotate(&big_module, &wapc_metadata()).expect("shrink");
        assert_eq!(
            Metadata::from_module(&small_again),
            Ok(Some(wapc_metadata()))
        );
    }

    #[test]
    fn upstream_json_with_unknown_fields() {
        let json = br#"{"protocolVersion":"v1","rules":[{"apiGroups":[""],"apiVersions":["v1"],"resources":["pods"],"operations":["CREATE","UPDATE"]}],"annotations":{"io.kubewarden.policy.title":"psp"},"mutating":true,"contextAware":true,"executionMode":"kubewarden-wapc","backgroundAudit":false,"contextAwareResources":[{"apiVersion":"v1","kind":"Namespace"}],"minimumKubewardenVersion":"1.9.0"}"#;
        let metadata: Metadata = serde_json::from_slice(json).expect("parses");
        assert!(metadata.mutating);
        assert!(!metadata.background_audit);
        assert_eq!(metadata.context_aware_resources.len(), 1);
        assert_eq!(metadata.validate(), Ok(()));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Metadata::required_from_module(EMPTY_MODULE),
            Err(MetadataError::Missing)
        );
        assert!(matches!(
            Metadata::from_module(b"not wasm"),
            Err(MetadataError::InvalidModule(_))
        ));
        let unversioned = Metadata::default();
        assert_eq!(
            unversioned.validate(),
            Err(MetadataError::MissingProtocolVersion)
        );
        let opa = Metadata {
            execution_mode: ExecutionMode::Opa,
            ..Metadata::default()
        };
        assert_eq!(opa.validate(), Ok(()));
        let mut too_new = wapc_metadata();
        too_new.minimum_kubewarden_version = Some("9.0.0".into());
        assert!(matches!(
            too_new.validate(),
            Err(MetadataError::TooNew { .. })
        ));
        too_new.minimum_kubewarden_version = Some("one".into());
        assert!(matches!(
            too_new.validate(),
            Err(MetadataError::InvalidVersion(_))
        ));
        let mut star = wapc_metadata();
        star.rules[0].operations = vec!["*".into(), "CREATE".into()];
        assert!(matches!(
            star.validate(),
            Err(MetadataError::InvalidRule { index: 0, .. })
        ));
        let mut empty = wapc_metadata();
        empty.rules[0].resources.clear();
        assert!(matches!(
            empty.validate(),
            Err(MetadataError::InvalidRule { .. })
        ));
    }
}
