//! The `kubewarden-ca` Secret: created when absent, rotated before it expires.
//!
//! Rotation keeps the previous CA certificate in `old-ca.crt`, and webhook `caBundle`s carry
//! both until the old one expires, so the apiserver trusts policy-servers still presenting a
//! certificate from the old CA while they are re-issued.

use std::collections::BTreeMap;
use std::sync::Mutex;

use api_types::naming::{self, labels};
use futures::channel::mpsc;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use time::OffsetDateTime;

use crate::certs::{CertificateAuthority, expires_before};
use crate::context::Context;
use crate::error::{Error, KubeResultExt};

/// The CA that signs policy-server certificates and the PEM bundle webhooks trust.
#[derive(Debug)]
pub struct CaState {
    pub authority: CertificateAuthority,
    /// `ca.crt` followed by `old-ca.crt` when a rotation is in progress.
    pub bundle_pem: String,
}

/// A non-empty text entry of a Secret's data.
pub(crate) fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|s| !s.trim().is_empty())
}

fn bundle(current: &str, old: Option<&str>) -> String {
    match old {
        Some(old) => format!("{}\n{}", current.trim_end(), old.trim_end()),
        None => current.to_string(),
    }
}

fn state_from(secret: &Secret) -> Result<CaState, Error> {
    let (Some(cert), Some(key)) = (
        secret_text(secret, naming::CA_CERT_KEY),
        secret_text(secret, naming::CA_KEY_KEY),
    ) else {
        return Err(Error::Invalid(format!(
            "Secret {} lacks {} or {}",
            naming::CA_SECRET_NAME,
            naming::CA_CERT_KEY,
            naming::CA_KEY_KEY
        )));
    };
    let authority = CertificateAuthority::from_pem(&cert, &key)?;
    let old = secret_text(secret, naming::OLD_CA_CERT_KEY);
    Ok(CaState {
        bundle_pem: bundle(&cert, old.as_deref()),
        authority,
    })
}

fn secret_data(
    authority: &CertificateAuthority,
    old_cert: Option<&str>,
) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::from([
        (
            naming::CA_CERT_KEY.to_string(),
            ByteString(authority.cert_pem().as_bytes().to_vec()),
        ),
        (
            naming::CA_KEY_KEY.to_string(),
            ByteString(authority.key_pem().as_bytes().to_vec()),
        ),
    ]);
    if let Some(old) = old_cert {
        data.insert(
            naming::OLD_CA_CERT_KEY.to_string(),
            ByteString(old.as_bytes().to_vec()),
        );
    }
    data
}

/// Reads the CA, creating it when the Secret does not exist yet.
pub async fn ensure(ctx: &Context) -> Result<CaState, Error> {
    state_from(&ensure_secret(ctx).await?)
}

/// The CA Secret, created with a new CA when it does not exist yet.
async fn ensure_secret(ctx: &Context) -> Result<Secret, Error> {
    let secrets = ctx.namespaced::<Secret>();
    if let Some(secret) = secrets
        .get_opt(naming::CA_SECRET_NAME)
        .await
        .context(|| format!("reading Secret {}", naming::CA_SECRET_NAME))?
    {
        return Ok(secret);
    }
    let authority = CertificateAuthority::generate(OffsetDateTime::now_utc())?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(naming::CA_SECRET_NAME.to_string()),
            namespace: Some(ctx.options.deployments_namespace.clone()),
            labels: Some(BTreeMap::from([(
                labels::PART_OF.to_string(),
                labels::PART_OF_KUBEWARDEN.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(secret_data(&authority, None)),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            tracing::info!(secret = naming::CA_SECRET_NAME, "created the CA");
            Ok(created)
        }
        // Another replica or Helm created it first: use theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => secrets
            .get(naming::CA_SECRET_NAME)
            .await
            .context(|| format!("reading Secret {}", naming::CA_SECRET_NAME)),
        Err(err) => Err(err).context(|| format!("creating Secret {}", naming::CA_SECRET_NAME)),
    }
}

/// What a rotation check did.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    Unchanged,
    /// A new CA replaced one about to expire; the old one stays trusted.
    Renewed,
    /// The previous CA expired and is no longer trusted.
    OldCaDropped,
}

/// Renews the CA when it expires within the renewal window, and drops an expired old CA.
pub async fn rotate_if_needed(ctx: &Context, now: OffsetDateTime) -> Result<Rotation, Error> {
    let mut secret = ensure_secret(ctx).await?;
    let secrets = ctx.namespaced::<Secret>();
    let state = state_from(&secret)?;
    let old = secret_text(&secret, naming::OLD_CA_CERT_KEY);
    let (data, outcome) = if state.authority.needs_renewal(now) {
        let renewed = CertificateAuthority::generate(now)?;
        let data = secret_data(&renewed, Some(state.authority.cert_pem()));
        (data, Rotation::Renewed)
    } else if old.as_deref().is_some_and(|old| expires_before(old, now)) {
        (secret_data(&state.authority, None), Rotation::OldCaDropped)
    } else {
        return Ok(Rotation::Unchanged);
    };
    secret.data = Some(data);
    // `replace` carries the resourceVersion read above: a concurrent writer makes this fail
    // instead of being overwritten, and the next check retries.
    secrets
        .replace(naming::CA_SECRET_NAME, &PostParams::default(), &secret)
        .await
        .context(|| format!("updating Secret {}", naming::CA_SECRET_NAME))?;
    tracing::info!(?outcome, "rotated the CA");
    Ok(outcome)
}

/// Tells every controller that the CA changed, so they re-issue certificates and re-write
/// webhook `caBundle`s.
#[derive(Debug, Default)]
pub struct RotationSignal {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<()>>>,
}

impl RotationSignal {
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<()> {
        let (sender, receiver) = mpsc::unbounded();
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers.push(sender);
        }
        receiver
    }

    pub fn notify(&self) {
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers.retain(|s| s.unbounded_send(()).is_ok());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_lists_current_then_old() {
        assert_eq!(bundle("A\n", Some("B\n")), "A\nB");
        assert_eq!(bundle("A\n", None), "A\n");
    }

    #[test]
    fn incomplete_secret_is_reported() {
        let secret = Secret::default();
        let err = state_from(&secret).expect_err("no data");
        assert!(err.to_string().contains("lacks ca.crt"), "{err}");
    }
}
