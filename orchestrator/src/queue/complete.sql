-- Records a finished run. Fencing: only the current lease holder can complete it.
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
RETURNING sweep_id, attempt
