//! `verification.yml`: the signatures a policy module must carry before a policy-server runs
//! it (the `verification-config` key of the ConfigMap a PolicyServer's `verificationConfig`
//! names). Upstream's format, version `v1`:
//!
//! ```yaml
//! apiVersion: v1
//! allOf:                      # every one of these must be satisfied
//!   - kind: githubAction
//!     owner: kubewarden
//! anyOf:                      # at least minimumMatches of these (default 1)
//!   minimumMatches: 1
//!   signatures:
//!     - kind: pubKey
//!       key: |
//!         -----BEGIN PUBLIC KEY-----
//!         ...
//!     - kind: genericIssuer
//!       issuer: https://token.actions.githubusercontent.com
//!       subject:
//!         urlPrefix: https://github.com/kubewarden/
//! ```
//!
//! Unknown keys are refused (a typo must not silently weaken verification).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The only `apiVersion` of the format.
pub const VERIFICATION_CONFIG_VERSION: &str = "v1";

/// What a module's signatures must satisfy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerificationConfig {
    pub api_version: String,
    /// Every signature listed here must be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_of: Option<Vec<Signature>>,
    /// At least `minimum_matches` of these must be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_of: Option<AnyOf>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnyOf {
    #[serde(default = "one")]
    pub minimum_matches: u8,
    pub signatures: Vec<Signature>,
}

fn one() -> u8 {
    1
}

/// One expected signature.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Signature {
    /// Signed with the private key of this PEM public key (`cosign sign --key`).
    #[serde(rename_all = "camelCase")]
    PubKey {
        /// Who the key belongs to; informational.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        annotations: Option<BTreeMap<String, String>>,
    },
    /// Signed keyless, with a Fulcio certificate from this OIDC issuer for this subject.
    #[serde(rename_all = "camelCase")]
    GenericIssuer {
        issuer: String,
        subject: Subject,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        annotations: Option<BTreeMap<String, String>>,
    },
    /// Signed keyless from a GitHub Actions workflow of `owner` (and `repo`, when given).
    #[serde(rename_all = "camelCase")]
    GithubAction {
        owner: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repo: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        annotations: Option<BTreeMap<String, String>>,
    },
}

impl Signature {
    /// The annotations the signature must carry, if any.
    pub fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Signature::PubKey { annotations, .. }
            | Signature::GenericIssuer { annotations, .. }
            | Signature::GithubAction { annotations, .. } => annotations.as_ref(),
        }
    }

    /// The signature as YAML, for messages naming the ones that were not satisfied.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|_| format!("{self:?}\n"))
    }
}

/// The certificate subject of a keyless signature: an email address or a URI.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Subject {
    /// Exactly this subject.
    Equal(String),
    /// Any subject starting with this URL, taken as a path prefix: `https://github.com/org`
    /// is read as `https://github.com/org/`, so it does not match `https://github.com/org-evil`.
    UrlPrefix(String),
}

impl Subject {
    pub fn matches(&self, subject: &str) -> bool {
        match self {
            Subject::Equal(expected) => subject == expected,
            Subject::UrlPrefix(prefix) => subject.starts_with(&path_prefix(prefix)),
        }
    }
}

