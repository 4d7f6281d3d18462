//! Dead letters: visible through the API and a metric, and replayable.

use crate::harness::{eventually, fast_worker, TestLab};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn exhausted_jobs_are_dead_lettered_listed_and_replayed_to_paid() {
    let mut worker = fast_worker();
    worker.retry_max_attempts = 2;
    let lab = TestLab::with_faults(worker, json!({"base": {"failureRate": 1.0}}), 2).await;

    let order = lab.create_order(4200).await;
    lab.wait_for_status(order.id, "dead_lettered", Duration::from_secs(15))
        .await;

    let list: Value = lab.get_json("/dead-letters").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["orderId"], order.id.to_string());
    assert_eq!(items[0]["attempts"], 2);
    assert!(items[0]["lastError"].as_str().unwrap().contains("status_5xx"));
    eventually(Duration::from_secs(5), "dead-letter depth gauge shows 1", || async {
        lab.metric("relab_dead_letter_depth", &[]) == 1.0
    })
    .await;
    assert_eq!(
        lab.metric("relab_worker_jobs_total", &[("outcome", "dead_lettered")]),
        1.0
    );

    // the dependency recovers; the operator replays the dead letter
    lab.set_faults(json!({"base": {}})).await;
    let replay = lab.post(&format!("/dead-letters/{}/replay", order.id)).await;
    assert_eq!(replay.status(), 202);
    lab.wait_for_status(order.id, "paid", Duration::from_secs(10)).await;

    let ledger = lab.ledger().await;
    assert_eq!(ledger.iter().filter(|c| c.order_id == order.id).count(), 1);
    let list: Value = lab.get_json("/dead-letters").await;
    assert!(list["items"].as_array().unwrap().is_empty());
    let again = lab.post(&format!("/dead-letters/{}/replay", order.id)).await;
    assert_eq!(again.status(), 409, "a paid order is not a dead letter");
    let unknown = lab.post(&format!("/dead-letters/{}/replay", Uuid::new_v4())).await;
    assert_eq!(unknown.status(), 404);
    lab.stop().await;
}
