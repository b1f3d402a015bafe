-- What `steer eval` writes beside each report.json, as the harness does: the eval script's
-- output (test_output.txt), the script itself (eval.sh) and the worker's account of the
-- grading (run_instance.log).
ALTER TABLE evaluations
    ADD COLUMN test_output  TEXT,
    ADD COLUMN eval_script  TEXT,
    ADD COLUMN instance_log TEXT;
