-- The claim as a function whose plan does not depend on the statistics.
--
-- `ORDER BY run_at LIMIT n FOR UPDATE SKIP LOCKED` has two plans: walk
-- jobs_queued_due in run_at order and stop after n rows, or read every
-- queued job (bitmap scan) and sort them all to take the first n. The
-- planner takes the second whenever it believes few jobs are queued: on a
-- new database (no statistics until autovacuum's next analyze, up to a
-- minute away) or with statistics taken while the queue was short. With
-- 10,000 jobs queued that claim costs 4 ms of server CPU instead of
-- 0.04 ms, and the lab pays about half as fast: the "slow mode" of the
-- pipeline bench, which came and went from one round to the next with
-- autovacuum's timing (docs/benchmarks.md). Planned with sorting disabled,
-- the claim always walks the index. A SQL function's body is planned when
-- it runs, under the function's own settings; the setting ends with the
-- call (the claim's `synchronous_commit = off`, set inside, is the
-- transaction's, as before: see queue::claim_jobs).
CREATE FUNCTION claim_jobs(owner text, lease_seconds double precision, max_jobs bigint)
RETURNS TABLE (job_id bigint, order_id uuid, attempts integer, max_attempts integer,
               lease_token uuid, amount_cents bigint, currency text, request_id text)
LANGUAGE sql VOLATILE
SET enable_sort = off
AS $$
    WITH async_commit AS (
        SELECT set_config('synchronous_commit', 'off', true)
    ), next AS (
        SELECT id FROM jobs
        WHERE status = 'queued' AND run_at <= clock_timestamp()
        ORDER BY run_at
        LIMIT max_jobs
        FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs j
    SET status = 'running', lease_owner = owner, lease_token = gen_random_uuid(),
        lease_expires_at = clock_timestamp() + make_interval(secs => lease_seconds),
        claims = j.claims + 1, updated_at = clock_timestamp()
    FROM next, orders o, async_commit
    WHERE j.id = next.id AND o.id = j.order_id
    RETURNING j.id, j.order_id, j.attempts, j.max_attempts, j.lease_token,
              o.amount_cents, o.currency, o.request_id
$$;
