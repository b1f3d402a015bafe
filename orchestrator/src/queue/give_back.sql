-- transitions: running -> queued, running -> paused, running -> cancelled, running -> error
-- attempt: open -> failed, open -> released, open -> cancelled
-- Ends a lease early: an infrastructure failure ($4 = true: counts against max_attempts) or a
-- hand-back on drain ($4 = false). The run goes back to the queue, to `paused` or `cancelled`
-- if its sweep is, or to `error` once its failed attempts reach the sweep's max_attempts.
-- Fencing: the run's lease token ($2), and the API token that registered the holder ($5; NULL:
-- a worker registered without one). The attempt is closed in the ledger: `failed`, or
-- `released`, or `cancelled` for a hand-back that ends the run because its sweep was cancelled.
-- A failure caused by the model endpoint's outage ($6) also opens the endpoint's breaker.
WITH back AS (
    UPDATE runs r
    SET failed_attempts  = r.failed_attempts + (CASE WHEN $4 THEN 1 ELSE 0 END),
        last_error       = $3,
        lease_owner      = NULL,
        lease_expires_at = NULL,
        state = CASE
            WHEN s.state = 'cancelled' THEN 'cancelled'
            WHEN $4 AND r.failed_attempts + 1 >= s.max_attempts THEN 'error'
            WHEN s.state = 'paused' THEN 'paused'
            ELSE 'queued' END,
        finished_at = CASE
            WHEN s.state = 'cancelled' OR ($4 AND r.failed_attempts + 1 >= s.max_attempts) THEN now()
            ELSE NULL END
    FROM sweeps s
    WHERE r.id = $1 AND r.lease_token = $2 AND r.state = 'running' AND s.id = r.sweep_id
      AND EXISTS (SELECT 1 FROM workers w WHERE w.id = r.lease_owner AND w.token_id IS NOT DISTINCT FROM $5)
    RETURNING r.id, r.attempt, r.state, r.endpoint_id
), cooled AS (
    -- $6: the failure was the run's model endpoint staying unavailable through every retry.
    -- Opens the endpoint's circuit breaker, unless it is already cooling down (the other runs
    -- in flight during the same outage must not stretch it): the cooldown doubles with each
    -- consecutive outage, from $7 ms up to $8 ms.
    UPDATE endpoints e
    SET outage_failures = e.outage_failures + 1,
        cooldown_until  = now() + make_interval(
            secs => LEAST($8::double precision, $7::double precision * power(2, LEAST(e.outage_failures, 20))) / 1000.0)
    FROM back
    WHERE $6 AND e.id = back.endpoint_id AND (e.cooldown_until IS NULL OR e.cooldown_until <= now())
), closed AS (
    UPDATE run_attempts a
    SET ended_at = now(),
        reason   = $3,
        ending   = CASE WHEN $4 THEN 'failed' WHEN back.state = 'cancelled' THEN 'cancelled' ELSE 'released' END
    FROM back WHERE a.run_id = back.id AND a.attempt = back.attempt
)
SELECT state FROM back
