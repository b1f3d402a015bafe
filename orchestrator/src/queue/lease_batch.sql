-- transitions: queued -> running
-- attempt: [*] -> open
-- Grants fresh leases on runs the claim window locked, each to the worker the caller chose
-- for it ($1 run ids, $2 workers, pairwise), and opens their attempts in the ledger. A
-- draining or stopped worker is leased nothing: its runs stay queued.
WITH chosen AS (
    SELECT c.id, c.worker FROM unnest($1::bigint[], $2::uuid[]) AS c(id, worker)
    WHERE NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = c.worker AND w.draining)
), taken AS (
    UPDATE runs
    SET state            = 'running',
        attempt          = runs.attempt + 1,
        lease_owner      = c.worker,
        last_worker      = c.worker,
        lease_token      = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => $3::double precision / 1000.0),
        started_at       = now(),
        finished_at      = NULL
    FROM chosen c
    WHERE runs.id = c.id AND runs.state = 'queued'
    RETURNING runs.id, runs.sweep_id, runs.attempt, runs.lease_token, runs.lease_expires_at, runs.repeat_index,
              runs.dataset_id, runs.instance_id, runs.agent_id, runs.critic_id, runs.lease_owner
), opened AS (
    INSERT INTO run_attempts (run_id, attempt, worker_id, claimed_at)
    SELECT t.id, t.attempt, t.lease_owner, now() FROM taken t
)
SELECT * FROM taken
