-- transitions: paused -> queued, cancelled -> queued, error -> queued
-- Re-queues a resumed sweep's runs that did not finish, their failed attempts reset.
UPDATE runs SET state = 'queued', failed_attempts = 0, finished_at = NULL
WHERE sweep_id = $1 AND state IN ('paused', 'cancelled', 'error')
