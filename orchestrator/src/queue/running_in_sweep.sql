SELECT count(*) FROM runs WHERE state = 'running' AND sweep_id = $1
