//! Signs artifacts in a registry the way `cosign sign` stores signatures: a manifest under the
//! tag `sha256-<digest>.sig` whose layers are simple-signing payloads
//! (`application/vnd.dev.cosign.simplesigning.v1+json`) carrying the signature, and for
//! keyless signatures the certificate, its chain and a Rekor bundle, as annotations.
//!
//! Keyless signatures need a Fulcio and a Rekor: [`SigstoreInstance`] plays both, with its own
//! certificate authority and transparency-log key, and writes the `ClientTrustConfig` that
//! trusts them (what `--sigstore-trust-config` reads), so tests run offline.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
    SanType, SigningKey,
};
use serde_json::json;
use sha2::{Digest, Sha256};

const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The Fulcio certificate extension holding the OIDC issuer (raw UTF-8).
const FULCIO_ISSUER_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 1];

fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn client(registry: &str) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.to_string()]),
        ..Default::default()
    })
}

/// A signing key, as `cosign generate-key-pair` makes (ECDSA P-256).
#[derive(Debug)]
pub struct SigningKeyPair(KeyPair);

impl SigningKeyPair {
    pub fn generate() -> Self {
        SigningKeyPair(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key"))
    }

    /// The public key, PEM (what a `pubKey` signature names).
    pub fn public_pem(&self) -> String {
        self.0.public_key_pem()
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.0.sign(data).expect("sign")
    }
}

/// The manifest digest of `reference` (an insecure local registry).
pub fn manifest_digest(reference: &str) -> String {
    let parsed: Reference = reference.parse().expect("reference");
    runtime().block_on(async {
        client(parsed.registry())
            .fetch_manifest_digest(&parsed, &RegistryAuth::Anonymous)
            .await
            .expect("manifest digest")
    })
}

/// The simple-signing payload cosign signs for `reference` at `digest`.
pub fn payload(reference: &str, digest: &str, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let parsed: Reference = reference.parse().expect("reference");
    let optional = if annotations.is_empty() {
        serde_json::Value::Null
    } else {
        json!(annotations)
    };
    json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{}", parsed.registry(), parsed.repository())},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": optional
    })
    .to_string()
    .into_bytes()
}

/// One signature layer: its payload and annotations.
#[derive(Debug)]
pub struct Signature {
    pub payload: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

impl Signature {
    /// A signature of `payload` by `key` (`cosign sign --key`).
    pub fn with_key(key: &SigningKeyPair, payload: Vec<u8>) -> Self {
        let signature = BASE64.encode(key.sign(&payload));
        Signature {
            payload,
            annotations: [("dev.cosignproject.cosign/signature".to_string(), signature)].into(),
        }
    }
}

/// Stores `signatures` as the cosign signature image of `reference` (replacing earlier ones).
pub fn attach(reference: &str, signatures: Vec<Signature>) {
    let parsed: Reference = reference.parse().expect("reference");
    let digest = manifest_digest(reference);
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let target: Reference = format!("{}/{}:{tag}", parsed.registry(), parsed.repository())
        .parse()
        .expect("signature reference");
    let layers: Vec<ImageLayer> = signatures
        .into_iter()
        .map(|s| {
            ImageLayer::new(
                s.payload,
                SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
                Some(s.annotations),
            )
        })
        .collect();
    let config = Config::new(
        b"{}".to_vec(),
        "application/vnd.oci.image.config.v1+json".to_string(),
        None,
    );
    // Not `Client::push`: it writes the manifest with OLPC canonical JSON, which leaves the
    // newlines of PEM annotations unescaped, and registries refuse that as invalid JSON.
    // cosign (Go) escapes them, as serde_json does.
    let manifest = oci_client::manifest::OciImageManifest::build(&layers, &config, None);
    runtime().block_on(async {
        let client = client(parsed.registry());
        for (data, digest) in layers
            .iter()
            .map(|l| (l.data.clone(), l.sha256_digest()))
            .chain([(config.data.clone(), config.sha256_digest())])
        {
            client
                .push_blob(&target, data, &digest)
                .await
                .expect("push signature blob");
        }
        client
            .push_manifest_raw(
                &target,
                serde_json::to_vec(&manifest).expect("manifest"),
                oci_client::manifest::OCI_IMAGE_MEDIA_TYPE
                    .parse()
                    .expect("content type"),
            )
            .await
            .expect("push signature manifest");
    });
}

/// A Fulcio certificate authority and a Rekor log key, trusted by the config it writes.
#[derive(Debug)]
pub struct SigstoreInstance {
    fulcio: CertifiedIssuer<'static, KeyPair>,
    rekor: KeyPair,
}

impl SigstoreInstance {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let fulcio = CertifiedIssuer::self_signed(
            params,
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key"),
        )
        .expect("CA");
        SigstoreInstance {
            fulcio,
            rekor: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key"),
        }
    }

