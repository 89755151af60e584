//! Host capabilities a policy can call, and the patterns that grant them
//! (`*`, `oci/*`, `oci/v1/*`, `kubernetes/can_i`, ...).

/// A host capability a policy can call (besides `tracing/log`, which every policy may use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    OciVerifyV1,
    OciManifestDigest,
    OciManifest,
    OciManifestConfig,
    OciVerifyV2,
    NetDnsLookupHost,
    CryptoIsCertificateTrusted,
    KubernetesListResourcesByNamespace,
    KubernetesListResourcesAll,
    KubernetesGetResource,
    KubernetesCanI,
}

impl Capability {
    pub const ALL: [Capability; 11] = [
        Capability::OciVerifyV1,
        Capability::OciManifestDigest,
        Capability::OciManifest,
        Capability::OciManifestConfig,
        Capability::OciVerifyV2,
        Capability::NetDnsLookupHost,
        Capability::CryptoIsCertificateTrusted,
        Capability::KubernetesListResourcesByNamespace,
        Capability::KubernetesListResourcesAll,
        Capability::KubernetesGetResource,
        Capability::KubernetesCanI,
    ];

    /// The namespace and operation a guest names it by.
    pub const fn parts(self) -> (&'static str, &'static str) {
        match self {
            Capability::OciVerifyV1 => ("oci", "v1/verify"),
            Capability::OciManifestDigest => ("oci", "v1/manifest_digest"),
            Capability::OciManifest => ("oci", "v1/oci_manifest"),
            Capability::OciManifestConfig => ("oci", "v1/oci_manifest_config"),
            Capability::OciVerifyV2 => ("oci", "v2/verify"),
            Capability::NetDnsLookupHost => ("net", "v1/dns_lookup_host"),
            Capability::CryptoIsCertificateTrusted => ("crypto", "v1/is_certificate_trusted"),
            Capability::KubernetesListResourcesByNamespace => {
                ("kubernetes", "list_resources_by_namespace")
            }
            Capability::KubernetesListResourcesAll => ("kubernetes", "list_resources_all"),
            Capability::KubernetesGetResource => ("kubernetes", "get_resource"),
            Capability::KubernetesCanI => ("kubernetes", "can_i"),
        }
    }

    pub const fn namespace(self) -> &'static str {
        self.parts().0
    }

    pub const fn operation(self) -> &'static str {
        self.parts().1
    }

    /// What a guest's `namespace` and `operation` name, if it is a capability.
    pub fn parse(namespace: &str, operation: &str) -> Result<Self, UnknownCapability> {
        Capability::ALL
            .into_iter()
            .find(|capability| capability.parts() == (namespace, operation))
            .ok_or_else(|| {
                if Capability::ALL.iter().any(|c| c.namespace() == namespace) {
                    UnknownCapability::Operation(operation.to_string())
                } else {
                    UnknownCapability::Namespace(namespace.to_string())
                }
            })
    }
}

/// `<namespace>/<operation>`, as grants name it.
impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (namespace, operation) = self.parts();
        write!(f, "{namespace}/{operation}")
    }
}

/// A host call that names no capability; the message is what the guest is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownCapability {
    #[error("unknown namespace: {0}")]
    Namespace(String),
    #[error("unknown operation: {0}")]
    Operation(String),
}

/// Whether `pattern` is `*`, an exact capability, or `<prefix>/*` where the prefix is a
/// namespace or namespace/version of at least one capability.
pub fn is_valid_pattern(pattern: &str) -> bool {
    let names = || Capability::ALL.into_iter().map(|c| c.to_string());
    if pattern == "*" || names().any(|name| name == pattern) {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(prefix) if !prefix.is_empty() => names().any(|name| {
            name.strip_prefix(prefix)
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
    fn capabilities_parse_from_their_parts() {
        for capability in Capability::ALL {
            let (namespace, operation) = capability.parts();
            assert_eq!(Capability::parse(namespace, operation), Ok(capability));
        }
        assert_eq!(
            Capability::parse("oci", "v3/verify"),
            Err(UnknownCapability::Operation("v3/verify".into()))
        );
        assert_eq!(
            Capability::parse("dns", "lookup").map_err(|e| e.to_string()),
            Err("unknown namespace: dns".into())
        );
        assert_eq!(Capability::KubernetesCanI.to_string(), "kubernetes/can_i");
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
