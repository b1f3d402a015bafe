-- The runs worker $1 holds, with their lease tokens.
SELECT id, lease_token FROM runs WHERE lease_owner = $1 AND state = 'running' ORDER BY id
