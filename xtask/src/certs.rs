//! A throwaway CA and a `localhost` serving certificate for local servers (demo, benchmarks).

use std::path::Path;

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// Writes `ca.crt`, `tls.crt` and `tls.key` (for `localhost`) into `dir`.
pub fn write_localhost_certificates(dir: &Path) -> Result<()> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A subject of its own, so the leaf (rcgen's default subject) does not look self-signed.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubewarden-rs local CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&key, &ca)?;
    std::fs::write(dir.join("ca.crt"), ca.pem())?;
    std::fs::write(dir.join("tls.crt"), cert.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    Ok(())
}
