-- Like claim.sql, for a worker that holds instance images ($5): among the next $6 claimable
-- runs in dispatch order (a window read without locks), runs whose image the worker has go
-- first; the rest keep their fair-share order. The chosen rows are then locked with
-- SKIP LOCKED, so a run another claimer took meanwhile is simply passed over.
WITH full_endpoints AS (
    SELECT e.id FROM endpoints e
    WHERE e.max_concurrency IS NOT NULL
      AND (SELECT count(*) FROM runs x WHERE x.state = 'running' AND x.endpoint_id = e.id) >= e.max_concurrency
), full_sweeps AS (
    SELECT s.id FROM sweeps s
    WHERE s.state = 'running' AND s.max_running IS NOT NULL
      AND (SELECT count(*) FROM runs x WHERE x.state = 'running' AND x.sweep_id = s.id) >= s.max_running
), window_runs AS (
    SELECT r.id, r.fair_seq, (r.image = ANY($5::text[])) AS local,
           (e.max_concurrency IS NOT NULL OR s.max_running IS NOT NULL) AS capped
    FROM runs r
    JOIN endpoints e ON e.id = r.endpoint_id
    JOIN sweeps s ON s.id = r.sweep_id
    WHERE r.state = 'queued'
      AND (s.spec -> 'executor' ->> 'kind') = ANY($4::text[])
      AND r.endpoint_id NOT IN (SELECT id FROM full_endpoints)
      AND r.sweep_id NOT IN (SELECT id FROM full_sweeps)
    ORDER BY r.fair_seq, r.id
    LIMIT $6
), candidates AS (
    SELECT r.id, w.capped
    FROM runs r JOIN window_runs w ON w.id = r.id
    WHERE r.state = 'queued'
    ORDER BY w.local DESC, w.fair_seq, r.id
    LIMIT $1
    FOR UPDATE OF r SKIP LOCKED
), taken AS (
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
)
SELECT false AS capped, t.* FROM taken t
UNION ALL
SELECT true, c.id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM candidates c WHERE c.capped
