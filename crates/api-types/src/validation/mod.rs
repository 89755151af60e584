//! Checks the apiserver cannot make from the CRD schema, as pure functions.
//!
//! The CRDs already refuse what OpenAPI and CEL can express (ranges, enums, required fields,
//! immutability). These functions repeat those checks and add the rest — quantities, capability
//! patterns, names built from the namespace, group expressions — and return *every* violation
//! with the path of the field, so the controller can report them all in one status condition.

mod quantity;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub use quantity::parse_quantity;

use crate::capabilities;
use crate::crd::{
    AdmissionPolicyGroupSpec, AdmissionPolicySpec, ClusterAdmissionPolicyGroupSpec,
    ClusterAdmissionPolicySpec, PolicyMode, PolicyModule, PolicyServerSpec, PolicySpecCommon,
};
use crate::defaults::{MAX_MATCH_CONDITIONS, MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS};
use crate::group_expression::GroupExpression;
use crate::naming::{self, MAX_WEBHOOK_NAME_LENGTH, PolicyKind};

/// One thing wrong with an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field, such as `spec.rules[0].operations`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins violations into one line for a status condition or an error.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(Violation::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Default)]
struct Violations(Vec<Violation>);

impl Violations {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Longest PolicyServer name: it ends up in label values.
pub const MAX_POLICY_SERVER_NAME_LENGTH: usize = 63;

/// Checks a PolicyServer.
pub fn validate_policy_server(name: &str, spec: &PolicyServerSpec) -> Vec<Violation> {
    let mut v = Violations::default();
    if name.len() > MAX_POLICY_SERVER_NAME_LENGTH {
        v.add(
            "metadata.name",
            format!("must be at most {MAX_POLICY_SERVER_NAME_LENGTH} characters"),
        );
    }
    if spec.image.trim().is_empty() {
        v.add("spec.image", "must not be empty");
    }
    if spec.replicas.is_some_and(|replicas| replicas < 0) {
        v.add("spec.replicas", "must not be negative");
    }
    if spec.min_available.is_some() && spec.max_unavailable.is_some() {
        v.add(
            "spec.minAvailable",
            "minAvailable and maxUnavailable are mutually exclusive: set at most one of them",
        );
    }
    let ports = [
        ("spec.webhookPort", Some(spec.webhook_port)),
        ("spec.readinessProbePort", Some(spec.readiness_probe_port)),
        ("spec.metricsPort", spec.metrics_port),
    ];
    for (field, port) in ports {
        if let Some(port) = port
            && !(1..=65535).contains(&port)
        {
            v.add(field, format!("{port} is not a port number (1-65535)"));
        }
    }
    if spec.webhook_port == spec.readiness_probe_port {
        v.add(
            "spec.readinessProbePort",
            format!(
                "must differ from webhookPort ({}): both are bound by the same pod",
                spec.webhook_port
            ),
        );
    }
    let limits = check_quantities(&mut v, "spec.limits", spec.limits.as_ref());
    let requests = check_quantities(&mut v, "spec.requests", spec.requests.as_ref());
    for (resource, request) in &requests {
        if let Some(limit) = limits.get(resource)
            && request > limit
        {
            v.add(
                format!("spec.requests.{resource}"),
                format!("must not exceed the limit spec.limits.{resource}"),
            );
        }
    }
    for (i, pattern) in spec
        .namespaced_policies_capabilities
        .iter()
        .flatten()
        .enumerate()
    {
        if !capabilities::is_valid_pattern(pattern) {
            v.add(
                format!("spec.namespacedPoliciesCapabilities[{i}]"),
                format!(
                    "{pattern:?} is not '*', a capability such as 'kubernetes/can_i', or a prefix such as 'oci/*' or 'oci/v1/*'"
                ),
            );
        }
    }
    v.0
}

fn check_quantities(
    v: &mut Violations,
    field: &str,
    quantities: Option<&BTreeMap<String, Quantity>>,
) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::new();
    for (resource, quantity) in quantities.into_iter().flatten() {
        match parse_quantity(&quantity.0) {
            Some(value) if value < 0.0 => {
                v.add(format!("{field}.{resource}"), "must not be negative");
            }
            Some(value) => {
                values.insert(resource.clone(), value);
            }
            None => v.add(
                format!("{field}.{resource}"),
                format!("{:?} is not a quantity", quantity.0),
            ),
        }
    }
    values
}

