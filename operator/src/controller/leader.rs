//! Leader election on a `coordination.k8s.io/v1` Lease, for running more
//! than one operator replica: one reconciles, the others stand by.
//!
//! Hand-written (about 100 lines) because the crates that did this for kube-rs
//! trail kube's releases; the protocol is client-go's: the holder renews
//! `renewTime` every `renew`; another replica takes the Lease over only when
//! `renewTime + leaseDurationSeconds` has passed, with an update guarded by
//! the resourceVersion, so two candidates cannot both win. A leader that
//! cannot renew within the lease duration stops reconciling (the process
//! exits and its pod restarts as a candidate).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Who competes for which Lease, and how fast.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew: Duration,
}

impl Election {
    fn api(&self, client: &Client) -> Api<Lease> {
        Api::namespaced(client.clone(), &self.namespace)
    }

    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let ours = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(self.identity.as_str()));
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(
                previous.and_then(|p| p.lease_transitions).unwrap_or(0) + i32::from(!ours && previous.is_some()),
            ),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to take or renew the Lease: Ok(true) when we hold it now.
    pub async fn try_acquire(&self, client: &Client) -> Result<bool, kube::Error> {
        let api = self.api(client);
        match api.get_opt(&self.lease).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.lease.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(None)),
                };
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
                    (Some(MicroTime(at)), Some(secs)) => at
                        .checked_add(SignedDuration::from_secs(i64::from(secs)))
                        .is_ok_and(|until| Timestamp::now() > until),
                    _ => true,
                };
                if !ours && !expired && spec.holder_identity.is_some() {
                    return Ok(false);
                }
                lease.spec = Some(self.spec(Some(&spec)));
                match api.replace(&self.lease, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    // another candidate updated it first (resourceVersion guard)
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Wait until this replica holds the Lease (or `stop`). Returns false on stop.
    pub async fn acquire(&self, client: &Client, stop: &CancellationToken) -> bool {
        loop {
            match self.try_acquire(client).await {
                Ok(true) => {
                    tracing::info!(lease = %self.lease, identity = %self.identity, "became the leader");
                    return true;
                }
                Ok(false) => tracing::debug!(lease = %self.lease, "another replica leads; standing by"),
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.lease, "leader election: cannot read or write the Lease")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(self.renew) => {}
            }
        }
    }

    /// Renew the Lease until `stop`; cancels `lost` (and returns) when it
    /// could not be renewed for a whole lease duration or another replica
    /// holds it.
    pub async fn keep(&self, client: &Client, stop: CancellationToken, lost: CancellationToken) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.renew) => {}
            }
            match self.try_acquire(client).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.lease, "another replica took the Lease over: stopping");
                    lost.cancel();
                    return;
                }
                Err(e) if last_renewed.elapsed() >= self.lease_duration => {
                    tracing::error!(error = %e, lease = %self.lease, "could not renew the Lease in time: stopping");
                    lost.cancel();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the Lease failed; retrying"),
            }
        }
    }
}
