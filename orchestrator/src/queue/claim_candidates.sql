-- Queued runs in dispatch order, skipping rows other claimers hold and runs whose endpoint or
-- sweep is already at its concurrency cap. Caps are re-checked under an advisory lock before
-- a capped run is taken (see queue::claim), so this pre-filter only keeps saturated endpoints
-- from being picked over and over.
WITH full_endpoints AS (
    SELECT e.id FROM endpoints e
    WHERE e.max_concurrency IS NOT NULL
      AND (SELECT count(*) FROM runs x WHERE x.state = 'running' AND x.endpoint_id = e.id) >= e.max_concurrency
), full_sweeps AS (
    SELECT s.id FROM sweeps s
    WHERE s.state = 'running' AND s.max_running IS NOT NULL
      AND (SELECT count(*) FROM runs x WHERE x.state = 'running' AND x.sweep_id = s.id) >= s.max_running
)
SELECT r.id, r.endpoint_id, r.sweep_id,
       (SELECT e.max_concurrency FROM endpoints e WHERE e.id = r.endpoint_id) AS endpoint_cap,
       (SELECT s.max_running FROM sweeps s WHERE s.id = r.sweep_id) AS sweep_cap
FROM runs r
WHERE r.state = 'queued'
  AND r.endpoint_id NOT IN (SELECT id FROM full_endpoints)
  AND r.sweep_id NOT IN (SELECT id FROM full_sweeps)
ORDER BY r.fair_seq, r.id
LIMIT $1
FOR UPDATE OF r SKIP LOCKED
