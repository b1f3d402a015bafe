SELECT count(*) FROM runs WHERE state = 'running' AND endpoint_id = $1
