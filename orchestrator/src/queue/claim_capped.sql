-- The capped path: re-locks runs the fast path saw under a cap (if still queued and free).
-- A half-open endpoint (after an outage) counts as capped at one run.
SELECT r.id, r.endpoint_id, r.sweep_id, LEAST(e.max_concurrency, CASE WHEN e.outage_failures > 0 THEN 1 END) AS endpoint_cap, s.max_running AS sweep_cap
FROM runs r
JOIN endpoints e ON e.id = r.endpoint_id
JOIN sweeps s ON s.id = r.sweep_id
WHERE r.id = ANY($1) AND r.state = 'queued'
ORDER BY r.fair_seq, r.id
FOR UPDATE OF r SKIP LOCKED
