//! Batched claims and completions keep the single-job contract: each job of
//! a batch has its own lease, each completion is fenced by it, and a worker
//! that dies in the middle of a batch loses nothing and charges nothing twice.

use crate::harness::{fast_worker, LabOptions, TestLab};
use lab_service::payment_client::PaymentClient;
use lab_service::queue::{self, PaidJob};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_and_double_charges_nothing() {
    // Arrange: six orders and no workers yet
    let mut lab = TestLab::start(LabOptions {
        worker: None,
        ..LabOptions::default()
    })
    .await;
    let mut orders = Vec::new();
    for n in 0..6 {
        orders.push(lab.create_order(1_000 + n).await.id);
    }

    // Act 1: the doomed worker claims all six in one statement (1 s leases),
    // charges three of them, records the first charge only, and dies
    let pool = &lab.db.pool.clone();
    let batch = queue::claim_jobs(pool, "doomed", Duration::from_secs(1), 10)
        .await
        .unwrap();
    assert_eq!(batch.len(), 6, "one claim takes every due job up to the limit");
    let tokens: HashSet<Uuid> = batch.iter().map(|j| j.lease_token).collect();
    assert_eq!(tokens.len(), 6, "every job of a batch has a lease token of its own");
    assert!(
        queue::claim_jobs(pool, "other", Duration::from_secs(30), 10)
            .await
            .unwrap()
            .is_empty(),
        "a claimed batch is locked to its worker"
    );
    let client = PaymentClient::new(&lab.mock_url, Duration::from_secs(2), true).unwrap();
    let mut charged = Vec::new();
    for job in &batch[..3] {
        charged.push(client.charge(job).await.expect("healthy mock").charge_id);
    }
    let recorded = queue::complete_paid_batch(
        pool,
        &[PaidJob {
            job_id: batch[0].job_id,
            lease_token: batch[0].lease_token,
            charge_id: charged[0].clone(),
        }],
    )
    .await
    .unwrap();
    assert_eq!(recorded.len(), 1);

    // Act 2: a live worker takes over once the leases expire (its reaper re-queues them)
    lab.spawn_workers(fast_worker()).await;
    for id in &orders {
        lab.wait_for_status(*id, "paid", Duration::from_secs(20)).await;
    }
    // the dead worker's late completions, with its stale tokens, change nothing
    let late: Vec<PaidJob> = batch[1..]
        .iter()
        .map(|j| PaidJob {
            job_id: j.job_id,
            lease_token: j.lease_token,
            charge_id: "stale".into(),
        })
        .collect();
    assert!(
        queue::complete_paid_batch(pool, &late).await.unwrap().is_empty(),
        "every late completion is fenced by its own lease"
    );

    // Assert: each job taken over exactly once, each order charged exactly once
    let claims: Vec<(i64, i32, String)> =
        sqlx::query_as("SELECT id, claims, status FROM jobs WHERE order_id = ANY($1) ORDER BY id")
            .bind(&orders)
            .fetch_all(pool)
            .await
            .unwrap();
    for (id, claims, status) in &claims {
        assert_eq!(status, "done", "job {id}");
        let expected = if *id == batch[0].job_id { 1 } else { 2 };
        assert_eq!(
            *claims, expected,
            "job {id}: the doomed claim, plus one takeover if unrecorded"
        );
    }
    let ledger = lab.ledger().await;
    for id in &orders {
        assert_eq!(
            ledger.iter().filter(|c| c.order_id == *id).count(),
            1,
            "order {id} charged exactly once"
        );
    }
    for (job, charge) in batch.iter().zip(&charged) {
        let order = lab.get_order(job.order_id).await;
        assert_eq!(
            order.charge_id.as_deref(),
            Some(charge.as_str()),
            "the takeover replays the dead worker's charge"
        );
    }
    let report = lab.audit(Some(&orders)).await;
    assert!(report.passed(), "{report:?}");
    assert_eq!((report.charges, report.extra_charges), (6, 0));
    lab.stop().await;
}

#[tokio::test]
async fn a_batch_completion_fences_each_job_by_its_own_lease() {
    let lab = TestLab::start(LabOptions {
        worker: None,
        ..LabOptions::default()
    })
    .await;
    let (a, b) = (lab.create_order(100).await.id, lab.create_order(200).await.id);
    let pool = &lab.db.pool;
    let batch = queue::claim_jobs(pool, "w1", Duration::from_secs(30), 2).await.unwrap();
    assert_eq!(batch.len(), 2);
    // b's lease is taken over (say it expired): w1's token for b is stale
    let stale = batch.iter().find(|j| j.order_id == b).unwrap();
    sqlx::query("UPDATE jobs SET lease_token = gen_random_uuid(), lease_owner = 'w2' WHERE id = $1")
        .bind(stale.job_id)
        .execute(pool)
        .await
        .unwrap();

    let paid: Vec<PaidJob> = batch
        .iter()
        .map(|j| PaidJob {
            job_id: j.job_id,
            lease_token: j.lease_token,
            charge_id: format!("ch-{}", j.order_id),
        })
        .collect();
    let finished = queue::complete_paid_batch(pool, &paid).await.unwrap();

    let fresh = batch.iter().find(|j| j.order_id == a).unwrap();
    assert_eq!(finished.iter().map(|f| f.0).collect::<Vec<_>>(), vec![fresh.job_id]);
    assert_eq!(lab.get_order(a).await.status, "paid");
    assert_eq!(
        lab.get_order(b).await.status,
        "pending",
        "the stale half of the batch changed nothing"
    );
    let owner: Option<String> = sqlx::query_scalar("SELECT lease_owner FROM jobs WHERE id = $1")
        .bind(stale.job_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(owner.as_deref(), Some("w2"));
    lab.stop().await;
}

#[tokio::test]
async fn a_claim_walks_the_queue_index_from_its_head_whatever_the_statistics() {
    // Arrange: 5,000 due jobs on a table that was never analyzed (autovacuum
    // off for it, as on a new database before autovacuum's first analyze):
    // planned on those estimates, `ORDER BY run_at LIMIT n` read every
    // queued job and sorted them all, for every claim (the slow mode of the
    // pipeline bench, docs/benchmarks.md)
    let lab = TestLab::start(LabOptions {
        worker: None,
        ..LabOptions::default()
    })
    .await;
    let pool = &lab.db.pool;
    sqlx::query("ALTER TABLE jobs SET (autovacuum_enabled = false)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "WITH o AS (
             INSERT INTO orders (id, idempotency_key, request_hash, customer_id, amount_cents, currency)
             SELECT gen_random_uuid(), 'plan-' || g, 'h', 'c-1', 100, 'EUR' FROM generate_series(1, 5000) g
             RETURNING id)
         INSERT INTO jobs (order_id, max_attempts) SELECT id, 5 FROM o",
    )
    .execute(pool)
    .await
    .unwrap();

    // Act: claim 8 in a transaction, and read how many entries of the
    // queue's index this transaction read
    let mut tx = pool.begin().await.unwrap();
    let batch = queue::claim_jobs(&mut *tx, "w1", Duration::from_secs(30), 8)
        .await
        .unwrap();
    let (read,): (i64,) = sqlx::query_as("SELECT pg_stat_get_xact_tuples_returned('jobs_queued_due'::regclass)")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // Assert: the 8 oldest, from the first few entries of the index
    assert_eq!(batch.len(), 8);
    assert!(
        read <= 64,
        "the claim read {read} entries of jobs_queued_due for 8 jobs: it scanned the queue instead of walking its head"
    );
}
