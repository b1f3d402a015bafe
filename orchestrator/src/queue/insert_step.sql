INSERT INTO steps (run_id, attempt, step_index, action, observation, exit_code, duration_ms,
                   input_tokens, output_tokens, cached_tokens, cost_usd, messages, llm_ms, command_ms, replayed)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (run_id, attempt, step_index) DO UPDATE
SET action = EXCLUDED.action, observation = EXCLUDED.observation, exit_code = EXCLUDED.exit_code,
    duration_ms = EXCLUDED.duration_ms, input_tokens = EXCLUDED.input_tokens,
    output_tokens = EXCLUDED.output_tokens, cached_tokens = EXCLUDED.cached_tokens,
    cost_usd = EXCLUDED.cost_usd, messages = EXCLUDED.messages, llm_ms = EXCLUDED.llm_ms,
    command_ms = EXCLUDED.command_ms, replayed = EXCLUDED.replayed
-- Whether the row is new (no earlier version): a re-sent step is replaced, but counted once.
RETURNING (xmax = 0) AS inserted
