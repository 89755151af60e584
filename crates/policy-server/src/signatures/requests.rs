//! The payloads of the `oci/v1/verify` and `oci/v2/verify` host capabilities, as the policy
//! SDKs send them, turned into an image and an [`Expectation`]. Every listed key or identity
//! must have signed the image (upstream's semantics); the answer is
//! `{"is_trusted": true, "digest": ..}`, a failure is an error with the reason.

use std::collections::BTreeMap;

use api_types::capabilities::Capability;
use api_types::config::VerificationConfig;
use api_types::config::verification::{Signature, Subject, VERIFICATION_CONFIG_VERSION};
use serde::Deserialize;

use super::Expectation;

type Annotations = Option<BTreeMap<String, String>>;

#[derive(Debug, Deserialize)]
pub struct KeylessInfo {
    issuer: String,
    subject: String,
}

#[derive(Debug, Deserialize)]
pub struct KeylessPrefixInfo {
    issuer: String,
    url_prefix: String,
}

/// `oci/v1/verify`: externally tagged.
#[derive(Debug, Deserialize)]
pub enum VerifyV1 {
    #[serde(rename = "SigstorePubKeyVerify")]
    PubKey {
        image: String,
        pub_keys: Vec<String>,
        #[serde(default)]
        annotations: Annotations,
    },
    #[serde(rename = "SigstoreKeylessVerify")]
    Keyless {
        image: String,
        keyless: Vec<KeylessInfo>,
        #[serde(default)]
        annotations: Annotations,
    },
}

/// `oci/v2/verify`: tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum VerifyV2 {
    #[serde(rename = "SigstorePubKeyVerify")]
    PubKey {
        image: String,
        pub_keys: Vec<String>,
        #[serde(default)]
        annotations: Annotations,
    },
    #[serde(rename = "SigstoreKeylessVerify")]
    Keyless {
        image: String,
        keyless: Vec<KeylessInfo>,
        #[serde(default)]
        annotations: Annotations,
    },
    #[serde(rename = "SigstoreKeylessPrefixVerify")]
    KeylessPrefix {
        image: String,
        keyless_prefix: Vec<KeylessPrefixInfo>,
        #[serde(default)]
        annotations: Annotations,
    },
    #[serde(rename = "SigstoreGithubActionsVerify")]
    GithubActions {
        image: String,
        owner: String,
        #[serde(default)]
        repo: Option<String>,
        #[serde(default)]
        annotations: Annotations,
    },
    #[serde(rename = "SigstoreCertificateVerify")]
    Certificate {
        image: String,
        /// PEM, as bytes.
        certificate: Vec<u8>,
        #[serde(default)]
        certificate_chain: Option<Vec<Vec<u8>>>,
        #[serde(default)]
        require_rekor_bundle: bool,
        #[serde(default)]
        annotations: Annotations,
    },
}

impl From<VerifyV1> for VerifyV2 {
    fn from(request: VerifyV1) -> Self {
        match request {
            VerifyV1::PubKey {
                image,
                pub_keys,
                annotations,
            } => VerifyV2::PubKey {
                image,
                pub_keys,
                annotations,
            },
            VerifyV1::Keyless {
                image,
                keyless,
                annotations,
            } => VerifyV2::Keyless {
                image,
                keyless,
                annotations,
            },
        }
    }
}

fn all_of(signatures: Vec<Signature>) -> Expectation {
    Expectation::Config(VerificationConfig {
        api_version: VERIFICATION_CONFIG_VERSION.to_string(),
        all_of: Some(signatures),
        any_of: None,
    })
}

impl VerifyV2 {
    /// The image to verify and what its signatures must satisfy.
    pub fn into_expectation(self) -> Result<(String, Expectation), String> {
        Ok(match self {
            VerifyV2::PubKey {
                image,
                pub_keys,
                annotations,
            } => {
                if pub_keys.is_empty() {
                    return Err("Must provide at least one pub key".into());
                }
                let signatures = pub_keys
                    .into_iter()
                    .map(|key| Signature::PubKey {
                        owner: None,
                        key,
                        annotations: annotations.clone(),
                    })
                    .collect();
                (image, all_of(signatures))
            }
            VerifyV2::Keyless {
                image,
                keyless,
                annotations,
            } => {
                if keyless.is_empty() {
                    return Err("Must provide keyless info".into());
                }
                let signatures = keyless
                    .into_iter()
                    .map(|k| Signature::GenericIssuer {
                        issuer: k.issuer,
                        subject: Subject::Equal(k.subject),
                        annotations: annotations.clone(),
                    })
                    .collect();
                (image, all_of(signatures))
            }
            VerifyV2::KeylessPrefix {
                image,
                keyless_prefix,
                annotations,
            } => {
                if keyless_prefix.is_empty() {
                    return Err("Must provide keyless info".into());
                }
                let signatures = keyless_prefix
                    .into_iter()
                    .map(|k| {
                        if !k.url_prefix.contains("://") {
                            return Err(format!("url_prefix {:?} is not a URL", k.url_prefix));
                        }
                        Ok(Signature::GenericIssuer {
                            issuer: k.issuer,
                            subject: Subject::UrlPrefix(k.url_prefix),
                            annotations: annotations.clone(),
                        })
                    })
                    .collect::<Result<_, String>>()?;
                (image, all_of(signatures))
            }
            VerifyV2::GithubActions {
                image,
                owner,
                repo,
                annotations,
            } => {
                if owner.is_empty() {
                    return Err("Must provide owner info".into());
                }
                (
                    image,
                    all_of(vec![Signature::GithubAction {
                        owner,
                        repo,
                        annotations,
                    }]),
                )
            }
            VerifyV2::Certificate {
                image,
                certificate,
                certificate_chain,
                require_rekor_bundle,
                annotations,
            } => (
                image,
                Expectation::Certificate {
                    certificate,
                    chain: certificate_chain,
                    require_rekor_bundle,
                    annotations,
                },
            ),
        })
    }
}

