//! Sigstore signature checks: `kwctl verify`, and `pull`, `run` and `bench` before they
//! download a policy. Upstream's flags become a `verification.yml` (`allOf` every named key
//! and identity), checked by the policy-server's own verifier, so kwctl accepts exactly what a
//! policy-server configured with that file accepts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use api_types::config::VerificationConfig;
use api_types::config::verification::{
    Signature, Subject, VERIFICATION_CONFIG_VERSION as CONFIG_VERSION,
};
use api_types::error_text::with_causes;
use policy_server::fetch::ModuleSource;
use policy_server::signatures::{Expectation, SignatureVerifier, TrustRoot};

use crate::oci::{Access, runtime};

/// Upstream's verification flags.
#[derive(Debug, Default, clap::Args)]
pub struct VerificationArgs {
    /// YAML file holding the verification config (what a PolicyServer's
    /// `verificationConfig` holds). Default: `~/.config/kubewarden/verification-config.yml`,
    /// when it exists and no other verification flag is given.
    #[arg(long, value_name = "PATH")]
    pub verification_config_path: Option<PathBuf>,
    /// Path to a public key the policy must be signed with (repeatable).
    #[arg(short = 'k', long, value_name = "PATH")]
    pub verification_key: Vec<PathBuf>,
    /// Annotation the signatures must carry, `key=value` (repeatable).
    #[arg(short = 'a', long, value_name = "KEY=VALUE")]
    pub verification_annotation: Vec<String>,
    /// Email of the keyless signature's certificate (with --cert-oidc-issuer).
    #[arg(long, value_name = "VALUE")]
    pub cert_email: Option<String>,
    /// OIDC issuer of the keyless signature's certificate (with --cert-email).
    #[arg(long, value_name = "VALUE")]
    pub cert_oidc_issuer: Option<String>,
    /// GitHub owner of the workflow that signed the policy keyless.
    #[arg(long, value_name = "VALUE")]
    pub github_owner: Option<String>,
    /// GitHub repository of that workflow (with --github-owner).
    #[arg(long, value_name = "VALUE")]
    pub github_repo: Option<String>,
    /// Fulcio certificate authority keyless signatures chain to (repeatable; with
    /// --rekor-public-key-path). Default: Sigstore's public-good instance, through TUF.
    #[arg(long, value_name = "PATH", conflicts_with = "sigstore_trust_config")]
    pub fulcio_cert_path: Vec<PathBuf>,
    /// Rekor public key keyless signatures' bundles are checked with (with
    /// --fulcio-cert-path).
    #[arg(long, value_name = "PATH", conflicts_with = "sigstore_trust_config")]
    pub rekor_public_key_path: Option<PathBuf>,
    /// Sigstore `ClientTrustConfig` JSON naming the Fulcio and Rekor to trust, as the
    /// policy-server's flag of that name (a private Sigstore instance, or offline use).
    #[arg(long, value_name = "PATH")]
    pub sigstore_trust_config: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

impl VerificationArgs {
    /// Whether verification was asked for on the command line (not only by the default
    /// config file).
    pub fn explicitly_requested(&self) -> bool {
        self.verification_config_path.is_some() || self.has_signature_flags()
    }

    fn has_signature_flags(&self) -> bool {
        !self.verification_key.is_empty()
            || !self.verification_annotation.is_empty()
            || self.cert_email.is_some()
            || self.cert_oidc_issuer.is_some()
            || self.github_owner.is_some()
            || self.github_repo.is_some()
    }

