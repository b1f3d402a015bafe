-- transitions: queued -> running
-- attempt: [*] -> open
-- Claim, part 3 of 3: leases the uncapped candidates and opens their attempt in the ledger;
-- capped ones are returned for the capped path.
taken AS (
    UPDATE runs
    SET state            = 'running',
        attempt          = runs.attempt + 1,
        lease_owner      = $2,
        last_worker      = $2,
        lease_token      = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => $3::double precision / 1000.0),
        started_at       = now(),
        finished_at      = NULL
    FROM candidates c
    WHERE runs.id = c.id AND NOT c.capped
    RETURNING runs.id, runs.sweep_id, runs.attempt, runs.lease_token, runs.lease_expires_at,
              runs.repeat_index, runs.dataset_id, runs.instance_id, runs.agent_id, runs.critic_id
), opened AS (
    INSERT INTO run_attempts (run_id, attempt, worker_id, claimed_at)
    SELECT t.id, t.attempt, $2, now() FROM taken t
)
SELECT false AS capped, t.* FROM taken t
UNION ALL
SELECT true, c.id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM candidates c WHERE c.capped
