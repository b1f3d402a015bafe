-- Critic calls as the critic executor records them: what fired the call, the model, where it
-- ran, its batch, the exact prompt, and its failure; idempotent per run attempt.
ALTER TABLE critic_calls
    ADD COLUMN call_index  INT,
    ADD COLUMN kind        TEXT NOT NULL DEFAULT 'none',
    ADD COLUMN model       TEXT,
    ADD COLUMN trigger     TEXT,
    ADD COLUMN device      TEXT,
    ADD COLUMN batch_size  INT,
    ADD COLUMN prompt      JSONB NOT NULL DEFAULT 'null'::jsonb,
    ADD COLUMN error       TEXT;
CREATE UNIQUE INDEX critic_calls_once ON critic_calls (run_id, attempt, call_index);