    /// The signatures asked for: a config file, else the flags, else the default config
    /// file when it exists; `None` asks for no verification.
    pub fn config(&self, config_dir: &Path) -> Result<Option<VerificationConfig>> {
        if let Some(path) = &self.verification_config_path {
            if self.has_signature_flags() {
                bail!(
                    "verification-config-path cannot be used in conjunction with other verification flags"
                );
            }
            return parse_config(path).map(Some);
        }
        if !self.has_signature_flags() {
            let default = config_dir.join("verification-config.yml");
            return if default.is_file() {
                tracing::info!(path = %default.display(), "using the default verification config");
                parse_config(&default).map(Some)
            } else {
                Ok(None)
            };
        }
        let annotations = self.annotations()?;
        let mut all_of = Vec::new();
        match (&self.cert_email, &self.cert_oidc_issuer) {
            (Some(email), Some(issuer)) => all_of.push(Signature::GenericIssuer {
                issuer: issuer.clone(),
                subject: Subject::Equal(email.clone()),
                annotations: annotations.clone(),
            }),
            (None, None) => {}
            _ => bail!(
                "Intending to verify OIDC issuer, but no email or issuer were provided: pass both --cert-email and --cert-oidc-issuer"
            ),
        }
        match (&self.github_owner, &self.github_repo) {
            (Some(owner), repo) => all_of.push(Signature::GithubAction {
                owner: owner.clone(),
                repo: repo.clone(),
                annotations: annotations.clone(),
            }),
            (None, Some(_)) => bail!(
                "Intending to verify a GitHub actions signature, but the repository owner is missing: pass --github-owner"
            ),
            (None, None) => {}
        }
        for path in &self.verification_key {
            all_of.push(Signature::PubKey {
                owner: None,
                key: read(path)?,
                annotations: annotations.clone(),
            });
        }
        if all_of.is_empty() {
            bail!(
                "Intending to verify annotations, but no verification keys, OIDC issuer or GitHub owner were passed"
            );
        }
        Ok(Some(VerificationConfig {
            api_version: CONFIG_VERSION.to_string(),
            all_of: Some(all_of),
            any_of: None,
        }))
    }

    fn annotations(&self) -> Result<Option<std::collections::BTreeMap<String, String>>> {
        if self.verification_annotation.is_empty() {
            return Ok(None);
        }
        self.verification_annotation
            .iter()
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
                _ => bail!("--verification-annotation {pair:?} is not key=value"),
            })
            .collect::<Result<_>>()
            .map(Some)
    }

    /// Where keyless signatures are checked against.
    pub fn trust_root(&self, sigstore_cache: PathBuf) -> Result<TrustRoot> {
        if let Some(path) = &self.sigstore_trust_config {
            return Ok(TrustRoot::from_file(path)?);
        }
        match (&self.fulcio_cert_path[..], &self.rekor_public_key_path) {
            ([], None) => Ok(TrustRoot::public_good(sigstore_cache)),
            ([], Some(_)) | ([_, ..], None) => {
                bail!("both a fulcio certificate and a rekor public key are required")
            }
            (certificates, Some(rekor)) => {
                let certificates = certificates
                    .iter()
                    .map(|path| {
                        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let rekor =
                    std::fs::read(rekor).with_context(|| format!("reading {}", rekor.display()))?;
                Ok(TrustRoot::manual(&certificates, &rekor)?)
            }
        }
    }
}

fn parse_config(path: &Path) -> Result<VerificationConfig> {
    VerificationConfig::parse(&read(path)?).with_context(|| format!("reading {}", path.display()))
}

/// Checks the signatures of the registry policy `uri` against `config`: the manifest digest
/// whose signatures were verified (what to pull, so what runs is what was signed).
pub fn verify(
    access: &Access,
    config_dir: &Path,
    uri: &str,
    config: &VerificationConfig,
    trust_root: TrustRoot,
) -> Result<String> {
    let ModuleSource::Registry(reference) = ModuleSource::parse(uri)? else {
        bail!("Policy {uri} cannot be verified: only registry:// policies carry signatures");
    };
    let fetcher = access.fetcher(config_dir, std::env::temp_dir())?;
    let verifier = SignatureVerifier::new(fetcher, trust_root);
    runtime()?
        .block_on(verifier.verify(&reference, &Expectation::Config(config.clone())))
        .map_err(|reason| {
            anyhow::anyhow!("Policy {uri} cannot be validated\n{}", with_causes(&reason))
        })
}
