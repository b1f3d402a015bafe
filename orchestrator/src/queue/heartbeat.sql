-- transitions: none (extends leases; a running run stays running)
-- Extends every lease the worker still holds; the caller treats the rest as lost.
-- Fencing: a lease is matched by run id AND token AND owner, and nothing happens unless the
-- worker was registered by the calling API token ($8; NULL: a worker registered without one).
-- The worker's own row is rewritten at most once a second (or when draining changes): liveness
-- needs no finer grain, and it keeps a busy fleet from rewriting worker rows on every beat.
-- The images the worker holds ($6, NULL: unchanged) are stored when sent, its status ($7) and
-- why it is degraded ($9, NULL: it is not) always.
-- Leases are extended from when the statement runs (clock_timestamp), not from when it was
-- sent (now()): a heartbeat that waited behind a lock must not extend into the past.
WITH worker AS (
    SELECT id, token_id IS NOT DISTINCT FROM $8 AS bound,
           last_heartbeat < now() - interval '1 second' OR draining <> $5 OR $6::text[] IS NOT NULL
               OR status IS DISTINCT FROM $7 OR degraded IS DISTINCT FROM $9 AS stale
    FROM workers WHERE id = $3
), beat AS (
    UPDATE workers w SET last_heartbeat = now(), draining = $5, images = COALESCE($6::text[], w.images), status = $7,
                         degraded = $9
    FROM worker WHERE w.id = worker.id AND worker.stale AND worker.bound
), extended AS (
    UPDATE runs r
    SET lease_expires_at = clock_timestamp() + make_interval(secs => $4::double precision / 1000.0)
    FROM unnest($1::bigint[], $2::uuid[]) AS l(run_id, token), sweeps s, worker
    WHERE r.id = l.run_id AND r.lease_token = l.token AND r.lease_owner = $3
      AND r.state = 'running' AND s.id = r.sweep_id AND worker.bound
    RETURNING r.id, s.state = 'cancelled' AS sweep_cancelled
)
SELECT EXISTS (SELECT 1 FROM worker) AS registered, COALESCE((SELECT bound FROM worker), false) AS bound,
       e.id, e.sweep_cancelled
FROM (SELECT 1) AS one LEFT JOIN extended e ON true
