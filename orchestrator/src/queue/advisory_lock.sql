-- A transaction-level advisory lock: class $1 (endpoint or sweep), key $2.
SELECT pg_advisory_xact_lock($1, $2)
