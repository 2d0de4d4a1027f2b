-- Per-key quotas and fair share: each API key's limits (NULL: none) and its weight, and the key
-- behind each request in the log, so usage per key can be queried after the fact.
ALTER TABLE api_keys ADD COLUMN requests_per_minute INTEGER;
ALTER TABLE api_keys ADD COLUMN tokens_per_minute INTEGER;
ALTER TABLE api_keys ADD COLUMN concurrent_requests INTEGER;
ALTER TABLE api_keys ADD COLUMN weight REAL NOT NULL DEFAULT 1;

ALTER TABLE requests ADD COLUMN key_id TEXT;
CREATE INDEX requests_key_at ON requests (key_id, at);
