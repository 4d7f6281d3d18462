//! `spec.notify.webhook`: one CloudEvents 1.0 event
//! (`dev.relab.experiment.finished`, structured JSON mode) per finished run,
//! POSTed to the URL in a Secret of the experiment's namespace.
//!
//! The delivery record is `status.notification`, written with the status
//! after every attempt and read before the next, so a restarted operator (or
//! a new leader) never sends a delivered run's event again. Failures retry
//! with backoff ([`BACKOFF`]); after the last attempt the record says
//! `Failed`, the `Notified` condition is False and a warning Event says why.
//! A failed delivery never fails the run. The event's `id` is stable per
//! run (`<uid>/<run>`): the one window left, a crash between the receiver's
//! answer and the status write, gives the receiver the same `id` twice.
//!
//! The decisions are pure ([`due`], [`recorded`]); [`deliver`] does the
//! reading of the Secret and the POST.

use super::build::Owner;
use super::machine::Note;
use crate::crd::{ReliabilityExperimentStatus, VerdictResult};
use chrono::{DateTime, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::Client;
use relab_model::ops::WebhookSpec;
use relab_model::status::{condition, parse_timestamp, set_condition, timestamp, Notification, NotificationState};
use relab_model::ValidatedExperiment;
use serde_json::json;
use std::time::Duration;

/// The CloudEvents `type` of a finished run.
pub const EVENT_TYPE: &str = "dev.relab.experiment.finished";

/// Waits before attempts 2, 3, ...: 7 attempts over about a minute.
pub const BACKOFF: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
];

/// How long one POST may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What the delivery of a finished run's event needs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Nothing: no webhook, the run is not finished, or it is delivered or given up.
    Nothing,
    /// Not yet: the next attempt is at this time.
    Later(DateTime<Utc>),
    /// Attempt now; the event's id.
    Now(String),
}

/// The delivery's next step for this status at `now` (pure).
pub fn due(
    experiment: &ValidatedExperiment,
    owner: &Owner,
    status: &ReliabilityExperimentStatus,
    now: DateTime<Utc>,
) -> Due {
    if webhook(experiment).is_none() || !status.phase.is_finished() {
        return Due::Nothing;
    }
    match &status.notification {
        None => Due::Now(event_id(owner)),
        Some(n) if n.state != NotificationState::Pending => Due::Nothing,
        Some(n) => match n.next_attempt_time.as_deref().and_then(parse_timestamp) {
            Some(at) if at > now => Due::Later(at),
            _ => Due::Now(n.event_id.clone()),
        },
    }
}

/// The status after an attempt that ended with `outcome` (Err: why, never
/// the URL), and its Events (pure).
pub fn recorded(
    status: &ReliabilityExperimentStatus,
    event_id: String,
    outcome: Result<(), String>,
    now: DateTime<Utc>,
) -> (ReliabilityExperimentStatus, Vec<Note>) {
    let mut s = status.clone();
    let mut n = s.notification.take().unwrap_or(Notification {
        event_id,
        ..Default::default()
    });
    n.attempts += 1;
    n.last_attempt_time = Some(timestamp(now));
    let generation = s.observed_generation;
    let (notes, c) = match outcome {
        Ok(()) => {
            n.state = NotificationState::Delivered;
            n.delivered_time = Some(timestamp(now));
            n.next_attempt_time = None;
            n.last_error = None;
            (
                vec![Note::normal(
                    "Notified",
                    format!("the webhook took the {EVENT_TYPE} event (attempt {})", n.attempts),
                )],
                condition(
                    "Notified",
                    "True",
                    "Delivered",
                    format!("the webhook took the event {} (attempt {})", n.event_id, n.attempts),
                    generation,
                    &timestamp(now),
                ),
            )
        }
        Err(why) => {
            let retry = BACKOFF.get(n.attempts as usize - 1);
            n.last_error = Some(why.clone());
            n.next_attempt_time = retry.map(|d| timestamp(now + chrono::Duration::from_std(*d).unwrap_or_default()));
            n.state = if retry.is_some() {
                NotificationState::Pending
            } else {
                NotificationState::Failed
            };
            let (reason, message) = match retry {
                Some(d) => (
                    "Retrying",
                    format!("attempt {} failed ({why}); next in {} s", n.attempts, d.as_secs()),
                ),
                None => (
                    "DeliveryFailed",
                    format!("gave up after {} attempts; the last: {why}", n.attempts),
                ),
            };
            (
                vec![Note::warning("NotificationFailed", format!("webhook: {message}"))],
                condition(
                    "Notified",
                    if retry.is_some() { "Unknown" } else { "False" },
                    reason,
                    message,
                    generation,
                    &timestamp(now),
                ),
            )
        }
    };
    s.notification = Some(n);
    set_condition(&mut s.conditions, c);
    (s, notes)
}

