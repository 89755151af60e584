//! Helpers shared by the api-types tests: load fixtures, find a CRD's schema, and play the
//! apiserver's part (defaulting and CEL rules) without a cluster.

#![allow(dead_code)]

use std::path::PathBuf;

use api_types::crd::STORAGE_VERSION;
use kube::core::cel::{ScopeContext, Validator, analyze_rule, apply_defaults, compile_schema};
use serde_json::Value;

pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn yaml(name: &str) -> Value {
    serde_yaml_ng::from_str(&fixture(name)).expect("fixture is YAML")
}

/// The openAPIV3Schema of `kind` at `version`, as generated into `crds/`.
pub fn schema(kind: &str, version: &str) -> Value {
    let mut crds = api_types::kubewarden_crds();
    crds.extend(api_types::reports::report_crds());
    let crd = crds
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let version = crd
        .spec
        .versions
        .into_iter()
        .find(|v| v.name == version)
        .unwrap_or_else(|| panic!("{kind} has no version {version}"));
    let schema = version
        .schema
        .and_then(|s| s.open_api_v3_schema)
        .expect("every version has a schema");
    serde_json::to_value(schema).expect("schema is JSON")
}

pub fn storage_schema(kind: &str) -> Value {
    schema(kind, STORAGE_VERSION)
}

/// The object as the apiserver would store it: schema defaults applied.
pub fn defaulted(kind: &str, object: &Value) -> Value {
    apply_defaults(&storage_schema(kind), object)
}

/// Runs the CRD's CEL rules the way the apiserver does on create (`old` = None) or update.
pub fn admit(kind: &str, object: &Value, old: Option<&Value>) -> Result<(), String> {
    let schema = storage_schema(kind);
    Validator::new()
        .validate(&schema, object, old)
        .map_err(|errors| {
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
}

/// Every rule in the schema compiles and stays within the apiserver's cost budget.
pub fn assert_rules_compile(kind: &str, version: &str) {
    let schema = schema(kind, version);
    let compiled = compile_schema(&schema);
    assert!(
        !compiled.has_errors(),
        "{kind}/{version}: {:?}",
        compiled.compilation_errors()
    );
}

pub fn analyze(rule: &str, kind: &str) -> Vec<String> {
    let compiled = compile_schema(&storage_schema(kind));
    analyze_rule(rule, &compiled, ScopeContext::CrdValidation)
        .into_iter()
        .map(|w| w.message)
        .collect()
}

/// `subset` is contained in `superset`: every key it has is there with the same value
/// (recursively for objects).
pub fn assert_contained(subset: &Value, superset: &Value, path: &str) {
    match (subset, superset) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = format!("{path}.{key}");
                let other = b.get(key).unwrap_or_else(|| panic!("{child} was lost"));
                assert_contained(value, other, &child);
            }
        }
        _ => assert_eq!(subset, superset, "{path} changed"),
    }
}
