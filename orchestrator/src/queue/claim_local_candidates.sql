-- Claim, part 2 of 3, for a worker that holds instance images ($5): among the next $6
-- claimable runs in dispatch order (a window read without locks), runs whose image the worker has go
-- first; the rest keep their fair-share order. The chosen rows are then locked with
-- SKIP LOCKED, so a run another claimer took meanwhile is simply passed over.
window_runs AS (
    SELECT r.id, r.fair_seq, (r.image = ANY($5::text[])) AS local,
           (e.max_concurrency IS NOT NULL OR e.outage_failures > 0 OR s.max_running IS NOT NULL) AS capped
    FROM runs r
    JOIN endpoints e ON e.id = r.endpoint_id
    JOIN sweeps s ON s.id = r.sweep_id
    WHERE r.state = 'queued'
      AND (s.spec -> 'executor' ->> 'kind') = ANY($4::text[])
      AND r.endpoint_id NOT IN (SELECT id FROM full_endpoints)
      AND r.sweep_id NOT IN (SELECT id FROM full_sweeps)
      -- Prefix replay: not before its base run has ended.
      AND (r.prefix_of IS NULL
           OR NOT EXISTS (SELECT 1 FROM runs b WHERE b.id = r.prefix_of AND b.state IN ('queued', 'running', 'paused')))
      -- A draining or stopped worker is leased nothing (a one-time check, not per row).
      AND NOT EXISTS (SELECT 1 FROM workers dw WHERE dw.id = $2 AND dw.draining)
      -- Only runs whose API key variables the worker's allow-list allows, every one of them.
      AND (cardinality(r.key_envs) = 0
           OR NOT EXISTS (SELECT 1 FROM unnest(r.key_envs) k, workers kw
                          WHERE kw.id = $2 AND NOT key_env_allowed(kw.capabilities -> 'key_envs', k)))
    ORDER BY r.fair_seq, r.id
    LIMIT $6
), candidates AS (
    SELECT r.id, w.capped
    FROM runs r JOIN window_runs w ON w.id = r.id
    WHERE r.state = 'queued'
    ORDER BY w.local DESC, w.fair_seq, r.id
    LIMIT $1
    FOR UPDATE OF r SKIP LOCKED
),
