-- Claim, part 1 of 2 (Queue::claim_batch joins it to claim_window.sql): endpoints and sweeps
-- already at their concurrency cap.
-- An endpoint cooling down after an outage takes no run; a half-open one (outage_failures > 0)
-- is capped at one run in flight, its probe (migration 0009).
WITH full_endpoints AS (
    SELECT e.id FROM endpoints e
    WHERE e.cooldown_until > now()
       OR (LEAST(e.max_concurrency, CASE WHEN e.outage_failures > 0 THEN 1 END) IS NOT NULL
           AND (SELECT count(*) FROM runs x WHERE x.state = 'running' AND x.endpoint_id = e.id)
               >= LEAST(e.max_concurrency, CASE WHEN e.outage_failures > 0 THEN 1 END))
), full_sweeps AS (
    SELECT s.id FROM sweeps s
    WHERE s.state = 'running' AND s.max_running IS NOT NULL
      AND (SELECT count(*) FROM runs x WHERE x.state = 'running' AND x.sweep_id = s.id) >= s.max_running
),
