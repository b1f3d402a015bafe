-- The attempt ledger: one row per claim of a run, written by the claim statement itself and
-- closed by the statement that ends the lease (under the same lease-token fence), so it says
-- who held each attempt and how it ended.
CREATE TABLE run_attempts (
    run_id      BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt     INT NOT NULL,
    worker_id   UUID,                 -- the worker that claimed it
    claimed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at    TIMESTAMPTZ,
    ending      TEXT CHECK (ending IN ('completed', 'failed', 'released', 'expired', 'cancelled')),  -- NULL while held
    reason      TEXT,                 -- the failure/release reason, when there is one
    PRIMARY KEY (run_id, attempt),
    CHECK ((ending IS NULL) = (ended_at IS NULL))
);
-- A run is completed by at most one attempt.
CREATE UNIQUE INDEX run_attempts_one_completed ON run_attempts (run_id) WHERE ending = 'completed';

-- Attempts from before the ledger are unknown but for the last one of a finished or running run.
INSERT INTO run_attempts (run_id, attempt, worker_id, claimed_at, ended_at, ending)
SELECT id, attempt, last_worker, COALESCE(started_at, queued_at), COALESCE(finished_at, now()), 'completed'
FROM runs WHERE state = 'done';
INSERT INTO run_attempts (run_id, attempt, worker_id, claimed_at)
SELECT id, attempt, lease_owner, COALESCE(started_at, queued_at)
FROM runs WHERE state = 'running';

-- A worker is bound to the API token that registered it: only that token may act for it and
-- on the runs it holds. Workers registered before this have none and must register again.
ALTER TABLE workers ADD COLUMN token_id BIGINT REFERENCES api_tokens(id);
