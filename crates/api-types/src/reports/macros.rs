//! The two report formats differ only in names, so one definition serves both.

/// Defines the result type of a report format. The formats name the list of subjects and the
/// human-readable explanation differently.
macro_rules! report_result {
    ($name:ident, subjects = $subjects:ident, explanation = $explanation:ident) => {
        /// One policy's result for the report's subject.
        #[derive(
            serde::Serialize, serde::Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq,
        )]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// Tool that produced the result (`kubewarden`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub source: Option<String>,
            /// Policy that was evaluated.
            pub policy: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub rule: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub category: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub severity: Option<$crate::reports::ResultSeverity>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub timestamp: Option<$crate::reports::ResultTimestamp>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub result: Option<$crate::reports::ResultOutcome>,
            #[serde(default)]
            pub scored: bool,
            /// The resources the result is about.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $subjects: Option<Vec<k8s_openapi::api::core::v1::ObjectReference>>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub resource_selector:
                Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
            /// Why the policy passed or failed.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $explanation: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub properties: Option<$crate::reports::ResultProperties>,
        }
    };
}

/// Defines one report kind: its fields sit at the top level of the object, next to metadata.
macro_rules! report_kind {
    (
        $fields:ident, $result:ident,
        group = $group:literal, version = $version:literal, kind = $kind:literal,
        plural = $plural:literal, shortname = $short:literal, doc = $doc:literal
        $(, $namespaced:ident)?
    ) => {
        #[doc = $doc]
        #[derive(
            kube::CustomResource,
            serde::Serialize,
            serde::Deserialize,
            schemars::JsonSchema,
            Clone,
            Debug,
            Default,
            PartialEq,
        )]
        #[kube(
            group = $group,
            version = $version,
            kind = $kind,
            plural = $plural,
            shortname = $short,
            $($namespaced,)?
            no_spec,
            derive = "PartialEq",
            derive = "Default",
            doc = $doc,
            printcolumn(name = "Kind", type_ = "string", json_path = ".scope.kind", priority = 1),
            printcolumn(name = "Name", type_ = "string", json_path = ".scope.name", priority = 1),
            printcolumn(name = "Pass", type_ = "integer", json_path = ".summary.pass"),
            printcolumn(name = "Fail", type_ = "integer", json_path = ".summary.fail"),
            printcolumn(name = "Warn", type_ = "integer", json_path = ".summary.warn"),
            printcolumn(name = "Error", type_ = "integer", json_path = ".summary.error"),
            printcolumn(name = "Skip", type_ = "integer", json_path = ".summary.skip"),
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
        )]
        #[serde(rename_all = "camelCase")]
        pub struct $fields {
            /// Tool that wrote the report.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub source: Option<String>,
            /// The resource the results are about.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub scope: Option<k8s_openapi::api::core::v1::ObjectReference>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub scope_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
            #[serde(default)]
            pub summary: $crate::reports::ReportSummary,
            #[serde(default)]
            pub results: Vec<$result>,
        }
    };
}
