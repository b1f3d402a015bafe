SELECT sweep_id FROM runs WHERE id = $1
