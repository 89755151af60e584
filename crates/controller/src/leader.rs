//! Leader election on a coordination.k8s.io Lease, so that only one controller replica writes
//! at a time. The lease is taken when free or expired, renewed well before it expires, and
//! losing it ends the leader's work (the process exits and restarts as a candidate).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::error::{Error, KubeResultExt};

/// Name of the Lease (upstream's controller-runtime election ID).
pub const LEASE_NAME: &str = "a4ddbf36.kubewarden.io";

#[derive(Debug, Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    identity: String,
    lease_duration: Duration,
    renew_every: Duration,
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, identity: impl Into<String>) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) -> Result<(), Error> {
        let mut logged = false;
        loop {
            if self.try_acquire_or_renew().await? {
                tracing::info!(identity = %self.identity, lease = LEASE_NAME, "became the leader");
                return Ok(());
            }
            if !logged {
                tracing::info!(lease = LEASE_NAME, "waiting for the leader lease");
                logged = true;
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }

    /// Renews the lease until it is lost; returns why. Transient API errors are retried while
    /// the lease is still valid.
    pub async fn hold(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    return Error::Invalid(format!(
                        "another replica took the leader lease {LEASE_NAME}"
                    ));
                }
                Err(err) if last_renewal.elapsed() >= self.lease_duration => return err,
                Err(err) => tracing::warn!(error = %err, "cannot renew the leader lease; retrying"),
            }
        }
    }

    /// Gives the lease up so another replica can take over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(err) = self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %err, "cannot release the leader lease");
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let existing = self
            .api
            .get_opt(LEASE_NAME)
            .await
            .context(|| format!("reading Lease {LEASE_NAME}"))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(err) => Err(err).context(|| format!("creating Lease {LEASE_NAME}")),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours && !expired(spec, &now) {
            return Ok(false);
        }
        if !ours {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.lease_seconds());
        spec.renew_time = Some(now);
        // The resourceVersion read above makes a concurrent taker lose with 409.
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err).context(|| format!("updating Lease {LEASE_NAME}")),
        }
    }
}

fn expired(spec: &LeaseSpec, now: &MicroTime) -> bool {
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let Some(renewed) = &spec.renew_time else {
        return true;
    };
    let duration =
        jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed
        .0
        .checked_add(duration)
        .is_ok_and(|until| until < now.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> MicroTime {
        MicroTime(jiff::Timestamp::from_second(seconds).expect("timestamp"))
    }

    #[test]
    fn lease_expiry() {
        let spec = LeaseSpec {
            holder_identity: Some("other".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(at(100)),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec, &at(110)));
        assert!(expired(&spec, &at(116)));
        let released = LeaseSpec {
            holder_identity: None,
            ..spec
        };
        assert!(expired(&released, &at(101)));
    }
}
