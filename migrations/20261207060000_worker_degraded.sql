-- Why a worker cannot run container runs now (its container engine stopped answering), as its
-- last heartbeat said; NULL: it can run every kind it registered. While set, the claim hands it
-- no `evaluate` or `agent` run, and sweep status says so.
ALTER TABLE workers ADD COLUMN degraded TEXT;
