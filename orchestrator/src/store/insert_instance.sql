INSERT INTO instances (dataset_id, instance_id, repo, base_commit, patch, test_patch,
                       problem_statement, hints_text, created_at, version,
                       environment_setup_commit, fail_to_pass, pass_to_pass, difficulty,
                       image, eval_script, log_parser, extra)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
