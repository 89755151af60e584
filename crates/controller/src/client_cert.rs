//! The audit-scanner's client certificate: the Secret `kubewarden-audit-scanner-client-cert`
//! (type `kubernetes.io/tls`), signed by `kubewarden-ca`. Policy-servers in mTLS mode trust that
//! CA for clients, so with the chart's `mTLS.enable` the audit-scanner's CronJob mounts this
//! Secret and is let in. Upstream's chart makes the same Secret at install time; here the
//! controller owns the CA, so it issues the certificate, and re-issues it when the CA rotates
//! or the certificate nears its expiry. A sound Secret made by upstream's chart is kept.

use std::collections::BTreeMap;

use api_types::naming::{self, labels};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use time::OffsetDateTime;

use crate::ca;
use crate::certs::IssuedCertificate;
use crate::context::{Context, apply};
use crate::error::{Error, KubeResultExt};

/// Value of `app.kubernetes.io/component` on the Secret.
const COMPONENT: &str = "audit-scanner";

/// Keeps the audit-scanner's client certificate while it is sound, issues a new one otherwise.
/// Returns whether it issued one.
pub async fn ensure(ctx: &Context, now: OffsetDateTime) -> Result<bool, Error> {
    let ca = ca::ensure(ctx).await?;
    let secrets: Api<Secret> = ctx.namespaced();
    let name = naming::AUDIT_SCANNER_CLIENT_CERT_SECRET_NAME;
    let existing = secrets
        .get_opt(name)
        .await
        .context(|| format!("reading Secret {name}"))?;
    let problem = match existing.as_ref().and_then(IssuedCertificate::from_secret) {
        None => "there is none".to_string(),
        Some(cert) => match ca.authority.client_certificate_problem(
            &cert,
            naming::AUDIT_SCANNER_CLIENT_COMMON_NAME,
            now,
        ) {
            None => return Ok(false),
            Some(problem) => problem,
        },
    };
    tracing::info!(secret = name, %problem, "issuing the audit-scanner's client certificate");
    let cert = ca
        .authority
        .issue_client_certificate(naming::AUDIT_SCANNER_CLIENT_COMMON_NAME, now)?;
    apply(
        &secrets,
        &desired_secret(&ctx.options.deployments_namespace, &cert),
    )
    .await?;
    Ok(true)
}

fn desired_secret(namespace: &str, cert: &IssuedCertificate) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(naming::AUDIT_SCANNER_CLIENT_CERT_SECRET_NAME.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (
                    labels::PART_OF.to_string(),
                    labels::PART_OF_KUBEWARDEN.to_string(),
                ),
                (labels::COMPONENT.to_string(), COMPONENT.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(cert.secret_data()),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trips_the_certificate() {
        let cert = IssuedCertificate {
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
        };
        let secret = desired_secret("kubewarden", &cert);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("kubewarden-audit-scanner-client-cert")
        );
        assert_eq!(IssuedCertificate::from_secret(&secret), Some(cert));
        assert_eq!(IssuedCertificate::from_secret(&Secret::default()), None);
    }
}
