-- transitions: running -> done
-- attempt: open -> completed
-- Records a finished run, its evaluation and its cost in one statement (data-modifying CTEs
-- always run to completion, read or not), and closes its attempt in the ledger. Fencing: only
-- the current lease holder can complete it, and only through the API token that registered
-- the holder ($16; NULL: a worker registered without one). Whether the sweep is now finished
-- is left to the maintenance loop (queue::finish_sweeps): asking here walks the sweep's dead
-- index entries on every completion.
WITH done AS (
    UPDATE runs
    SET state            = 'done',
        outcome          = $3,
        lease_owner      = NULL,
        lease_expires_at = NULL,
        finished_at      = now(),
        patch            = $4,
        detail           = $5,
        steps            = $6,
        input_tokens     = $7,
        output_tokens    = $8,
        cached_tokens    = $9,
        agent_cost_usd   = $10,
        critic_cost_usd  = $11
    WHERE id = $1 AND lease_token = $2 AND state = 'running'
      AND EXISTS (SELECT 1 FROM workers w WHERE w.id = runs.lease_owner AND w.token_id IS NOT DISTINCT FROM $16)
    RETURNING id, sweep_id, attempt
), closed AS (
    UPDATE run_attempts a SET ending = 'completed', ended_at = now()
    FROM done WHERE a.run_id = done.id AND a.attempt = done.attempt
), evaluation AS (
    INSERT INTO evaluations (run_id, attempt, apply_status, resolved, tests, report, test_output, eval_script,
                             instance_log)
    SELECT id, attempt, $12, $13, $14, $15, $17, $18, $19 FROM done WHERE $12::text IS NOT NULL
    RETURNING run_id
), charged AS (
    -- Model and critic calls were charged as they were uploaded; only the rest of the run's cost (e.g. a
    -- placeholder's synthetic cost) is charged here.
    UPDATE sweeps s SET spent_usd = s.spent_usd + GREATEST(
        ($10::numeric + $11::numeric)
            - (SELECT COALESCE(sum(c.cost_usd), 0) FROM llm_calls c
               WHERE c.run_id = done.id AND c.attempt = done.attempt AND c.call_index IS NOT NULL)
            - (SELECT COALESCE(sum(c.cost_usd), 0) FROM critic_calls c
               WHERE c.run_id = done.id AND c.attempt = done.attempt AND c.call_index IS NOT NULL),
        0)
    FROM done WHERE s.id = done.sweep_id AND ($10::numeric + $11::numeric) <> 0
    RETURNING s.id
)
SELECT d.sweep_id FROM done d