/// Checks an AdmissionPolicy in `namespace`.
pub fn validate_admission_policy(
    namespace: &str,
    name: &str,
    spec: &AdmissionPolicySpec,
) -> Vec<Violation> {
    let mut v = Violations::default();
    check_common(
        &mut v,
        PolicyKind::AdmissionPolicy,
        namespace,
        name,
        &spec.common,
    );
    check_namespaced_rules(&mut v, &spec.common);
    check_module(&mut v, "spec", &spec.module, spec.common.timeout_seconds);
    v.0
}

/// Checks a ClusterAdmissionPolicy.
pub fn validate_cluster_admission_policy(
    name: &str,
    spec: &ClusterAdmissionPolicySpec,
) -> Vec<Violation> {
    let mut v = Violations::default();
    check_common(
        &mut v,
        PolicyKind::ClusterAdmissionPolicy,
        "",
        name,
        &spec.common,
    );
    check_module(&mut v, "spec", &spec.module, spec.common.timeout_seconds);
    v.0
}

/// Checks an AdmissionPolicyGroup in `namespace`.
pub fn validate_admission_policy_group(
    namespace: &str,
    name: &str,
    spec: &AdmissionPolicyGroupSpec,
) -> Vec<Violation> {
    let mut v = Violations::default();
    check_common(
        &mut v,
        PolicyKind::AdmissionPolicyGroup,
        namespace,
        name,
        &spec.common,
    );
    check_namespaced_rules(&mut v, &spec.common);
    let members = spec
        .policies
        .iter()
        .map(|(name, m)| (name.as_str(), m.module.as_str(), m.timeout_eval_seconds));
    check_group(
        &mut v,
        &spec.common,
        &spec.verdict.expression,
        &spec.verdict.message,
        members,
    );
    v.0
}

/// Checks a ClusterAdmissionPolicyGroup.
pub fn validate_cluster_admission_policy_group(
    name: &str,
    spec: &ClusterAdmissionPolicyGroupSpec,
) -> Vec<Violation> {
    let mut v = Violations::default();
    check_common(
        &mut v,
        PolicyKind::ClusterAdmissionPolicyGroup,
        "",
        name,
        &spec.common,
    );
    let members = spec.policies.iter().map(|(name, m)| {
        (
            name.as_str(),
            m.member.module.as_str(),
            m.member.timeout_eval_seconds,
        )
    });
    check_group(
        &mut v,
        &spec.common,
        &spec.verdict.expression,
        &spec.verdict.message,
        members,
    );
    v.0
}

/// Checks a change of any policy kind: the PolicyServer cannot change and a protecting
/// policy cannot go back to monitoring.
pub fn validate_policy_update(old: &PolicySpecCommon, new: &PolicySpecCommon) -> Vec<Violation> {
    let mut v = Violations::default();
    if old.policy_server != new.policy_server {
        v.add(
            "spec.policyServer",
            format!(
                "is immutable: it was {:?}; delete and recreate the policy to move it",
                old.policy_server
            ),
        );
    }
    if old.mode == PolicyMode::Protect && new.mode == PolicyMode::Monitor {
        v.add("spec.mode", "cannot change from protect to monitor");
    }
    v.0
}

fn check_timeout(v: &mut Violations, field: &str, seconds: i32) {
    if !(MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
        v.add(
            field,
            format!("{seconds} is outside {MIN_TIMEOUT_SECONDS}..{MAX_TIMEOUT_SECONDS} seconds"),
        );
    }
}

