-- transitions: running -> queued, running -> paused, running -> cancelled, running -> error
-- attempt: open -> expired
-- Takes back runs whose lease ran out (their worker died, hung or was cut off). Each counts as
-- a failed attempt, closed as `expired` in the ledger. SKIP LOCKED lets every coordinator
-- replica run this at once.
WITH expired AS (
    SELECT id FROM runs
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), back AS (
    UPDATE runs r
    SET failed_attempts  = r.failed_attempts + 1,
        last_error       = format('lease expired on attempt %s (worker %s); %s of %s attempts failed',
                                  r.attempt, r.lease_owner, r.failed_attempts + 1, s.max_attempts),
        lease_owner      = NULL,
        lease_expires_at = NULL,
        state = CASE
            WHEN s.state = 'cancelled' THEN 'cancelled'
            WHEN r.failed_attempts + 1 >= s.max_attempts THEN 'error'
            WHEN s.state = 'paused' THEN 'paused'
            ELSE 'queued' END,
        finished_at = CASE
            WHEN s.state = 'cancelled' OR r.failed_attempts + 1 >= s.max_attempts THEN now()
            ELSE NULL END
    FROM expired e, sweeps s
    WHERE r.id = e.id AND s.id = r.sweep_id
    RETURNING r.id, r.attempt, r.state, r.last_error
), closed AS (
    UPDATE run_attempts a SET ending = 'expired', ended_at = now(), reason = back.last_error
    FROM back WHERE a.run_id = back.id AND a.attempt = back.attempt
)
SELECT id, state FROM back
