-- The agent loop: step timings, and model calls that are idempotent per run attempt and carry
-- their last failure.
ALTER TABLE steps
    ADD COLUMN llm_ms      BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN command_ms  BIGINT NOT NULL DEFAULT 0;

ALTER TABLE llm_calls
    ADD COLUMN call_index  INT,
    ADD COLUMN error       TEXT;
-- A re-sent upload inserts (and charges) nothing twice.
CREATE UNIQUE INDEX llm_calls_once ON llm_calls (run_id, attempt, call_index);
