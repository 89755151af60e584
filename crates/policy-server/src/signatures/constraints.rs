//! One expected signature of a `verification.yml` as a sigstore verification constraint: a
//! signature layer satisfies it only when everything the entry asks for (key or certificate
//! identity, and annotations) holds for that same layer.

use api_types::config::verification::Signature;
use sigstore::cosign::SignatureLayer;
use sigstore::cosign::signature_layers::{CertificateSignature, CertificateSubject};
use sigstore::cosign::verification_constraint::{
    AnnotationVerifier, PublicKeyVerifier, VerificationConstraint,
};

/// The OIDC issuer of GitHub Actions workflow identities.
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";

#[derive(Debug)]
enum Identity {
    Key(PublicKeyVerifier),
    /// Any keyless signature whose certificate satisfies `signature` (a `GenericIssuer` or
    /// `GithubAction` entry).
    Certificate(Signature),
}

/// An expected signature that cannot be checked.
#[derive(Debug, thiserror::Error)]
pub enum ConstraintError {
    #[error("the public key cannot be read")]
    PublicKey(#[source] sigstore::errors::SigstoreError),
}

/// A [`Signature`] ready to be checked against signature layers.
#[derive(Debug)]
pub struct SignatureConstraint {
    identity: Identity,
    annotations: Option<AnnotationVerifier>,
}

impl SignatureConstraint {
    pub fn new(signature: &Signature) -> Result<Self, ConstraintError> {
        let identity = match signature {
            Signature::PubKey { key, .. } => Identity::Key(
                PublicKeyVerifier::try_from(key.trim().as_bytes())
                    .map_err(ConstraintError::PublicKey)?,
            ),
            other => Identity::Certificate(other.clone()),
        };
        Ok(SignatureConstraint {
            identity,
            annotations: signature
                .annotations()
                .map(|annotations| AnnotationVerifier {
                    annotations: annotations.clone(),
                }),
        })
    }

