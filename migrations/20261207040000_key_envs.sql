-- The environment variables a run's worker must read model API keys from: its agent's and its
-- remote critic's `api_key_env` (empty: none). A worker is handed a run only when its
-- allow-list (capabilities -> 'key_envs') allows each of them, so no worker is ever asked to
-- read, and send to a sweep's endpoint, a variable its operator has not allowed.
ALTER TABLE runs ADD COLUMN key_envs TEXT[] NOT NULL DEFAULT '{}';

-- Whether a worker's allow-list (a JSON array of names and `PREFIX*` entries) allows `var`.
-- The worker's own settings (`STEER_*`) are never allowed, whatever the list says. The same
-- rule as protocol::keys::KeyAllowList::allows.
CREATE FUNCTION key_env_allowed(allow JSONB, var TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT NOT starts_with(var, 'STEER_')
       AND jsonb_typeof(allow) = 'array'
       AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(allow) e
                   WHERE e = var OR (right(e, 1) = '*' AND starts_with(var, left(e, -1))))
$$;

-- Runs not yet finished get their variables from their agent's and critic's spec.
UPDATE runs r
SET key_envs = array_remove(ARRAY[a.spec ->> 'api_key_env', c.spec -> 'params' -> 'remote' ->> 'api_key_env'], NULL)
FROM agents a, critics c
WHERE a.id = r.agent_id AND c.id = r.critic_id
  AND r.state IN ('queued', 'running', 'paused')
  AND (a.spec ->> 'api_key_env' IS NOT NULL OR c.spec -> 'params' -> 'remote' ->> 'api_key_env' IS NOT NULL);
