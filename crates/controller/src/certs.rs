//! The certificate authority that signs policy-server certificates, and the checks that decide
//! when a certificate must be replaced. Pure: time is a parameter, nothing touches the cluster.

use std::collections::BTreeMap;

use api_types::naming;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Common name of the CA the controller creates (the same as the Helm charts').
pub const CA_COMMON_NAME: &str = "kubewarden-controller-ca";
/// Lifetime of a CA the controller creates.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Lifetime of a certificate the CA issues (policy-server serving, audit-scanner client).
pub const LEAF_CERT_VALIDITY: Duration = Duration::days(365);
/// Certificates are replaced this long before they expire, so a rotation never races expiry.
pub const RENEW_BEFORE: Duration = Duration::days(60);
/// Tolerated clock skew between the controller and the apiserver for `notBefore`.
const CLOCK_SKEW: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a key or certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{what} is not a PEM-encoded X.509 certificate: {reason}")]
    Parse { what: &'static str, reason: String },
    #[error("{what} is not a PEM-encoded private key: {reason}")]
    Key { what: &'static str, reason: String },
}

/// A CA certificate with its key, able to sign server certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A certificate the CA issued and its key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("IssuedCertificate")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl IssuedCertificate {
    /// The certificate stored in a Secret's `tls.crt` and `tls.key`, when both are there.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        Some(IssuedCertificate {
            cert_pem: crate::ca::secret_text(secret, naming::TLS_CERT_KEY)?,
            key_pem: crate::ca::secret_text(secret, naming::TLS_KEY_KEY)?,
        })
    }

    /// `tls.crt` and `tls.key` for a Secret's data.
    pub fn secret_data(&self) -> BTreeMap<String, ByteString> {
        BTreeMap::from([
            (
                naming::TLS_CERT_KEY.to_string(),
                ByteString(self.cert_pem.clone().into_bytes()),
            ),
            (
                naming::TLS_KEY_KEY.to_string(),
                ByteString(self.key_pem.clone().into_bytes()),
            ),
        ])
    }
}

