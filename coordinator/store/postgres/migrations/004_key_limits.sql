-- Per-key quotas and fair share: each API key's limits (NULL: none) and its weight, and the key
-- behind each request in the log, so usage per key can be queried after the fact.
ALTER TABLE api_keys ADD COLUMN requests_per_minute integer;
ALTER TABLE api_keys ADD COLUMN tokens_per_minute integer;
ALTER TABLE api_keys ADD COLUMN concurrent_requests integer;
ALTER TABLE api_keys ADD COLUMN weight double precision NOT NULL DEFAULT 1;

ALTER TABLE requests ADD COLUMN key_id text;
CREATE INDEX requests_key_at ON requests (key_id, at);
