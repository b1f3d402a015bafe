-- The endpoint's id of each answer (`id` of an OpenAI chat completion, `chatcmpl-...`), so a
-- model call can be joined with a provider's or proxy's spend logs. Agent calls are rows of
-- `llm_calls`; a remote critic's calls are rows of `critic_calls`. NULL: the endpoint gave no
-- id, the call failed, the critic is local, or the row predates this column.
ALTER TABLE llm_calls ADD COLUMN response_id TEXT;
ALTER TABLE critic_calls ADD COLUMN response_id TEXT;
