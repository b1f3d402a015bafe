-- Claim, part 1 of 3 (queue::claim_statement joins the parts): endpoints and sweeps
-- already at their concurrency cap.
WITH full_endpoints AS (
    SELECT e.id FROM endpoints e
    WHERE e.max_concurrency IS NOT NULL
      AND (SELECT count(*) FROM runs x WHERE x.state = 'running' AND x.endpoint_id = e.id) >= e.max_concurrency
), full_sweeps AS (
    SELECT s.id FROM sweeps s
    WHERE s.state = 'running' AND s.max_running IS NOT NULL
      AND (SELECT count(*) FROM runs x WHERE x.state = 'running' AND x.sweep_id = s.id) >= s.max_running
),
