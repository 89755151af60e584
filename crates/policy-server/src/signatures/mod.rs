//! Sigstore signature verification, with sigstore-rs (the library upstream uses): of policy
//! modules before they run (`--verification-path`), and of any OCI artifact for policies
//! (`oci/v1/verify`, `oci/v2/verify`).
//!
//! A verification finds the artifact's manifest digest, reads its cosign signatures (the
//! `.sig` tag and Sigstore bundles among the OCI referrers), keeps the layers whose signature
//! checks out (keyless ones only when their certificate chains to the trust root's Fulcio
//! authorities and their Rekor bundle verifies), then checks the expected signatures against
//! them: every `allOf` entry, and at least `anyOf.minimumMatches` of `anyOf`. The answer is
//! the verified digest; a module is then pulled by that digest, so what runs is what was
//! signed. Successful answers are reused for 60 seconds, as upstream does.

mod constraints;
pub mod requests;
mod trust;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api_types::config::VerificationConfig;
use api_types::config::verification::Signature;
use oci_client::secrets::RegistryAuth;
use sigstore::cosign::verification_constraint::{
    AnnotationVerifier, CertificateVerifier, VerificationConstraint,
};
use sigstore::cosign::{CosignCapabilities, SignatureLayer};
use sigstore::registry::oci_reference::OciReference;

use api_types::error_text::with_causes;

use crate::fetch::{FetchError, Fetcher, ModuleSource};
pub use constraints::ConstraintError;
use constraints::SignatureConstraint;
pub use trust::{TrustError, TrustRoot};

/// How long a successful verification is reused.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Longest a verification may wait for the registry.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(60);

/// An artifact's signatures could not be verified, or do not satisfy what was expected.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot verify {image}: the registry did not answer within {REGISTRY_TIMEOUT:?}")]
    Timeout { image: String },
    #[error("{image:?} is not an OCI reference")]
    InvalidReference {
        image: String,
        #[source]
        source: sigstore::errors::SigstoreError,
    },
    #[error("cannot verify {image}: {step}")]
    Registry {
        image: String,
        step: &'static str,
        #[source]
        source: sigstore::errors::SigstoreError,
    },
    #[error(
        "Image verification of {image} failed: no trusted signatures found (the image has no cosign signatures, or none that verify against its digest and the trust root)"
    )]
    NoTrustedSignatures { image: String },
    #[error("Image verification of {image} failed: {unsatisfied}")]
    Unsatisfied { image: String, unsatisfied: String },
    #[error("invalid expected signature:\n{signature}")]
    InvalidExpectation {
        /// The signature as YAML.
        signature: String,
        #[source]
        source: constraints::ConstraintError,
    },
    #[error("the certificate cannot be used")]
    Certificate(#[source] sigstore::errors::SigstoreError),
    #[error(
        "signature verification is configured (--verification-path), but {url} is not in an OCI registry: only registry:// modules carry signatures"
    )]
    NotInRegistry { url: String },
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// Checks cosign signatures of OCI artifacts.
#[derive(Debug)]
pub struct SignatureVerifier {
    registry: Fetcher,
    trust_root: TrustRoot,
    /// Verified digests by image and expectation, with when they were verified.
    verified: Mutex<HashMap<String, (Instant, String)>>,
}

impl SignatureVerifier {
    pub fn new(registry: Fetcher, trust_root: TrustRoot) -> Self {
        SignatureVerifier {
            registry,
            trust_root,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `image` against `expectation`; the answer is the verified manifest digest.
    pub async fn verify(
        &self,
        image: &str,
        expectation: &Expectation,
    ) -> Result<String, VerifyError> {
        let key = format!(
            "{image}\n{}",
            serde_json::to_string(expectation).unwrap_or_default()
        );
        if let Some(digest) = self.cached(&key) {
            return Ok(digest);
        }
        let keyless_trust = if expectation.needs_trust_root() {
            Some(self.trust_root.get().await)
        } else {
            None
        };
        let (digest, layers) = tokio::time::timeout(
            REGISTRY_TIMEOUT,
            self.trusted_layers(image, keyless_trust.as_ref().and_then(|t| t.as_ref().ok())),
        )
        .await
        .map_err(|_| VerifyError::Timeout {
            image: image.to_string(),
        })??;
        let keyless_unavailable = keyless_trust
            .and_then(Result::err)
            .map(|error| with_causes(error.as_ref()));
        Expected::new(expectation)?
            .check(&layers, keyless_unavailable.as_deref())
            .map_err(|unsatisfied| VerifyError::Unsatisfied {
                image: image.to_string(),
                unsatisfied,
            })?;
        tracing::info!(image, %digest, signatures = layers.len(), "signatures verified");
        if let Ok(mut verified) = self.verified.lock() {
            verified.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            verified.insert(key, (Instant::now(), digest.clone()));
        }
        Ok(digest)
    }

    /// Fetches the module at `url` once its signatures satisfy `config`, by the verified
    /// digest. Only modules in OCI registries carry signatures.
    pub async fn fetch_module(
        &self,
        url: &str,
        config: &VerificationConfig,
    ) -> Result<Vec<u8>, VerifyError> {
        let ModuleSource::Registry(reference) = ModuleSource::parse(url)? else {
            return Err(VerifyError::NotInRegistry {
                url: url.to_string(),
            });
        };
        let digest = self
            .verify(&reference, &Expectation::Config(config.clone()))
            .await?;
        Ok(self.registry.fetch_at_digest(url, &digest).await?)
    }

    fn cached(&self, key: &str) -> Option<String> {
        let verified = self.verified.lock().ok()?;
        verified
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, digest)| digest.clone())
    }

