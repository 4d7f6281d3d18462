-- Orders and their payment jobs (the outbox/queue). The invariants the lab
-- audits are also kept by the database where it can keep them.

CREATE TABLE orders (
    id               uuid        PRIMARY KEY,
    idempotency_key  text        NOT NULL,
    request_hash     text        NOT NULL,
    request_id       text,
    customer_id      text        NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 128),
    amount_cents     bigint      NOT NULL CHECK (amount_cents > 0),
    currency         text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'paid', 'failed', 'dead_lettered')),
    charge_id        text,
    failure_reason   text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz,
    CONSTRAINT orders_idempotency_key_unique UNIQUE (idempotency_key),
    -- a paid order names its charge; a pending one has not finished
    CONSTRAINT orders_paid_has_charge CHECK (status <> 'paid' OR charge_id IS NOT NULL),
    CONSTRAINT orders_finished_iff_final CHECK ((status = 'pending') = (finished_at IS NULL))
);

CREATE INDEX orders_status_id ON orders (status, id);

CREATE TABLE jobs (
    id               bigserial   PRIMARY KEY,
    order_id         uuid        NOT NULL UNIQUE REFERENCES orders (id) ON DELETE CASCADE,
    status           text        NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'done', 'dead')),
    -- payment attempts spent (breaker/bulkhead deferrals do not spend one)
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
    -- how many times a worker claimed it (a crash loop shows up here)
    claims           integer     NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz,
    CONSTRAINT jobs_running_has_lease CHECK (
        (status = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- the claim query's two paths: due queued jobs, and running jobs whose lease expired
CREATE INDEX jobs_queued_due ON jobs (run_at) WHERE status = 'queued';
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'running';
