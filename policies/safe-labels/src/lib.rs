//! Label constraints in the shape of Kubewarden's safe-labels policy, the way the common Rust
//! label and annotation policies are written: settings and the request decoded with serde
//! derive into typed structs, and the constraints' regular expressions compiled by the regex
//! crate from the settings on every call.
//!
//! Settings:
//! - `denied_labels`: labels an object must not carry;
//! - `mandatory_labels`: labels it must carry;
//! - `constrained_labels`: label → regular expression its value must match when present.
//!
//! A label may not be both denied and mandatory or constrained.

#[allow(dead_code)]
#[path = "../../common/wapc.rs"]
mod wapc;

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    denied_labels: BTreeSet<String>,
    mandatory_labels: BTreeSet<String>,
    constrained_labels: BTreeMap<String, String>,
}

/// Settings whose regular expressions compiled.
struct Constraints {
    denied: BTreeSet<String>,
    mandatory: BTreeSet<String>,
    constrained: Vec<(String, Regex)>,
}

impl Settings {
    fn compile(self) -> Result<Constraints, String> {
        let mut problems = Vec::new();
        for label in &self.denied_labels {
            if self.mandatory_labels.contains(label) {
                problems.push(format!("label {} is both denied and mandatory", label));
            }
            if self.constrained_labels.contains_key(label) {
                problems.push(format!("label {} is both denied and constrained", label));
            }
        }
        let mut constrained = Vec::new();
        for (label, pattern) in self.constrained_labels {
            match Regex::new(&pattern) {
                Ok(regex) => constrained.push((label, regex)),
                Err(e) => problems.push(format!("constrained label {}: invalid regular expression: {}", label, e)),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Constraints { denied: self.denied_labels, mandatory: self.mandatory_labels, constrained })
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ObjectMeta {
    name: Option<String>,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Object {
    metadata: ObjectMeta,
}

#[derive(Deserialize)]
struct Request {
    #[allow(dead_code)]
    uid: String,
    #[allow(dead_code)]
    operation: String,
    #[serde(default)]
    object: Object,
}

#[derive(Deserialize)]
struct ValidationRequest {
    request: Request,
    #[serde(default)]
    settings: Settings,
}

fn violations(constraints: &Constraints, labels: &BTreeMap<String, String>) -> Vec<String> {
    let mut violations = Vec::new();
    let denied: Vec<&str> = constraints.denied.iter().filter(|l| labels.contains_key(*l)).map(String::as_str).collect();
    if !denied.is_empty() {
        violations.push(format!("The following labels are denied: {}", denied.join(",")));
    }
    let missing: Vec<&str> = constraints.mandatory.iter().filter(|l| !labels.contains_key(*l)).map(String::as_str).collect();
    if !missing.is_empty() {
        violations.push(format!("The following mandatory labels are missing: {}", missing.join(",")));
    }
    let unmatched: Vec<&str> = constraints
        .constrained
        .iter()
        .filter(|(label, regex)| labels.get(label).map_or(false, |value| !regex.is_match(value)))
        .map(|(label, _)| label.as_str())
        .collect();
    if !unmatched.is_empty() {
        violations.push(format!("The following labels are violating user constraints: {}", unmatched.join(",")));
    }
    violations
}

fn handle(op: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(answer) = wapc::common_operation(op) {
        return answer;
    }
    if op == "validate_settings" {
        let settings: Result<Settings, _> = serde_json::from_slice(payload);
        return Ok(match settings.map_err(|e| e.to_string()).and_then(Settings::compile) {
            Ok(_) => wapc::settings_valid(),
            Err(message) => wapc::settings_invalid(&message),
        });
    }
    let request: ValidationRequest =
        serde_json::from_slice(payload).map_err(|e| format!("cannot decode the request: {}", e))?;
    let constraints = request.settings.compile()?;
    let meta = &request.request.object.metadata;
    // The annotations are decoded like the labels, as the label-and-annotation policies do.
    let _ = (&meta.name, &meta.namespace, meta.annotations.len());
    let problems = violations(&constraints, &meta.labels);
    if problems.is_empty() {
        Ok(wapc::accept())
    } else {
        Ok(wapc::reject(&problems.join("; "), 400))
    }
}

#[no_mangle]
pub extern "C" fn __guest_call(op_len: i32, payload_len: i32) -> i32 {
    wapc::dispatch(op_len, payload_len, handle)
}
