-- Records one critic call and charges its cost to the sweep as it happens; a re-sent upload
-- conflicts on (run_id, attempt, call_index) and inserts and charges nothing twice.
WITH ins AS (
    INSERT INTO critic_calls (run_id, attempt, call_index, step_index, critic_id, kind, model, trigger,
                              decision, feedback, score, status, error, latency_ms, input_tokens,
                              output_tokens, cost_usd, device, batch_size, prompt, response_id)
    SELECT r.id, $2, $3, $4, r.critic_id, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20
    FROM runs r WHERE r.id = $1
    ON CONFLICT (run_id, attempt, call_index) DO NOTHING
    RETURNING run_id, cost_usd
), charged AS (
    UPDATE sweeps s SET spent_usd = s.spent_usd + ins.cost_usd
    FROM ins JOIN runs r ON r.id = ins.run_id
    WHERE s.id = r.sweep_id AND ins.cost_usd <> 0
)
-- 1 when this call is new, 0 for a re-sent one: the caller counts only new calls in its metrics.
SELECT count(*) AS inserted FROM ins
