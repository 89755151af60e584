//! Host capabilities a policy can call, and the patterns that grant them
//! (`*`, `oci/*`, `oci/v1/*`, `kubernetes/can_i`, ...).

/// Every host capability path, as `<namespace>/<operation>`.
pub const HOST_CAPABILITIES: &[&str] = &[
    "oci/v1/verify",
    "oci/v1/manifest_digest",
    "oci/v1/oci_manifest",
    "oci/v1/oci_manifest_config",
    "oci/v2/verify",
    "net/v1/dns_lookup_host",
    "crypto/v1/is_certificate_trusted",
    "kubernetes/list_resources_by_namespace",
    "kubernetes/list_resources_all",
    "kubernetes/get_resource",
    "kubernetes/can_i",
];

/// Whether `pattern` is `*`, an exact capability, or `<prefix>/*` where the prefix is a
/// namespace or namespace/version of at least one capability.
pub fn is_valid_pattern(pattern: &str) -> bool {
    if pattern == "*" || HOST_CAPABILITIES.contains(&pattern) {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(prefix) if !prefix.is_empty() => HOST_CAPABILITIES.iter().any(|cap| {
            cap.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
        }),
        _ => false,
    }
}

/// Whether `pattern` grants `capability`.
pub fn pattern_grants(pattern: &str, capability: &str) -> bool {
    if pattern == "*" || pattern == capability {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(prefix) => capability
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/')),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for valid in [
            "*",
            "oci/*",
            "oci/v1/*",
            "oci/v2/*",
            "kubernetes/*",
            "kubernetes/can_i",
            "net/v1/dns_lookup_host",
        ] {
            assert!(is_valid_pattern(valid), "{valid}");
        }
        for invalid in [
            "",
            "/*",
            "oci",
            "oci/",
            "oci/v3/*",
            "kube/*",
            "kubernetes/can_i/*",
            "oc/*",
            "oci/v1/verify2",
        ] {
            assert!(!is_valid_pattern(invalid), "{invalid}");
        }
    }

    #[test]
    fn grants() {
        assert!(pattern_grants("*", "kubernetes/can_i"));
        assert!(pattern_grants("oci/*", "oci/v2/verify"));
        assert!(pattern_grants("oci/v1/*", "oci/v1/verify"));
        assert!(!pattern_grants("oci/v1/*", "oci/v2/verify"));
        assert!(!pattern_grants("oc/*", "oci/v1/verify"));
        assert!(pattern_grants("kubernetes/can_i", "kubernetes/can_i"));
        assert!(!pattern_grants(
            "kubernetes/can_i",
            "kubernetes/get_resource"
        ));
    }
}