    /// The manifest digest of `image` and its signature layers that check out.
    async fn trusted_layers(
        &self,
        image: &str,
        trust_root: Option<&std::sync::Arc<trust::Root>>,
    ) -> Result<(String, Vec<SignatureLayer>), VerifyError> {
        let failed = |step: &'static str| {
            move |source| VerifyError::Registry {
                image: image.to_string(),
                step,
                source,
            }
        };
        let reference =
            OciReference::from_str(image).map_err(|source| VerifyError::InvalidReference {
                image: image.to_string(),
                source,
            })?;
        let settings = self.registry.registry_settings(reference.registry())?;
        let config = sigstore::registry::ClientConfig {
            protocol: sigstore::registry::ClientProtocol::HttpsExcept(settings.insecure_sources),
            accept_invalid_certificates: settings.accept_invalid_certificates,
            extra_root_certificates: settings
                .extra_root_pems
                .into_iter()
                .map(|data| sigstore::registry::Certificate {
                    encoding: sigstore::registry::CertificateEncoding::Pem,
                    data,
                })
                .collect(),
            ..Default::default()
        };
        let auth = match settings.auth {
            RegistryAuth::Basic(user, password) => sigstore::registry::Auth::Basic(user, password),
            RegistryAuth::Bearer(token) => sigstore::registry::Auth::Bearer(token),
            RegistryAuth::Anonymous => sigstore::registry::Auth::Anonymous,
        };
        let mut builder = sigstore::cosign::ClientBuilder::default().with_oci_client_config(config);
        if let Some(root) = trust_root {
            builder = builder
                .with_trust_repository(root.as_ref())
                .map_err(failed("the Sigstore trust root is unusable"))?;
        }
        let mut client = builder
            .build()
            .map_err(failed("cannot build the registry client"))?;
        let (_, digest) = client
            .triangulate(&reference, &auth)
            .await
            .map_err(failed("cannot read its manifest"))?;
        // The layers of exactly that digest, even if the tag moves meanwhile.
        let pinned = OciReference::from_str(&format!(
            "{}/{}@{digest}",
            reference.registry(),
            reference.repository()
        ))
        .map_err(failed("cannot pin its digest"))?;
        let layers = client
            .trusted_signature_layers(&auth, &pinned)
            .await
            .map_err(failed("cannot read its signatures"))?;
        if layers.is_empty() {
            return Err(VerifyError::NoTrustedSignatures {
                image: image.to_string(),
            });
        }
        Ok((digest, layers))
    }
}

/// What a verification expects of an artifact's signatures.
#[derive(Debug, Clone, serde::Serialize)]
pub enum Expectation {
    /// The signatures of a `verification.yml` (policy modules, and the `oci/*/verify`
    /// capabilities for keys and keyless identities, as an `allOf`).
    Config(VerificationConfig),
    /// A signature by the key of this certificate (`SigstoreCertificateVerify`).
    Certificate {
        /// PEM.
        certificate: Vec<u8>,
        /// PEM certificates the certificate must chain to; without them it is trusted as is.
        chain: Option<Vec<Vec<u8>>>,
        /// Require a Rekor bundle, which proves the signature was made while the
        /// certificate was valid.
        require_rekor_bundle: bool,
        annotations: Option<std::collections::BTreeMap<String, String>>,
    },
}

impl Expectation {
    /// Whether checking it needs Fulcio authorities or Rekor keys.
    fn needs_trust_root(&self) -> bool {
        match self {
            Expectation::Config(config) => config
                .all_of
                .iter()
                .flatten()
                .chain(config.any_of.iter().flat_map(|any| &any.signatures))
                .any(|s| !matches!(s, Signature::PubKey { .. })),
            Expectation::Certificate {
                require_rekor_bundle,
                ..
            } => *require_rekor_bundle,
        }
    }
}

