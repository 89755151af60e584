use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A throwaway CA and a serving certificate for `<service>.<namespace>.svc`, the name the
/// apiserver checks when it calls a webhook through a Service.
#[derive(Debug)]
pub struct WebhookCertificates {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl WebhookCertificates {
    pub fn for_service(service: &str, namespace: &str) -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A subject of its own, so the leaf (rcgen's default subject) does not look self-signed.
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubewarden-rs test webhook CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let params = CertificateParams::new(vec![format!("{service}.{namespace}.svc")])?;
        let cert = params.signed_by(&key, &ca)?;
        Ok(WebhookCertificates {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
