-- The fence of a steps upload: the run's live lease under $2, held by a worker that the API
-- token $3 registered. FOR SHARE: the lease cannot expire or change hands until the upload's
-- rows are written.
SELECT r.attempt, a.name AS agent, e.base_url FROM runs r
  JOIN agents a ON a.id = r.agent_id JOIN endpoints e ON e.id = r.endpoint_id
WHERE r.id = $1 AND r.lease_token = $2 AND r.state = 'running'
  AND EXISTS (SELECT 1 FROM workers w WHERE w.id = r.lease_owner AND w.token_id IS NOT DISTINCT FROM $3)
FOR SHARE OF r