/// The run's CloudEvent, as the JSON the receiver gets (structured mode).
/// Its `time` is when the run finished (`now` for a status without one),
/// so every attempt sends the same event.
pub fn event(owner: &Owner, status: &ReliabilityExperimentStatus, id: &str, now: DateTime<Utc>) -> serde_json::Value {
    let time = status.finish_time.as_deref().and_then(parse_timestamp).unwrap_or(now);
    let namespace = owner.namespace.as_deref().unwrap_or_default();
    let names = &owner.names;
    let results = status.results.as_ref();
    let completed = relab_model::status::get_condition(&status.conditions, "Completed");
    let data = json!({
        "experiment": names.experiment,
        "namespace": namespace,
        "generation": names.generation,
        "scheduledRun": status.scheduled_run,
        "runId": status.run_id,
        "phase": status.phase,
        "reason": completed.map(|c| c.reason.clone()),
        "message": completed.map(|c| c.message.clone()),
        "verdict": status.verdict.as_ref().map(|v| v.result).unwrap_or(VerdictResult::Inconclusive),
        "objectives": status.verdict.as_ref().map(|v| v.objectives.clone()).unwrap_or_default(),
        "inconclusiveReasons": status.verdict.as_ref().map(|v| v.inconclusive_reasons.clone()).unwrap_or_default(),
        "startTime": status.start_time,
        "finishTime": status.finish_time,
        "figures": results.map(|r| json!({
            "successRatio": r.success_ratio,
            "apiP95Ms": r.api_latency_ms.p95,
            "endToEndP95Ms": r.end_to_end_latency_ms.p95,
            "ordersAccepted": r.orders.accepted,
            "ordersPaid": r.orders.paid,
            "lostOrders": r.invariants.lost_orders,
            "doubleCharges": r.invariants.double_charges,
            "stopped": r.stopped,
        })),
        "dashboard": status.dashboard,
    });
    let built = EventBuilderV10::new()
        .id(id)
        .ty(EVENT_TYPE)
        .source(format!(
            "/apis/relab.dev/v1alpha1/namespaces/{namespace}/reliabilityexperiments/{}",
            names.experiment
        ))
        .subject(names.experiment.clone())
        .time(time)
        .data("application/json", data)
        .build()
        .expect("a finished run's event has every required attribute");
    serde_json::to_value(built).expect("a CloudEvent serializes")
}

/// Read the URL from its Secret and POST `event` (structured mode).
/// Err: why, never the URL (it may carry a token).
pub async fn deliver(
    client: &Client,
    http: &reqwest::Client,
    namespace: &str,
    hook: &WebhookSpec,
    event: &serde_json::Value,
) -> Result<(), String> {
    let r = &hook.url_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("reading Secret {}: {e}", r.name))?
        .ok_or_else(|| format!("Secret {} (spec.notify.webhook.urlSecretRef) does not exist", r.name))?;
    let url = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .ok_or_else(|| format!("Secret {} has no key {:?}", r.name, r.key))?;
    let parsed = reqwest::Url::parse(&url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| format!("Secret {} key {:?} is not an http(s) URL", r.name, r.key))?;
    let answer = http
        .post(parsed)
        .header("content-type", "application/cloudevents+json; charset=utf-8")
        .timeout(TIMEOUT)
        .json(event)
        .send()
        .await
        // reqwest's errors name the URL: only the kind goes out
        .map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "request failed"
            };
            format!("POST {kind}")
        })?;
    let code = answer.status();
    if code.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {code}"))
    }
}

/// The webhook of the experiment, if any.
pub fn webhook(experiment: &ValidatedExperiment) -> Option<&WebhookSpec> {
    experiment.spec().notify.as_ref()?.webhook.as_ref()
}

/// The event id of a run: `<uid>/<run label>`, the same on every attempt.
pub fn event_id(owner: &Owner) -> String {
    format!("{}/{}", owner.reference.uid, owner.names.run_label())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Phase;

    fn at(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    #[test]
    fn failures_retry_with_backoff_then_give_up_and_a_delivery_is_final() {
        let finished = ReliabilityExperimentStatus {
            phase: Phase::Failed,
            ..Default::default()
        };
        let t0 = at("2026-12-04T03:00:00Z");
        let (s, notes) = recorded(&finished, "uid/3".into(), Err("the receiver answered 500".into()), t0);
        let n = s.notification.clone().unwrap();
        assert_eq!((n.state, n.attempts), (NotificationState::Pending, 1));
        assert_eq!(n.next_attempt_time.as_deref(), Some("2026-12-04T03:00:01Z"));
        assert!(notes[0].warning && notes[0].message.contains("500"), "{notes:?}");
        let mut s = s;
        for i in 2..=7 {
            s = recorded(&s, "uid/3".into(), Err("POST timed out".into()), t0).0;
            assert_eq!(s.notification.as_ref().unwrap().attempts, i);
        }
        let n = s.notification.clone().unwrap();
        assert_eq!(n.state, NotificationState::Failed, "7 attempts, then given up");
        let c = relab_model::status::get_condition(&s.conditions, "Notified").unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "DeliveryFailed"));
        assert_eq!(
            s.phase,
            Phase::Failed,
            "the run's phase is the verdict's, not the webhook's"
        );
        let (ok, _) = recorded(&finished, "uid/3".into(), Ok(()), t0);
        assert_eq!(ok.notification.unwrap().state, NotificationState::Delivered);
    }
}
