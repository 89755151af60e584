//! `crypto/v1/is_certificate_trusted`: is a certificate valid at a time and signed by a chain
//! (the last certificate of `cert_chain` is the root, the others intermediates), or by the
//! host's CA bundle when no chain is given. Any extended key usage is accepted, as upstream.

use std::sync::OnceLock;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Deserialize;
use serde_json::json;
use webpki::{EndEntityCert, Error as WebpkiError, KeyPurposeIdIter};

const USED_AFTER_EXPIRATION: &str = "Certificate is being used after its expiration date";
const USED_BEFORE_VALIDITY: &str = "Certificate is being used before its validity date";
const NOT_TRUSTED_BY_CHAIN: &str = "Certificate is not trusted by the provided cert chain";

#[derive(Debug, Deserialize)]
enum Encoding {
    Pem,
    Der,
}

#[derive(Debug, Deserialize)]
struct Certificate {
    encoding: Encoding,
    data: Vec<u8>,
}

impl Certificate {
    fn der(&self) -> Result<CertificateDer<'_>, String> {
        match self.encoding {
            Encoding::Pem => CertificateDer::from_pem_slice(&self.data)
                .map_err(|e| format!("the certificate is not valid PEM: {e}")),
            Encoding::Der => Ok(CertificateDer::from(self.data.as_slice())),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Request {
    cert: Certificate,
    #[serde(default)]
    cert_chain: Option<Vec<Certificate>>,
    /// RFC 3339 time at which the certificate must (still) be valid; now when absent.
    #[serde(default)]
    not_after: Option<String>,
}

/// Accepts every extended key usage: the question is trust, not purpose.
struct AnyKeyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyKeyUsage {
    fn validate(&self, _: KeyPurposeIdIter<'_, '_>) -> Result<(), WebpkiError> {
        Ok(())
    }
}

/// The host's CA bundle, read once.
fn system_roots() -> &'static [TrustAnchor<'static>] {
    static ROOTS: OnceLock<Vec<TrustAnchor<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "reading the system CA bundle");
        }
        loaded
            .certs
            .iter()
            .filter_map(|cert| webpki::anchor_from_trusted_cert(cert).ok())
            .map(|anchor| anchor.to_owned())
            .collect()
    })
}

pub fn is_certificate_trusted(payload: &[u8]) -> Result<Vec<u8>, String> {
    let request: Request =
        serde_json::from_slice(payload).map_err(|e| format!("invalid request payload: {e}"))?;
    let (trusted, reason) = verify(&request)?;
    serde_json::to_vec(&json!({"trusted": trusted, "reason": reason})).map_err(|e| e.to_string())
}

fn verify(request: &Request) -> Result<(bool, String), String> {
    let der = request.cert.der()?;
    let certificate = EndEntityCert::try_from(&der)
        .map_err(|e| format!("not a valid end-entity certificate: {e}"))?;
    let time = match &request.not_after {
        Some(text) => {
            let at: jiff::Timestamp = text
                .parse()
                .map_err(|_| "Timestamp not_after is not in RFC3339 format".to_string())?;
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                u64::try_from(at.as_second()).unwrap_or(0),
            ))
        }
        None => UnixTime::now(),
    };
    let chain: Vec<CertificateDer<'_>> = request
        .cert_chain
        .iter()
        .flatten()
        .map(Certificate::der)
        .collect::<Result<_, _>>()?;
    let (anchors, intermediates): (Vec<TrustAnchor<'_>>, &[CertificateDer<'_>]) =
        match chain.split_last() {
            Some((root, intermediates)) => (
                vec![
                    webpki::anchor_from_trusted_cert(root)
                        .map_err(|e| format!("the root of the chain is not usable: {e}"))?,
                ],
                intermediates,
            ),
            None => (system_roots().to_vec(), &[]),
        };
    let outcome = certificate.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        time,
        AnyKeyUsage,
        None,
        None,
    );
    Ok(match outcome {
        Ok(_) => (true, String::new()),
        Err(WebpkiError::CertExpired { .. }) => (false, USED_AFTER_EXPIRATION.into()),
        Err(WebpkiError::CertNotValidYet { .. }) => (false, USED_BEFORE_VALIDITY.into()),
        Err(WebpkiError::UnknownIssuer | WebpkiError::InvalidSignatureForPublicKey) => {
            (false, NOT_TRUSTED_BY_CHAIN.into())
        }
        Err(other) => (false, format!("Certificate not trusted: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, IsCa, Issuer, KeyPair};
    use serde_json::Value;

    use super::*;

    fn pem_bytes(pem: String) -> Value {
        json!({"encoding": "Pem", "data": pem.into_bytes()})
    }

    fn ask(request: Value) -> Value {
        serde_json::from_slice(
            &is_certificate_trusted(request.to_string().as_bytes()).expect("answers"),
        )
        .expect("json")
    }

    #[test]
    fn certificates_are_checked_against_the_chain_and_time() {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("key");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca_params, ca_key);
        let mut leaf_params =
            CertificateParams::new(vec!["leaf.example".to_string()]).expect("params");
        leaf_params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        leaf_params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let leaf = leaf_params
            .signed_by(&KeyPair::generate().expect("key"), &issuer)
            .expect("leaf");
        let stranger = CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&KeyPair::generate().expect("key"))
            .expect("stranger");

        let answer =
            ask(json!({"cert": pem_bytes(leaf.pem()), "cert_chain": [pem_bytes(ca.pem())]}));
        assert_eq!(answer, json!({"trusted": true, "reason": ""}));
        let der = json!({"encoding": "Der", "data": leaf.der().to_vec()});
        assert_eq!(
            ask(json!({"cert": der, "cert_chain": [pem_bytes(ca.pem())]}))["trusted"],
            true
        );
        let answer =
            ask(json!({"cert": pem_bytes(leaf.pem()), "cert_chain": [pem_bytes(stranger.pem())]}));
        assert_eq!(
            answer,
            json!({"trusted": false, "reason": NOT_TRUSTED_BY_CHAIN})
        );
        let answer = ask(
            json!({"cert": pem_bytes(leaf.pem()), "cert_chain": [pem_bytes(ca.pem())],
                                "not_after": "2036-01-01T00:00:00Z"}),
        );
        assert_eq!(
            answer,
            json!({"trusted": false, "reason": USED_AFTER_EXPIRATION})
        );
        let answer = ask(
            json!({"cert": pem_bytes(leaf.pem()), "cert_chain": [pem_bytes(ca.pem())],
                                "not_after": "2024-06-01T00:00:00Z"}),
        );
        assert_eq!(
            answer,
            json!({"trusted": false, "reason": USED_BEFORE_VALIDITY})
        );
        // No chain: the system's CA bundle does not know our CA.
        assert_eq!(
            ask(json!({"cert": pem_bytes(leaf.pem())}))["trusted"],
            false
        );
        assert!(
            is_certificate_trusted(br#"{"cert": {"encoding": "Pem", "data": [1, 2]}}"#).is_err()
        );
        assert!(is_certificate_trusted(b"{}").is_err());
    }
}