/// One expected signature, ready to be checked against signature layers.
struct Check {
    /// The expectation in YAML, for the message when it is not satisfied.
    description: String,
    keyless: bool,
    constraint: Box<dyn VerificationConstraint>,
}

impl Check {
    fn signature(signature: &Signature) -> Result<Self, VerifyError> {
        let constraint = SignatureConstraint::new(signature).map_err(|source| {
            VerifyError::InvalidExpectation {
                signature: signature.to_yaml(),
                source,
            }
        })?;
        Ok(Check {
            description: signature.to_yaml(),
            keyless: constraint.is_keyless(),
            constraint: Box::new(constraint),
        })
    }

    fn satisfied_by(&self, layers: &[SignatureLayer]) -> bool {
        layers
            .iter()
            .any(|layer| match self.constraint.verify(layer) {
                Ok(satisfied) => satisfied,
                Err(err) => {
                    tracing::debug!(error = %err, "a signature layer could not be checked");
                    false
                }
            })
    }
}

/// The checks of an expectation.
struct Expected {
    all_of: Vec<Check>,
    any_of: Vec<Check>,
    minimum_matches: usize,
}

impl Expected {
    fn new(expectation: &Expectation) -> Result<Self, VerifyError> {
        match expectation {
            Expectation::Config(config) => {
                let prepare = |signatures: &[Signature]| {
                    signatures
                        .iter()
                        .map(Check::signature)
                        .collect::<Result<Vec<_>, VerifyError>>()
                };
                Ok(Expected {
                    all_of: prepare(config.all_of.as_deref().unwrap_or_default())?,
                    any_of: prepare(
                        config
                            .any_of
                            .as_ref()
                            .map(|any| any.signatures.as_slice())
                            .unwrap_or_default(),
                    )?,
                    minimum_matches: config
                        .any_of
                        .as_ref()
                        .map_or(0, |any| usize::from(any.minimum_matches)),
                })
            }
            Expectation::Certificate {
                certificate,
                chain,
                require_rekor_bundle,
                annotations,
            } => {
                let chain: Option<Vec<sigstore::registry::Certificate>> =
                    chain.as_ref().map(|chain| {
                        chain
                            .iter()
                            .map(|data| sigstore::registry::Certificate {
                                encoding: sigstore::registry::CertificateEncoding::Pem,
                                data: data.clone(),
                            })
                            .collect()
                    });
                let verifier = CertificateVerifier::from_pem(
                    certificate,
                    *require_rekor_bundle,
                    chain.as_deref(),
                )
                .map_err(VerifyError::Certificate)?;
                let mut all_of = vec![Check {
                    description: format!(
                        "kind: certificate\nrequireRekorBundle: {require_rekor_bundle}\n"
                    ),
                    keyless: *require_rekor_bundle,
                    constraint: Box::new(verifier),
                }];
                if let Some(annotations) = annotations {
                    all_of.push(Check {
                        description: format!(
                            "kind: annotations\n{}",
                            serde_yaml_ng::to_string(annotations).unwrap_or_default()
                        ),
                        keyless: false,
                        constraint: Box::new(AnnotationVerifier {
                            annotations: annotations.clone(),
                        }),
                    });
                }
                Ok(Expected {
                    all_of,
                    any_of: Vec::new(),
                    minimum_matches: 0,
                })
            }
        }
    }

    /// `Err` names what is missing, with the YAML of each unsatisfied expectation.
    fn check(
        &self,
        layers: &[SignatureLayer],
        keyless_unavailable: Option<&str>,
    ) -> Result<(), String> {
        let describe = |unsatisfied: &[&Check]| {
            let mut text: String = unsatisfied.iter().map(|c| c.description.as_str()).collect();
            if let Some(reason) = keyless_unavailable
                && unsatisfied.iter().any(|c| c.keyless)
            {
                text.push_str(&format!(
                    "(keyless signatures could not be checked: {reason})\n"
                ));
            }
            text
        };
        let missing: Vec<&Check> = self
            .all_of
            .iter()
            .filter(|c| !c.satisfied_by(layers))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing signatures\nThe following constraints were not satisfied:\n{}",
                describe(&missing)
            ));
        }
        if !self.any_of.is_empty() {
            let missing: Vec<&Check> = self
                .any_of
                .iter()
                .filter(|c| !c.satisfied_by(layers))
                .collect();
            let matched = self.any_of.len() - missing.len();
            if matched < self.minimum_matches {
                return Err(format!(
                    "minimum number of signatures not reached: needed {}, got {matched}\nThe following constraints were not satisfied:\n{}",
                    self.minimum_matches,
                    describe(&missing)
                ));
            }
        }
        Ok(())
    }
}
