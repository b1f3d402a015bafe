-- Claim, part 2 of 2 (part 1, claim_caps.sql, names the endpoints and sweeps at their cap):
-- locks the next $1 claimable runs in dispatch order (fair_seq) for one class of claimers,
-- skipping rows other claimers hold (SKIP LOCKED). The caller, in the same transaction,
-- shares them out among the class's waiting workers and leases them (lease_batch.sql);
-- the rows it does not lease are unlocked at commit, untouched.
-- A class is the executor kinds its workers can run ($2) and the API-key variables they
-- allow ($3, a worker's `capabilities -> 'key_envs'`). The runs_claim index serves the scan
-- in fair_seq order; the caller plans it with its real LIMIT (see Queue::claim_batch).
window_runs AS (
    SELECT r.id, r.image, (e.max_concurrency IS NOT NULL OR e.outage_failures > 0 OR s.max_running IS NOT NULL) AS capped
    FROM runs r
    JOIN endpoints e ON e.id = r.endpoint_id
    JOIN sweeps s ON s.id = r.sweep_id
    WHERE r.state = 'queued'
      AND (s.spec -> 'executor' ->> 'kind') = ANY($2::text[])
      AND r.endpoint_id NOT IN (SELECT id FROM full_endpoints)
      AND r.sweep_id NOT IN (SELECT id FROM full_sweeps)
      -- Prefix replay: not before its base run has ended.
      AND (r.prefix_of IS NULL
           OR NOT EXISTS (SELECT 1 FROM runs b WHERE b.id = r.prefix_of AND b.state IN ('queued', 'running', 'paused')))
      -- Only runs whose API key variables the class's allow-list allows, every one of them.
      AND (cardinality(r.key_envs) = 0
           OR NOT EXISTS (SELECT 1 FROM unnest(r.key_envs) k WHERE NOT key_env_allowed($3::jsonb, k)))
    ORDER BY r.fair_seq, r.id
    LIMIT $1
    FOR UPDATE OF r SKIP LOCKED
)
SELECT id, image, capped FROM window_runs