fn check_common(
    v: &mut Violations,
    kind: PolicyKind,
    namespace: &str,
    name: &str,
    common: &PolicySpecCommon,
) {
    let webhook = naming::webhook_name(&naming::policy_unique_name(kind, namespace, name));
    if webhook.len() > MAX_WEBHOOK_NAME_LENGTH {
        v.add(
            "metadata.name",
            format!(
                "is too long: the webhook name {webhook:?} has {} characters, at most {MAX_WEBHOOK_NAME_LENGTH} are allowed",
                webhook.len()
            ),
        );
    }
    check_timeout(v, "spec.timeoutSeconds", common.timeout_seconds);
    if common.rules.is_empty() {
        v.add("spec.rules", "must list at least one rule");
    }
    for (i, rule) in common.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        if rule.operations.is_empty() {
            v.add(format!("{field}.operations"), "must not be empty");
        }
        for (list, values) in [
            ("apiVersions", &rule.api_versions),
            ("resources", &rule.resources),
        ] {
            if values.is_empty() {
                v.add(format!("{field}.{list}"), "must not be empty");
            }
            if values.iter().any(|s| s.trim().is_empty()) {
                v.add(format!("{field}.{list}"), "must not contain empty strings");
            }
        }
    }
    check_match_conditions(v, common.match_conditions.as_deref().unwrap_or_default());
}

/// Namespaced policies may neither target every resource nor the policy reports the
/// audit-scanner writes into their namespace.
fn check_namespaced_rules(v: &mut Violations, common: &PolicySpecCommon) {
    for (i, rule) in common.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let all_resources = rule.resources.iter().any(|r| r == "*" || r == "*/*");
        // Upstream compares the API *versions* with '*' here (not the groups); we keep its
        // behaviour so that every policy it accepts is accepted here too.
        if all_resources && rule.api_versions.iter().any(|a| a == "*") {
            v.add(
                field.clone(),
                "namespaced policies cannot target all resources of all API versions ('*' in both apiVersions and resources)",
            );
        }
        let groups = rule.api_groups.as_deref().unwrap_or_default();
        let report_group = groups.iter().any(|g| g == "wgpolicyk8s.io" || g == "*");
        let reports = rule
            .resources
            .iter()
            .any(|r| r == "policyreports" || r.starts_with("policyreports/"));
        if report_group && reports {
            v.add(
                format!("{field}.resources"),
                "namespaced policies cannot target wgpolicyk8s.io policyreports",
            );
        }
    }
}

fn is_qualified_name(name: &str) -> bool {
    let (prefix, local) = match name.rsplit_once('/') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, name),
    };
    let local_ok = !local.is_empty()
        && local.len() <= 63
        && local.starts_with(|c: char| c.is_ascii_alphanumeric())
        && local.ends_with(|c: char| c.is_ascii_alphanumeric())
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && label.ends_with(|c: char| c.is_ascii_alphanumeric())
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    local_ok && prefix_ok
}