/// `prefix` ending in `/`.
fn path_prefix(prefix: &str) -> String {
    if prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

impl VerificationConfig {
    /// Reads the file, refusing other versions, unknown keys, URL prefixes that are not URLs,
    /// and a file that asks for no signature at all.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            file: "verification.yml",
            reason,
        };
        // The version first, so a file of a future version is not refused for its fields.
        let document: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
                file: "verification.yml",
                source,
            })?;
        match document.get("apiVersion").and_then(|v| v.as_str()) {
            Some(VERIFICATION_CONFIG_VERSION) => {}
            Some(other) => {
                return Err(invalid(format!(
                    "apiVersion {other:?} is not supported, only {VERIFICATION_CONFIG_VERSION:?}"
                )));
            }
            None => return Err(invalid("apiVersion is missing".into())),
        }
        let mut config: VerificationConfig =
            serde_yaml_ng::from_value(document).map_err(|source| ConfigError::Parse {
                file: "verification.yml",
                source,
            })?;
        if config.all_of.as_ref().is_none_or(Vec::is_empty)
            && config
                .any_of
                .as_ref()
                .is_none_or(|any| any.signatures.is_empty())
        {
            return Err(invalid(
                "it lists no signature: give allOf, anyOf.signatures or both".into(),
            ));
        }
        if let Some(any_of) = &config.any_of
            && usize::from(any_of.minimum_matches) > any_of.signatures.len()
        {
            return Err(invalid(format!(
                "anyOf.minimumMatches is {} but anyOf lists {} signatures",
                any_of.minimum_matches,
                any_of.signatures.len()
            )));
        }
        for signature in config.signatures_mut() {
            if let Signature::GenericIssuer {
                subject: Subject::UrlPrefix(prefix),
                ..
            } = signature
            {
                if !prefix.contains("://") {
                    return Err(invalid(format!(
                        "subject.urlPrefix {prefix:?} is not a URL"
                    )));
                }
                *prefix = path_prefix(prefix);
            }
        }
        Ok(config)
    }

    fn signatures_mut(&mut self) -> impl Iterator<Item = &mut Signature> {
        let all = self.all_of.iter_mut().flatten();
        let any = self
            .any_of
            .iter_mut()
            .flat_map(|any| any.signatures.iter_mut());
        all.chain(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM_EXAMPLE: &str = r#"
apiVersion: v1
allOf:
  - kind: githubAction
    owner: kubewarden
    annotations:
      env: prod
anyOf:
  minimumMatches: 2
  signatures:
    - kind: pubKey
      owner: flavio
      key: |
        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
        -----END PUBLIC KEY-----
    - kind: genericIssuer
      issuer: https://github.com/login/oauth
      subject:
        equal: alice@example.com
    - kind: genericIssuer
      issuer: https://token.actions.githubusercontent.com
      subject:
        urlPrefix: https://github.com/kubewarden
"#;

    #[test]
    fn reads_every_signature_kind() {
        let config = VerificationConfig::parse(UPSTREAM_EXAMPLE).expect("valid");
        let all_of = config.all_of.expect("allOf");
        assert_eq!(
            all_of,
            vec![Signature::GithubAction {
                owner: "kubewarden".into(),
                repo: None,
                annotations: Some([("env".to_string(), "prod".to_string())].into()),
            }]
        );
        let any_of = config.any_of.expect("anyOf");
        assert_eq!(any_of.minimum_matches, 2);
        assert_eq!(any_of.signatures.len(), 3);
        assert!(
            matches!(&any_of.signatures[0], Signature::PubKey { owner: Some(o), key, .. } if o == "flavio" && key.contains("BEGIN PUBLIC KEY"))
        );
        assert_eq!(
            any_of.signatures[2],
            Signature::GenericIssuer {
                issuer: "https://token.actions.githubusercontent.com".into(),
                // Read as a path prefix.
                subject: Subject::UrlPrefix("https://github.com/kubewarden/".into()),
                annotations: None,
            }
        );
    }

    #[test]
    fn minimum_matches_defaults_to_one() {
        let config = VerificationConfig::parse(
            "apiVersion: v1\nanyOf:\n  signatures:\n    - kind: githubAction\n      owner: o\n",
        )
        .expect("valid");
        assert_eq!(config.any_of.expect("anyOf").minimum_matches, 1);
    }

    #[test]
    fn url_prefixes_match_whole_path_segments() {
        let prefix = Subject::UrlPrefix(path_prefix("https://github.com/kubewarden"));
        assert!(
            prefix.matches(
                "https://github.com/kubewarden/policy/.github/workflows/r.yml@refs/tags/v1"
            )
        );
        assert!(!prefix.matches("https://github.com/kubewarden-evil/policy"));
        let equal = Subject::Equal("alice@example.com".into());
        assert!(equal.matches("alice@example.com"));
        assert!(!equal.matches("alice@example.com.evil"));
    }

    #[test]
    fn refuses_what_would_weaken_verification() {
        let refused = |text: &str, expected: &str| {
            let err = VerificationConfig::parse(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
        };
        refused("allOf: []\n", "apiVersion is missing");
        refused(
            "apiVersion: v2\nallOf: []\n",
            "apiVersion \"v2\" is not supported",
        );
        refused("apiVersion: v1\n", "lists no signature");
        refused(
            "apiVersion: v1\nallOf:\n  - kind: genericIssuer\n    issuer: https://i\n",
            "missing field `subject`",
        );
        refused(
            "apiVersion: v1\nallOf:\n  - kind: pubKey\n    key: k\n    annotation: {a: b}\n",
            "unknown field `annotation`",
        );
        refused(
            "apiVersion: v1\nallOf:\n  - kind: cosignKey\n    key: k\n",
            "unknown variant `cosignKey`",
        );
        refused(
            "apiVersion: v1\nanyOf:\n  minimumMatches: 3\n  signatures:\n    - kind: githubAction\n      owner: o\n",
            "minimumMatches is 3 but anyOf lists 1",
        );
        refused(
            "apiVersion: v1\nallOf:\n  - kind: genericIssuer\n    issuer: https://i\n    subject:\n      urlPrefix: github.com/org\n",
            "is not a URL",
        );
    }

    #[test]
    fn signatures_are_named_in_yaml() {
        let signature = Signature::GithubAction {
            owner: "kubewarden".into(),
            repo: Some("policy".into()),
            annotations: None,
        };
        assert_eq!(
            signature.to_yaml(),
            "kind: githubAction\nowner: kubewarden\nrepo: policy\n"
        );
    }
}
