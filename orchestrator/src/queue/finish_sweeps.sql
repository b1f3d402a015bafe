-- Marks running sweeps with nothing left to do as completed.
UPDATE sweeps s
SET state = 'completed', finished_at = now()
WHERE s.state = 'running'
  AND ($1::bigint IS NULL OR s.id = $1)
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.sweep_id = s.id AND r.state IN ('queued', 'running', 'paused'))
RETURNING s.id