fn check_match_conditions(v: &mut Violations, conditions: &[MatchCondition]) {
    if conditions.len() > MAX_MATCH_CONDITIONS {
        v.add(
            "spec.matchConditions",
            format!(
                "has {} entries, at most {MAX_MATCH_CONDITIONS} are allowed",
                conditions.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, condition) in conditions.iter().enumerate() {
        let field = format!("spec.matchConditions[{i}]");
        if !is_qualified_name(&condition.name) {
            v.add(
                format!("{field}.name"),
                format!("{:?} is not a qualified name (letters, digits, '-', '_', '.', optional DNS prefix and '/')", condition.name),
            );
        }
        if !seen.insert(condition.name.as_str()) {
            v.add(
                format!("{field}.name"),
                format!("{:?} is used twice", condition.name),
            );
        }
        if condition.expression.trim().is_empty() {
            v.add(format!("{field}.expression"), "must not be empty");
        }
    }
}

/// Module URL schemes a policy-server can fetch from; no scheme means a registry reference.
const MODULE_SCHEMES: &[&str] = &["registry", "https", "http", "file"];

fn check_module_url(v: &mut Violations, field: String, module: &str) {
    if module.trim().is_empty() {
        v.add(field, "must not be empty");
        return;
    }
    if let Some((scheme, rest)) = module.split_once("://") {
        if !MODULE_SCHEMES.contains(&scheme) {
            v.add(
                field,
                format!("scheme {scheme:?} is not supported; use registry://, https://, http:// or file://"),
            );
        } else if rest.is_empty() {
            v.add(field, "has nothing after the scheme");
        }
    }
}

fn check_module(v: &mut Violations, prefix: &str, module: &PolicyModule, timeout_seconds: i32) {
    check_module_url(v, format!("{prefix}.module"), &module.module);
    check_settings(v, format!("{prefix}.settings"), module.settings.as_ref());
    if let Some(eval) = module.timeout_eval_seconds {
        check_timeout(v, &format!("{prefix}.timeoutEvalSeconds"), eval);
        if eval > timeout_seconds {
            v.add(
                format!("{prefix}.timeoutEvalSeconds"),
                format!("{eval} exceeds timeoutSeconds ({timeout_seconds})"),
            );
        }
    }
}

fn check_settings(v: &mut Violations, field: String, settings: Option<&serde_json::Value>) {
    if let Some(settings) = settings
        && !(settings.is_object() || settings.is_null())
    {
        v.add(field, "must be an object");
    }
}

/// Words CEL reserves, which cannot name a group member.
const CEL_RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

fn is_member_name(name: &str) -> bool {
    name.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
        && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn check_group<'a>(
    v: &mut Violations,
    common: &PolicySpecCommon,
    expression: &str,
    message: &str,
    members: impl Iterator<Item = (&'a str, &'a str, Option<i32>)>,
) {
    if message.trim().is_empty() {
        v.add(
            "spec.message",
            "must not be empty: it is returned when the group rejects a request",
        );
    }
    let mut names = BTreeSet::new();
    let mut total_timeout = 0;
    for (name, module, timeout) in members {
        let field = format!("spec.policies.{name}");
        names.insert(name);
        if !is_member_name(name) {
            v.add(
                field.clone(),
                "member names start with a letter or '_' and contain only letters, digits and '_'",
            );
        } else if CEL_RESERVED.contains(&name) {
            v.add(field.clone(), format!("{name:?} is a reserved word"));
        }
        check_module_url(v, format!("{field}.module"), module);
        if let Some(timeout) = timeout {
            check_timeout(v, &format!("{field}.timeoutEvalSeconds"), timeout);
            if timeout > common.timeout_seconds {
                v.add(
                    format!("{field}.timeoutEvalSeconds"),
                    format!(
                        "{timeout} exceeds the group's timeoutSeconds ({})",
                        common.timeout_seconds
                    ),
                );
            }
            total_timeout += timeout;
        }
    }
    if names.is_empty() {
        v.add("spec.policies", "must have at least one member");
    }
    let limit = common.timeout_seconds.min(MAX_TIMEOUT_SECONDS);
    if total_timeout > limit {
        v.add(
            "spec.policies",
            format!("the members' timeoutEvalSeconds add up to {total_timeout}, more than {limit} (timeoutSeconds, at most {MAX_TIMEOUT_SECONDS})"),
        );
    }
    match GroupExpression::parse(expression) {
        Ok(parsed) => {
            for called in parsed.members() {
                if !names.contains(called) {
                    v.add(
                        "spec.expression",
                        format!("calls {called}(), which is not a member of spec.policies"),
                    );
                }
            }
        }
        Err(err) => v.add("spec.expression", err.to_string()),
    }
}

#[cfg(test)]
mod tests;
