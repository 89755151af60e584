//! `openreports.io/v1alpha1` Report and ClusterReport, the format the chart installs by default.

report_result!(ReportResult, subjects = subjects, explanation = description);

report_kind!(
    ReportFields,
    ReportResult,
    group = "openreports.io",
    version = "v1alpha1",
    kind = "Report",
    plural = "reports",
    shortname = "rep",
    doc = "Results of the policies evaluated against one namespaced resource.",
    namespaced
);

report_kind!(
    ClusterReportFields,
    ReportResult,
    group = "openreports.io",
    version = "v1alpha1",
    kind = "ClusterReport",
    plural = "clusterreports",
    shortname = "crep",
    doc = "Results of the policies evaluated against one cluster-scoped resource."
);
