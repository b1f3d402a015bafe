-- A circuit breaker per model endpoint. A run that fails because its endpoint stayed
-- unavailable through every retry (429s, 5xx, timeouts) opens it: no run of that endpoint is
-- claimed until `cooldown_until`, which doubles with each consecutive outage. After it, the
-- endpoint is half-open: at most one run of it is in flight (a probe) until a model call
-- succeeds, which closes it (`outage_failures` back to 0).
ALTER TABLE endpoints
    ADD COLUMN cooldown_until  TIMESTAMPTZ,
    ADD COLUMN outage_failures INT NOT NULL DEFAULT 0 CHECK (outage_failures >= 0);
