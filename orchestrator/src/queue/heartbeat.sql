-- Extends every lease the worker still holds; the caller treats the rest as lost.
-- Fencing: a lease is matched by run id AND token AND owner.
UPDATE runs r
SET lease_expires_at = now() + make_interval(secs => $4::double precision / 1000.0)
FROM unnest($1::bigint[], $2::uuid[]) AS l(run_id, token), sweeps s
WHERE r.id = l.run_id AND r.lease_token = l.token AND r.lease_owner = $3
  AND r.state = 'running' AND s.id = r.sweep_id
RETURNING r.id, s.state = 'cancelled' AS sweep_cancelled
