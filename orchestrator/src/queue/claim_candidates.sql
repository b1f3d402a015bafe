-- Claim, part 2 of 3. One statement claims the next queued runs in dispatch order (fair_seq), skipping rows other
-- claimers hold (SKIP LOCKED) and runs whose endpoint or sweep is already at its cap.
-- Only runs of executor kinds the worker can run ($4) are considered.
-- Runs without caps are leased right here; runs under a cap are only returned (as `capped`)
-- and leased by the capped path in queue::claim, which re-counts under an advisory lock.
candidates AS (
    SELECT r.id, (e.max_concurrency IS NOT NULL OR e.outage_failures > 0 OR s.max_running IS NOT NULL) AS capped
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
    LIMIT $1
    FOR UPDATE OF r SKIP LOCKED
),
