-- Prefix replay: a critic condition's run may first replay the first steps of its base run
-- (same sweep, instance, agent and repeat, the base critic condition); it is claimable only
-- once that run has ended. Replayed steps are marked.
ALTER TABLE runs ADD COLUMN prefix_of BIGINT REFERENCES runs(id);
CREATE INDEX runs_prefix_of ON runs (prefix_of) WHERE prefix_of IS NOT NULL;
ALTER TABLE steps ADD COLUMN replayed BOOLEAN NOT NULL DEFAULT false;
