-- Who a sweep belongs to: the token that submitted it over the API. Ownership goes by the
-- token's name, so every token issued under one name (a rotated token, a laptop and a CI job)
-- owns the same sweeps. Only the owner and admins may pause, resume, cancel or re-budget a
-- sweep; every user may read it.
-- NULL: submitted before owners were recorded, or through the store directly (benchmarks,
-- tests); such a sweep is changed by admins only.
ALTER TABLE sweeps ADD COLUMN owner_token_id BIGINT REFERENCES api_tokens(id);
