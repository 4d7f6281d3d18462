-- pgbench custom script: one pgbench transaction = the three database
-- transactions one order goes through in the lab, with the lab's own SQL.
--
--   1. create   (orders::create_order)  BEGIN; INSERT order ... ON CONFLICT DO
--               NOTHING RETURNING; INSERT job; pg_notify; COMMIT
--   2. claim    (queue::claim_next_job) UPDATE ... FROM (SELECT ... FOR UPDATE
--               SKIP LOCKED LIMIT 1) RETURNING, autocommit
--   3. complete (queue::complete_paid -> queue::finish) job done + order paid
--               in one statement, autocommit
--
-- Run it on a database that has the lab's schema (lab-service/migrations),
-- with prepared statements as sqlx uses them, and defaults for the claim's
-- variables (see below). The pipeline bench does all of this:
--
--   pgbench -n -M prepared -f bench/pgbench/order_pipeline.sql -c 32 -j 2 -T 20 --no-vacuum \
--     -D c_job_id=0 -D c_lease_token=00000000-0000-0000-0000-000000000000 <database url>
--
-- What differs from the app, and why it does not matter for the statement mix:
-- * Values the app binds from Rust are computed here in SQL or by pgbench:
--   the order id is a time-ordered (UUIDv7-like) uuid like `Uuid::now_v7()`,
--   so the primary key index sees the same append-mostly pattern; the
--   idempotency key and request id are random uuid text like the bench
--   clients' keys and tower-http's x-request-id; `request_hash` is a constant
--   64-hex string standing in for the SHA-256 of the body.
-- * The claim may take any due job (another client's), as any worker may.
-- * `\aset` (not `\gset`) after the claim: with SKIP LOCKED a claim can, rarely,
--   find every due job locked by other clients and return no row; the app's
--   worker then just sleeps. Here the variables keep their previous value (or
--   the -D default), the complete statement matches no running job and
--   updates nothing, exactly like a worker whose lease was lost.
-- * 5 = ApiConfig::default().max_job_attempts; 30 s = WorkerConfig::default().lease;
--   'relab_jobs' = db::JOBS_CHANNEL.

\set amount random(100, 100000)

-- 1. create: orders::create_order (one transaction, 5 round trips like sqlx)
BEGIN;
INSERT INTO orders (id, idempotency_key, request_hash, request_id, customer_id, amount_cents, currency)
         VALUES ((lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7'
                  || substr(replace(gen_random_uuid()::text, '-', ''), 14, 19))::uuid,
                 gen_random_uuid()::text,
                 'f3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
                 gen_random_uuid()::text, 'c-1', :amount, 'EUR')
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING id, idempotency_key, customer_id, amount_cents, currency, status, charge_id, failure_reason, created_at, updated_at, finished_at
\gset o_
INSERT INTO jobs (order_id, max_attempts) VALUES (:o_id, 5);
SELECT pg_notify('relab_jobs', '');
COMMIT;

-- 2. claim: queue::claim_next_job (owner = this client, lease = 30 s)
WITH next AS (
             SELECT id FROM jobs
             WHERE status = 'queued' AND run_at <= clock_timestamp()
             ORDER BY run_at
             LIMIT 1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE jobs j
         SET status = 'running', lease_owner = 'pgbench-' || :client_id, lease_token = gen_random_uuid(),
             lease_expires_at = clock_timestamp() + make_interval(secs => 30),
             claims = claims + 1, updated_at = clock_timestamp()
         FROM next, orders o
         WHERE j.id = next.id AND o.id = j.order_id
         RETURNING j.id AS job_id, j.order_id, j.attempts, j.max_attempts, j.lease_token,
                   o.amount_cents, o.currency, o.request_id
\aset c_

-- 3. complete: queue::complete_paid = finish(job, 'done', 'paid', false, Some(charge_id), None)
-- (the charge id: the mock returns a uuid; the lease token is one at hand)
WITH j AS (
             UPDATE jobs SET status = 'done', attempts = attempts + 0, lease_owner = NULL, lease_token = NULL,
                             lease_expires_at = NULL, last_error = COALESCE(NULL::text, last_error),
                             finished_at = clock_timestamp(), updated_at = clock_timestamp()
             WHERE id = :c_job_id AND lease_token = :c_lease_token AND status = 'running'
             RETURNING order_id
         )
         UPDATE orders o SET status = 'paid', charge_id = :c_lease_token, failure_reason = NULL::text,
                             finished_at = clock_timestamp(), updated_at = clock_timestamp()
         FROM j WHERE o.id = j.order_id
         RETURNING o.created_at, o.finished_at;
