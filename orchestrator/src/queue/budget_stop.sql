-- transitions: queued -> cancelled, paused -> cancelled
-- Stops sweeps whose spend reached their budget (one sweep, or all when $1 is NULL) and cancels
-- their runs that have not started; runs in flight finish.
WITH stopped AS (
    UPDATE sweeps
    SET state = 'stopped',
        stop_reason = format('budget exhausted: spent $%s of $%s', spent_usd, budget_usd),
        finished_at = now()
    WHERE ($1::bigint IS NULL OR id = $1)
      AND budget_usd IS NOT NULL AND spent_usd >= budget_usd
      AND state IN ('running', 'paused')
    RETURNING id, stop_reason
)
UPDATE runs r
SET state = 'cancelled', last_error = s.stop_reason, finished_at = now()
FROM stopped s
WHERE r.sweep_id = s.id AND r.state IN ('queued', 'paused')
