//! Reports the audit-scanner writes about resources already in the cluster, in the two formats
//! policy-report consumers read: OpenReports (`openreports.io/v1alpha1`) and the older
//! Policy WG format (`wgpolicyk8s.io/v1alpha2`).

// kube's `printcolumn(...)` repeats keys such as `type_`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

#[macro_use]
mod macros;
pub mod openreports;
pub mod wgpolicy;

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Counts of results by outcome.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportSummary {
    #[serde(default)]
    pub pass: i32,
    #[serde(default)]
    pub fail: i32,
    #[serde(default)]
    pub warn: i32,
    #[serde(default)]
    pub error: i32,
    #[serde(default)]
    pub skip: i32,
}

/// Outcome of one policy for one resource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResultOutcome {
    Pass,
    Fail,
    Warn,
    Error,
    Skip,
}

/// How serious a failed result is.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResultSeverity {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

/// When a result was produced (protobuf Timestamp layout, as both formats use).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResultTimestamp {
    pub seconds: i64,
    pub nanos: i32,
}

/// Free-form key/value details of a result.
pub type ResultProperties = BTreeMap<String, String>;

/// The CRDs of both report formats.
pub fn report_crds() -> Vec<CustomResourceDefinition> {
    vec![
        openreports::Report::crd(),
        openreports::ClusterReport::crd(),
        wgpolicy::PolicyReport::crd(),
        wgpolicy::ClusterPolicyReport::crd(),
    ]
}