/// Parses the payload of `capability` (`oci/v1/verify` or `oci/v2/verify`).
pub fn parse(capability: Capability, payload: &[u8]) -> Result<(String, Expectation), String> {
    let request: VerifyV2 = match capability {
        Capability::OciVerifyV1 => serde_json::from_slice::<VerifyV1>(payload)
            .map_err(|e| format!("invalid request payload: {e}"))?
            .into(),
        _ => {
            serde_json::from_slice(payload).map_err(|e| format!("invalid request payload: {e}"))?
        }
    };
    request.into_expectation()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expectation(capability: Capability, payload: serde_json::Value) -> (String, Expectation) {
        parse(capability, payload.to_string().as_bytes()).expect("valid")
    }

    fn config(expectation: Expectation) -> VerificationConfig {
        match expectation {
            Expectation::Config(config) => config,
            other => panic!("not a config: {other:?}"),
        }
    }

    #[test]
    fn sdk_payloads_become_all_of_expectations() {
        // The Go and Rust SDKs send `null` for absent annotations.
        let (image, e) = expectation(
            Capability::OciVerifyV1,
            json!({"SigstorePubKeyVerify": {"image": "r/i:1", "pub_keys": ["k1", "k2"], "annotations": null}}),
        );
        assert_eq!(image, "r/i:1");
        let all_of = config(e).all_of.expect("allOf");
        assert_eq!(all_of.len(), 2, "every key must have signed");

        let (_, e) = expectation(
            Capability::OciVerifyV2,
            json!({"type": "SigstoreKeylessPrefixVerify", "image": "r/i", "keyless_prefix": [{"issuer": "https://i", "url_prefix": "https://github.com/org"}], "annotations": {"env": "prod"}}),
        );
        assert_eq!(
            config(e).all_of.expect("allOf"),
            vec![Signature::GenericIssuer {
                issuer: "https://i".into(),
                subject: Subject::UrlPrefix("https://github.com/org".into()),
                annotations: Some([("env".to_string(), "prod".to_string())].into()),
            }]
        );

        let (_, e) = expectation(
            Capability::OciVerifyV2,
            json!({"type": "SigstoreGithubActionsVerify", "image": "r/i", "owner": "kubewarden"}),
        );
        assert!(matches!(
            &config(e).all_of.expect("allOf")[0],
            Signature::GithubAction { owner, repo: None, .. } if owner == "kubewarden"
        ));

        let (_, e) = expectation(
            Capability::OciVerifyV2,
            json!({"type": "SigstoreCertificateVerify", "image": "r/i", "certificate": b"PEM".to_vec(), "certificate_chain": null, "require_rekor_bundle": true}),
        );
        assert!(matches!(
            e,
            Expectation::Certificate { require_rekor_bundle: true, ref certificate, chain: None, .. } if certificate == b"PEM"
        ));
    }

    #[test]
    fn empty_or_malformed_requests_are_refused() {
        let refused = |capability: Capability, payload: serde_json::Value, expected: &str| {
            let err = parse(capability, payload.to_string().as_bytes()).expect_err("refused");
            assert!(err.contains(expected), "{err}");
        };
        refused(
            Capability::OciVerifyV2,
            json!({"type": "SigstorePubKeyVerify", "image": "r/i", "pub_keys": []}),
            "at least one pub key",
        );
        refused(
            Capability::OciVerifyV2,
            json!({"type": "SigstoreKeylessVerify", "image": "r/i", "keyless": []}),
            "keyless info",
        );
        refused(
            Capability::OciVerifyV2,
            json!({"type": "SigstoreGithubActionsVerify", "image": "r/i", "owner": ""}),
            "owner",
        );
        refused(
            Capability::OciVerifyV2,
            json!({"type": "SigstoreKeylessPrefixVerify", "image": "r/i", "keyless_prefix": [{"issuer": "i", "url_prefix": "github.com/o"}]}),
            "is not a URL",
        );
        refused(
            Capability::OciVerifyV2,
            json!({"type": "Other", "image": "r/i"}),
            "invalid request payload",
        );
        refused(
            Capability::OciVerifyV1,
            json!({"type": "SigstorePubKeyVerify", "image": "r/i", "pub_keys": ["k"]}),
            "invalid request payload",
        );
    }
}
