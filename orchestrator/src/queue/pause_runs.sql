-- transitions: queued -> paused
-- Pauses a paused sweep's runs that have not started; running ones finish.
UPDATE runs SET state = 'paused' WHERE sweep_id = $1 AND state = 'queued'
