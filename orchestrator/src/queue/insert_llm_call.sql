-- Records one model call and charges its cost to the sweep as it happens (so a budget sees
-- money spent by runs still in flight, and by attempts that never finish). A re-sent upload
-- conflicts on (run_id, attempt, call_index): nothing is inserted or charged twice.
WITH ins AS (
    INSERT INTO llm_calls (run_id, attempt, call_index, step_index, endpoint_id, model, status,
                           http_status, retries, latency_ms, input_tokens, output_tokens,
                           cached_tokens, reasoning_tokens, tokens_estimated, cost_usd,
                           finish_reason, error, response_id)
    SELECT r.id, $2, $3, $4, r.endpoint_id, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18
    FROM runs r WHERE r.id = $1
    ON CONFLICT (run_id, attempt, call_index) DO NOTHING
    RETURNING run_id, cost_usd
), healed AS (
    -- A call that succeeded closes its endpoint's breaker (migration 0009); a no-op, and only a
    -- primary-key probe, while the endpoint has had no outage.
    UPDATE endpoints e SET outage_failures = 0, cooldown_until = NULL
    FROM runs r
    WHERE $6 = 'ok' AND r.id = $1 AND e.id = r.endpoint_id AND e.outage_failures > 0
), charged AS (
    UPDATE sweeps s SET spent_usd = s.spent_usd + ins.cost_usd
    FROM ins JOIN runs r ON r.id = ins.run_id
    WHERE s.id = r.sweep_id AND ins.cost_usd <> 0
)
-- 1 when this call is new, 0 for a re-sent one: the caller counts only new calls in its metrics.
SELECT count(*) AS inserted FROM ins
