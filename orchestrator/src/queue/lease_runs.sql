-- transitions: queued -> running
-- attempt: [*] -> open
-- Grants a fresh lease on runs the capped path chose (rows it holds locked) and opens their
-- attempt in the ledger.
WITH taken AS (
    UPDATE runs
    SET state            = 'running',
        attempt          = attempt + 1,
        lease_owner      = $2,
        last_worker      = $2,
        lease_token      = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => $3::double precision / 1000.0),
        started_at       = now(),
        finished_at      = NULL
    WHERE id = ANY($1)
    RETURNING id, sweep_id, attempt, lease_token, lease_expires_at, repeat_index,
              dataset_id, instance_id, agent_id, critic_id
), opened AS (
    INSERT INTO run_attempts (run_id, attempt, worker_id, claimed_at)
    SELECT t.id, t.attempt, $2, now() FROM taken t
)
SELECT * FROM taken
