-- steerbench schema, version 1.
-- Money is NUMERIC (exact dollars), never floating point.
-- Run and sweep states are text with CHECK constraints (readable in psql, easy to extend).

CREATE TABLE datasets (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    source      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE instances (
    dataset_id               BIGINT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    instance_id              TEXT NOT NULL,
    repo                     TEXT NOT NULL,
    base_commit              TEXT NOT NULL,
    patch                    TEXT NOT NULL,
    test_patch               TEXT NOT NULL,
    problem_statement        TEXT NOT NULL,
    hints_text               TEXT NOT NULL DEFAULT '',
    created_at               TEXT,
    version                  TEXT NOT NULL,
    environment_setup_commit TEXT,
    fail_to_pass             JSONB NOT NULL,
    pass_to_pass             JSONB NOT NULL,
    difficulty               TEXT,
    image                    TEXT,
    eval_script              TEXT,
    log_parser               TEXT,
    extra                    JSONB NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (dataset_id, instance_id)
);

CREATE TABLE sweeps (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT NOT NULL,
    config_hash     TEXT NOT NULL,
    config_toml     TEXT NOT NULL,                 -- as submitted
    spec            JSONB NOT NULL,                -- as validated
    dataset_id      BIGINT NOT NULL REFERENCES datasets(id),
    state           TEXT NOT NULL DEFAULT 'running'
                    CHECK (state IN ('running', 'paused', 'cancelled', 'stopped', 'completed')),
    stop_reason     TEXT,
    max_attempts    INT NOT NULL CHECK (max_attempts >= 1),
    max_running     INT CHECK (max_running >= 1),
    budget_usd      NUMERIC CHECK (budget_usd >= 0),
    spent_usd       NUMERIC NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    UNIQUE (name, config_hash)
);

-- An LLM endpoint shared by every worker of the fleet: its concurrency cap is fleet-wide.
CREATE TABLE endpoints (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    base_url         TEXT NOT NULL UNIQUE,
    max_concurrency  INT CHECK (max_concurrency >= 1)
);

CREATE TABLE agents (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sweep_id             BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    name                 TEXT NOT NULL,
    endpoint_id          BIGINT NOT NULL REFERENCES endpoints(id),
    model                TEXT NOT NULL,
    price_input_per_mtok NUMERIC NOT NULL,
    price_output_per_mtok NUMERIC NOT NULL,
    price_cached_per_mtok NUMERIC NOT NULL,
    max_steps            INT NOT NULL,
    max_cost_usd         NUMERIC,
    max_wall_time_s      BIGINT NOT NULL,
    spec                 JSONB NOT NULL,
    UNIQUE (sweep_id, name)
);

CREATE TABLE critics (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sweep_id  BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    params    JSONB NOT NULL DEFAULT '{}'::jsonb,
    spec      JSONB NOT NULL,
    UNIQUE (sweep_id, name)
);

CREATE TABLE workers (
    id              UUID PRIMARY KEY,
    name            TEXT NOT NULL,
    host            TEXT NOT NULL,
    slots           INT NOT NULL,
    capabilities    JSONB NOT NULL DEFAULT '{}'::jsonb,
    version         TEXT NOT NULL,
    draining        BOOLEAN NOT NULL DEFAULT false,
    registered_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_heartbeat  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sweep_id         BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    dataset_id       BIGINT NOT NULL,
    instance_id      TEXT NOT NULL,
    agent_id         BIGINT NOT NULL REFERENCES agents(id),
    critic_id        BIGINT NOT NULL REFERENCES critics(id),
    endpoint_id      BIGINT NOT NULL REFERENCES endpoints(id),   -- denormalised for the cap check
    repeat_index     INT NOT NULL,
    -- Dispatch order: start-time fair queueing across sweeps (see queue module).
    fair_seq         BIGINT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'paused', 'done', 'error', 'cancelled')),
    attempt          INT NOT NULL DEFAULT 0,       -- claims so far
    failed_attempts  INT NOT NULL DEFAULT 0,       -- expired leases and infra failures
    lease_owner      UUID,                         -- the worker holding the lease (running only)
    last_worker      UUID,                         -- the last worker that held it
    lease_token      UUID,                         -- new on every claim; kept after completion
    lease_expires_at TIMESTAMPTZ,
    queued_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    outcome          TEXT,
    last_error       TEXT,
    detail           TEXT,
    patch            TEXT,
    steps            INT NOT NULL DEFAULT 0,
    input_tokens     BIGINT NOT NULL DEFAULT 0,
    output_tokens    BIGINT NOT NULL DEFAULT 0,
    cached_tokens    BIGINT NOT NULL DEFAULT 0,
    agent_cost_usd   NUMERIC NOT NULL DEFAULT 0,
    critic_cost_usd  NUMERIC NOT NULL DEFAULT 0,
    FOREIGN KEY (dataset_id, instance_id) REFERENCES instances(dataset_id, instance_id),
    UNIQUE (sweep_id, instance_id, agent_id, critic_id, repeat_index),
    -- A running run always has a complete lease; nothing else has an owner.
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- The claim query: queued runs in dispatch order.
CREATE INDEX runs_claim ON runs (fair_seq, id) WHERE state = 'queued';
-- Lease expiry scan and the per-endpoint / per-sweep running counts.
CREATE INDEX runs_running_expiry ON runs (lease_expires_at) WHERE state = 'running';
CREATE INDEX runs_running_endpoint ON runs (endpoint_id) WHERE state = 'running';
CREATE INDEX runs_running_owner ON runs (lease_owner) WHERE state = 'running';
-- Status and report queries.
CREATE INDEX runs_sweep_state ON runs (sweep_id, state);
CREATE INDEX runs_sweep_outcome ON runs (sweep_id, outcome) WHERE state = 'done';

