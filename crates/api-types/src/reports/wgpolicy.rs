//! `wgpolicyk8s.io/v1alpha2` PolicyReport and ClusterPolicyReport: the Policy WG format,
//! deprecated upstream and still read by many dashboards.

report_result!(
    PolicyReportResult,
    subjects = resources,
    explanation = message
);

report_kind!(
    PolicyReportFields,
    PolicyReportResult,
    group = "wgpolicyk8s.io",
    version = "v1alpha2",
    kind = "PolicyReport",
    plural = "policyreports",
    shortname = "polr",
    doc = "Results of the policies evaluated against one namespaced resource.",
    namespaced
);

report_kind!(
    ClusterPolicyReportFields,
    PolicyReportResult,
    group = "wgpolicyk8s.io",
    version = "v1alpha2",
    kind = "ClusterPolicyReport",
    plural = "clusterpolicyreports",
    shortname = "cpolr",
    doc = "Results of the policies evaluated against one cluster-scoped resource."
);