    /// The Fulcio certificate authority, PEM (what kwctl's `--fulcio-cert-path` reads).
    pub fn fulcio_pem(&self) -> String {
        self.fulcio.pem()
    }

    /// Rekor's public key, PEM (what kwctl's `--rekor-public-key-path` reads).
    pub fn rekor_public_pem(&self) -> String {
        self.rekor.public_key_pem()
    }

    /// Rekor's log id: the SHA-256 of its public key.
    fn log_id(&self) -> Vec<u8> {
        Sha256::digest(self.rekor.subject_public_key_info()).to_vec()
    }

    /// Writes the `ClientTrustConfig` trusting this instance.
    pub fn write_trust_config(&self, path: &Path) {
        let config = json!({
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": {
                "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                "tlogs": [{
                    "baseUrl": "https://rekor.invalid",
                    "hashAlgorithm": "SHA2_256",
                    "publicKey": {
                        "rawBytes": BASE64.encode(self.rekor.subject_public_key_info()),
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                        "validFor": {"start": "2020-01-01T00:00:00Z"}
                    },
                    "logId": {"keyId": BASE64.encode(self.log_id())}
                }],
                "certificateAuthorities": [{
                    "subject": {"organization": "kubewarden-rs tests", "commonName": "fulcio"},
                    "uri": "https://fulcio.invalid",
                    "certChain": {"certificates": [{"rawBytes": BASE64.encode(self.fulcio.der())}]},
                    "validFor": {"start": "2020-01-01T00:00:00Z"}
                }],
                "ctlogs": [],
                "timestampAuthorities": []
            },
            "signingConfig": {
                "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
                "caUrls": [],
                "oidcUrls": [],
                "rekorTlogUrls": [],
                "tsaUrls": []
            }
        });
        std::fs::write(path, config.to_string()).expect("trust config");
    }

    /// A keyless signature of `payload` as Fulcio and Rekor would make it for the identity
    /// `subject` (an email address or a URI) from the OIDC `issuer`.
    pub fn sign_keyless(&self, payload: Vec<u8>, issuer: &str, subject: &str) -> Signature {
        self.sign_keyless_certified_by(self, payload, issuer, subject)
    }

    /// [`Self::sign_keyless`] with the certificate of another instance's Fulcio, logged in
    /// this one's Rekor.
    pub fn sign_keyless_certified_by(
        &self,
        fulcio: &SigstoreInstance,
        payload: Vec<u8>,
        issuer: &str,
        subject: &str,
    ) -> Signature {
        let key = SigningKeyPair::generate();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![if subject.contains("://") {
            SanType::URI(subject.try_into().expect("URI"))
        } else {
            SanType::Rfc822Name(subject.try_into().expect("email"))
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            FULCIO_ISSUER_OID,
            issuer.as_bytes().to_vec(),
        )];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let certificate = params
            .signed_by(&key.0, &fulcio.fulcio)
            .expect("certificate");

        let signature = key.sign(&payload);
        let body = json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": format!("{:x}", Sha256::digest(&payload))}},
                "signature": {
                    "content": BASE64.encode(&signature),
                    "publicKey": {"content": BASE64.encode(certificate.pem())}
                }
            }
        });
        let integrated_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let log_id = self
            .log_id()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        // Rekor signs the canonical JSON (RFC 8785) of the entry: keys sorted, no spaces.
        let entry = format!(
            r#"{{"body":"{}","integratedTime":{integrated_time},"logID":"{log_id}","logIndex":7}}"#,
            BASE64.encode(body.to_string())
        );
        let set = self.rekor.sign(entry.as_bytes()).expect("SET");
        let bundle = json!({
            "SignedEntryTimestamp": BASE64.encode(set),
            "Payload": serde_json::from_str::<serde_json::Value>(&entry).expect("entry")
        });
        Signature {
            payload,
            annotations: [
                (
                    "dev.cosignproject.cosign/signature".to_string(),
                    BASE64.encode(&signature),
                ),
                (
                    "dev.sigstore.cosign/certificate".to_string(),
                    certificate.pem(),
                ),
                ("dev.sigstore.cosign/chain".to_string(), fulcio.fulcio.pem()),
                ("dev.sigstore.cosign/bundle".to_string(), bundle.to_string()),
            ]
            .into(),
        }
    }
}