CREATE TABLE steps (
    run_id         BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt        INT NOT NULL,
    step_index     INT NOT NULL,
    action         TEXT,
    observation    TEXT,
    exit_code      INT,
    duration_ms    BIGINT NOT NULL DEFAULT 0,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    cached_tokens  BIGINT NOT NULL DEFAULT 0,
    cost_usd       NUMERIC NOT NULL DEFAULT 0,
    messages       JSONB NOT NULL DEFAULT 'null'::jsonb,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, attempt, step_index)
);

CREATE TABLE llm_calls (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id            BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt           INT NOT NULL,
    step_index        INT,
    endpoint_id       BIGINT REFERENCES endpoints(id),
    model             TEXT NOT NULL,
    status            TEXT NOT NULL,
    http_status       INT,
    retries           INT NOT NULL DEFAULT 0,
    latency_ms        BIGINT NOT NULL,
    input_tokens      BIGINT NOT NULL DEFAULT 0,
    output_tokens     BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens  BIGINT NOT NULL DEFAULT 0,
    tokens_estimated  BOOLEAN NOT NULL DEFAULT false,
    cost_usd          NUMERIC NOT NULL DEFAULT 0,
    finish_reason     TEXT,
    recorded_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX llm_calls_run ON llm_calls (run_id);

CREATE TABLE critic_calls (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt        INT NOT NULL,
    step_index     INT NOT NULL,
    critic_id      BIGINT REFERENCES critics(id),
    decision       TEXT NOT NULL,
    feedback       TEXT,
    score          DOUBLE PRECISION,      -- a probability, not money
    status         TEXT NOT NULL,
    latency_ms     BIGINT NOT NULL,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    cost_usd       NUMERIC NOT NULL DEFAULT 0,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX critic_calls_run ON critic_calls (run_id);

CREATE TABLE evaluations (
    run_id        BIGINT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    attempt       INT NOT NULL,
    apply_status  TEXT NOT NULL,
    resolved      BOOLEAN NOT NULL,
    tests         JSONB NOT NULL DEFAULT '{}'::jsonb,
    report        JSONB NOT NULL DEFAULT '{}'::jsonb,
    recorded_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'user', 'worker')),
    token_hash  TEXT NOT NULL UNIQUE,      -- sha256 hex of the token; the token itself is never stored
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