impl CertificateAuthority {
    /// A new self-signed ECDSA P-256 CA valid from `now` for [`CA_VALIDITY`].
    pub fn generate(now: OffsetDateTime) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(CertificateAuthority {
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
            cert_pem,
            key_pem,
        })
    }

    /// Loads a CA from the PEM certificate and key stored in the CA Secret.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let not_after = parse_certificate(cert_pem, "the CA certificate", not_after)??;
        let key = KeyPair::from_pem(key_pem).map_err(|err| CertError::Key {
            what: "the CA key",
            reason: err.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            not_after,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Whether the CA must be replaced: it expires within [`RENEW_BEFORE`] of `now`.
    pub fn needs_renewal(&self, now: OffsetDateTime) -> bool {
        self.not_after <= now + RENEW_BEFORE
    }

    /// Issues an ECDSA P-256 serving certificate for `dns_name`, valid from `now` for
    /// [`LEAF_CERT_VALIDITY`] (never beyond the CA itself).
    pub fn issue_server_certificate(
        &self,
        dns_name: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CertError> {
        let mut params = CertificateParams::new(vec![dns_name.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, dns_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, now)
    }

    /// Issues an ECDSA P-256 client certificate for `common_name` (as upstream's chart does for
    /// the audit-scanner), valid from `now` for [`LEAF_CERT_VALIDITY`].
    pub fn issue_client_certificate(
        &self,
        common_name: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, now)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - CLOCK_SKEW;
        params.not_after = (now + LEAF_CERT_VALIDITY).min(self.not_after);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Why `cert` can no longer serve `dns_name`, or `None` when it is signed by this CA,
    /// names `dns_name`, matches `key_pem` and stays valid for [`RENEW_BEFORE`] after `now`.
    pub fn server_certificate_problem(
        &self,
        cert: &IssuedCertificate,
        dns_name: &str,
        now: OffsetDateTime,
    ) -> Option<String> {
        self.certificate_problem(cert, now, |parsed| {
            (!names_dns(parsed, dns_name))
                .then(|| format!("the certificate does not name {dns_name}"))
        })
    }

    /// Why `cert` can no longer authenticate `common_name` as a client, or `None` when it is
    /// signed by this CA, has that common name, matches its key and stays valid for
    /// [`RENEW_BEFORE`] after `now`.
    pub fn client_certificate_problem(
        &self,
        cert: &IssuedCertificate,
        common_name: &str,
        now: OffsetDateTime,
    ) -> Option<String> {
        self.certificate_problem(cert, now, |parsed| {
            let named = parsed
                .subject()
                .iter_common_name()
                .any(|cn| cn.as_str().is_ok_and(|cn| cn == common_name));
            (!named).then(|| format!("the certificate's common name is not {common_name}"))
        })
    }

    fn certificate_problem(
        &self,
        cert: &IssuedCertificate,
        now: OffsetDateTime,
        name_problem: impl FnOnce(&X509Certificate<'_>) -> Option<String>,
    ) -> Option<String> {
        let key = match KeyPair::from_pem(&cert.key_pem) {
            Ok(key) => key,
            Err(err) => return Some(format!("the key does not parse: {err}")),
        };
        let ca_key = self.issuer.key().public_key_raw().to_vec();
        let outcome = parse_certificate(&cert.cert_pem, "the certificate", |parsed| {
            if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
                return Some("the certificate does not belong to the stored key".to_string());
            }
            if let Some(problem) = name_problem(parsed) {
                return Some(problem);
            }
            match not_after(parsed) {
                Ok(expiry) if expiry <= now + RENEW_BEFORE => {
                    return Some(format!("the certificate expires at {expiry}"));
                }
                Ok(_) => {}
                Err(err) => return Some(err.to_string()),
            }
            if !signed_by(parsed, &self.cert_pem, &ca_key) {
                return Some("the certificate is not signed by the current CA".to_string());
            }
            None
        });
        match outcome {
            Ok(problem) => problem,
            Err(err) => Some(err.to_string()),
        }
    }
}

/// Whether a PEM certificate expires before `at` (or cannot be read, which counts as expired).
pub fn expires_before(cert_pem: &str, at: OffsetDateTime) -> bool {
    match parse_certificate(cert_pem, "certificate", not_after) {
        Ok(Ok(expiry)) => expiry <= at,
        _ => true,
    }
}

fn parse_certificate<T>(
    pem: &str,
    what: &'static str,
    inspect: impl FnOnce(&X509Certificate<'_>) -> T,
) -> Result<T, CertError> {
    let parse_error = |reason: String| CertError::Parse { what, reason };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| parse_error(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| parse_error(e.to_string()))?;
    Ok(inspect(&cert))
}

fn not_after(cert: &X509Certificate<'_>) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).map_err(|err| {
        CertError::Parse {
            what: "certificate expiry",
            reason: err.to_string(),
        }
    })
}

fn names_dns(cert: &X509Certificate<'_>, dns_name: &str) -> bool {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|name| matches!(name, GeneralName::DNSName(n) if n.eq_ignore_ascii_case(dns_name)))
}

fn signed_by(cert: &X509Certificate<'_>, ca_pem: &str, ca_key: &[u8]) -> bool {
    parse_certificate(ca_pem, "the CA certificate", |ca| {
        ca.public_key().subject_public_key.data.as_ref() == ca_key
            && cert.verify_signature(Some(ca.public_key())).is_ok()
    })
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DNS: &str = "policy-server-default.kubewarden.svc";

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid timestamp")
    }

    #[test]
    fn issued_certificate_is_valid_for_its_name() {
        let ca = CertificateAuthority::generate(now()).expect("CA");
        let cert = ca.issue_server_certificate(DNS, now()).expect("cert");
        assert_eq!(ca.server_certificate_problem(&cert, DNS, now()), None);
        assert!(cert.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = CertificateAuthority::generate(now()).expect("CA");
        let loaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).expect("load");
        let cert = loaded.issue_server_certificate(DNS, now()).expect("cert");
        // Signed by the reloaded CA and accepted by the original: same key, same subject.
        assert_eq!(ca.server_certificate_problem(&cert, DNS, now()), None);
        assert_eq!(
            loaded.not_after().unix_timestamp(),
            ca.not_after().unix_timestamp()
        );
    }

    #[test]
    fn problems_are_named() {
        let ca = CertificateAuthority::generate(now()).expect("CA");
        let other_ca = CertificateAuthority::generate(now()).expect("CA");
        let cert = ca.issue_server_certificate(DNS, now()).expect("cert");

        let wrong_name = ca.server_certificate_problem(&cert, "other.kubewarden.svc", now());
        assert!(wrong_name.expect("problem").contains("does not name"));

        let wrong_ca = other_ca.server_certificate_problem(&cert, DNS, now());
        assert!(
            wrong_ca
                .expect("problem")
                .contains("not signed by the current CA")
        );

        let later = now() + LEAF_CERT_VALIDITY - Duration::days(59);
        let expiring = ca.server_certificate_problem(&cert, DNS, later);
        assert!(expiring.expect("problem").contains("expires"));

        let other = ca.issue_server_certificate(DNS, now()).expect("cert");
        let mismatched = IssuedCertificate {
            cert_pem: cert.cert_pem.clone(),
            key_pem: other.key_pem,
        };
        let problem = ca.server_certificate_problem(&mismatched, DNS, now());
        assert!(problem.expect("problem").contains("stored key"));

        let garbage = IssuedCertificate {
            cert_pem: "not a certificate".into(),
            key_pem: cert.key_pem.clone(),
        };
        assert!(
            ca.server_certificate_problem(&garbage, DNS, now())
                .is_some()
        );
    }

    #[test]
    fn client_certificate_is_accepted_by_a_policy_server_trusting_the_ca() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, UnixTime};
        let ca = CertificateAuthority::generate(now()).expect("CA");
        let cert = ca
            .issue_client_certificate("audit-scanner-client", now())
            .expect("cert");
        assert_eq!(
            ca.client_certificate_problem(&cert, "audit-scanner-client", now()),
            None
        );
        let wrong_name = ca.client_certificate_problem(&cert, "someone-else", now());
        assert!(wrong_name.expect("problem").contains("common name"));
        let other_ca = CertificateAuthority::generate(now()).expect("CA");
        let wrong_ca = other_ca.client_certificate_problem(&cert, "audit-scanner-client", now());
        assert!(wrong_ca.expect("problem").contains("not signed"));

        // The verifier the policy-server uses for `--client-ca-file`.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("CA PEM"))
            .expect("root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let leaf = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("leaf PEM");
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now().unix_timestamp().unsigned_abs(),
        ));
        verifier
            .verify_client_cert(&leaf, &[], at)
            .expect("a client certificate the policy-server accepts");
        let server = ca.issue_server_certificate(DNS, now()).expect("cert");
        let server = CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).expect("PEM");
        assert!(
            verifier.verify_client_cert(&server, &[], at).is_err(),
            "a serving certificate is not a client certificate"
        );
    }

    #[test]
    fn ca_renewal_window() {
        let ca = CertificateAuthority::generate(now()).expect("CA");
        assert!(!ca.needs_renewal(now()));
        assert!(ca.needs_renewal(now() + CA_VALIDITY - Duration::days(59)));
        assert!(!expires_before(ca.cert_pem(), now()));
        assert!(expires_before(ca.cert_pem(), now() + CA_VALIDITY));
        assert!(expires_before("garbage", now()));
    }

    #[test]
    fn server_certificate_never_outlives_its_ca() {
        let ca = CertificateAuthority::generate(now()).expect("CA");
        let late = now() + CA_VALIDITY - Duration::days(30);
        let cert = ca.issue_server_certificate(DNS, late).expect("cert");
        assert!(expires_before(
            &cert.cert_pem,
            ca.not_after() + Duration::seconds(1)
        ));
    }

    #[test]
    fn rejects_malformed_ca() {
        let err = CertificateAuthority::from_pem("nope", "nope").expect_err("malformed");
        assert!(err.to_string().contains("CA certificate"), "{err}");
    }
}
