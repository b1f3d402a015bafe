-- transitions: queued -> cancelled, paused -> cancelled
-- Cancels a cancelled sweep's runs that have not started; runs in flight end when their worker
-- hands them back (give_back.sql), completes them, or lets the lease expire.
UPDATE runs SET state = 'cancelled', last_error = 'sweep cancelled', finished_at = now()
WHERE sweep_id = $1 AND state IN ('queued', 'paused')