    /// Whether the constraint needs Fulcio certificates and Rekor keys to be checked.
    pub fn is_keyless(&self) -> bool {
        matches!(self.identity, Identity::Certificate(_))
    }
}

impl VerificationConstraint for SignatureConstraint {
    fn verify(&self, layer: &SignatureLayer) -> sigstore::errors::Result<bool> {
        let identity = match &self.identity {
            Identity::Key(verifier) => verifier.verify(layer)?,
            // sigstore only sets `certificate_signature` when the certificate chains to a
            // trusted Fulcio root and the layer's Rekor bundle verified.
            Identity::Certificate(expected) => layer
                .certificate_signature
                .as_ref()
                .is_some_and(|certificate| certificate_matches(expected, certificate)),
        };
        Ok(identity
            && match &self.annotations {
                Some(annotations) => annotations.verify(layer)?,
                None => true,
            })
    }
}

fn subject_text(certificate: &CertificateSignature) -> &str {
    match &certificate.subject {
        CertificateSubject::Email(email) => email,
        CertificateSubject::Uri(uri) => uri,
    }
}

fn certificate_matches(expected: &Signature, certificate: &CertificateSignature) -> bool {
    match expected {
        Signature::PubKey { .. } => false,
        Signature::GenericIssuer {
            issuer, subject, ..
        } => {
            certificate.issuer.as_deref() == Some(issuer.as_str())
                && subject.matches(subject_text(certificate))
        }
        Signature::GithubAction { owner, repo, .. } => {
            if certificate.issuer.as_deref() != Some(GITHUB_ACTIONS_ISSUER) {
                return false;
            }
            // The workflow identity is a URI (`https://github.com/<owner>/<repo>/.github/
            // workflows/<file>@<ref>`); an email subject cannot come from a workflow.
            let CertificateSubject::Uri(uri) = &certificate.subject else {
                return false;
            };
            match github_repository(uri) {
                Some((signed_owner, signed_repo)) => {
                    signed_owner == owner && repo.as_ref().is_none_or(|repo| repo == signed_repo)
                }
                None => false,
            }
        }
    }
}

/// `(owner, repository)` of a `https://github.com/<owner>/<repo>/...` URI.
fn github_repository(uri: &str) -> Option<(&str, &str)> {
    let path = uri.strip_prefix("https://github.com/")?;
    let mut segments = path.split('/');
    let owner = segments.next().filter(|s| !s.is_empty())?;
    let repo = segments.next().filter(|s| !s.is_empty())?;
    // `repo` may carry the ref when the URI has no workflow path.
    let repo = repo.split('@').next().unwrap_or(repo);
    Some((owner, repo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::config::verification::Subject;

    fn certificate(issuer: &str, subject: CertificateSubject) -> CertificateSignature {
        let key = sigstore::crypto::CosignVerificationKey::try_from_pem(
            b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELKhD7F5OKy77Z582Y6h0u1J3GNA+\nkvUsh4eKpd1lwkDAzfFDs7yXEExsEkPPuiQJBelDT68n7PDIWB/QEY7mrA==\n-----END PUBLIC KEY-----\n",
        )
        .expect("key");
        CertificateSignature {
            verification_key: key,
            subject,
            issuer: Some(issuer.to_string()),
            github_workflow_trigger: None,
            github_workflow_sha: None,
            github_workflow_name: None,
            github_workflow_repository: None,
            github_workflow_ref: None,
        }
    }

    const WORKFLOW: &str =
        "https://github.com/kubewarden/policy/.github/workflows/release.yml@refs/tags/v1";

    #[test]
    fn github_action_identities_match_owner_and_repository() {
        let signed = certificate(
            GITHUB_ACTIONS_ISSUER,
            CertificateSubject::Uri(WORKFLOW.into()),
        );
        let expect = |owner: &str, repo: Option<&str>| {
            certificate_matches(
                &Signature::GithubAction {
                    owner: owner.into(),
                    repo: repo.map(str::to_string),
                    annotations: None,
                },
                &signed,
            )
        };
        assert!(expect("kubewarden", None));
        assert!(expect("kubewarden", Some("policy")));
        assert!(!expect("kubewarden", Some("other")));
        assert!(!expect("kube", None));
        // Another issuer with the same subject is not GitHub Actions.
        let impostor = certificate(
            "https://issuer.example",
            CertificateSubject::Uri(WORKFLOW.into()),
        );
        assert!(!certificate_matches(
            &Signature::GithubAction {
                owner: "kubewarden".into(),
                repo: None,
                annotations: None
            },
            &impostor
        ));
    }

    #[test]
    fn generic_issuers_match_issuer_and_subject() {
        let signed = certificate(
            "https://github.com/login/oauth",
            CertificateSubject::Email("alice@example.com".into()),
        );
        let expect = |issuer: &str, subject: Subject| {
            certificate_matches(
                &Signature::GenericIssuer {
                    issuer: issuer.into(),
                    subject,
                    annotations: None,
                },
                &signed,
            )
        };
        assert!(expect(
            "https://github.com/login/oauth",
            Subject::Equal("alice@example.com".into())
        ));
        assert!(!expect(
            "https://accounts.google.com",
            Subject::Equal("alice@example.com".into())
        ));
        assert!(!expect(
            "https://github.com/login/oauth",
            Subject::Equal("bob@example.com".into())
        ));
    }

    #[test]
    fn github_uris_are_split_into_owner_and_repository() {
        assert_eq!(github_repository(WORKFLOW), Some(("kubewarden", "policy")));
        assert_eq!(
            github_repository("https://github.com/o/r@refs/heads/main"),
            Some(("o", "r"))
        );
        assert_eq!(github_repository("https://github.com/o"), None);
        assert_eq!(github_repository("https://gitlab.com/o/r/x"), None);
    }
}
