-- The request log: one row per client request, written in batches off the hot path.
CREATE TABLE requests (
  id TEXT PRIMARY KEY,
  at TEXT NOT NULL,
  route TEXT NOT NULL,
  model TEXT,
  agent_id TEXT,
  agent_name TEXT,
  status INTEGER NOT NULL,
  latency_ms REAL NOT NULL,
  ttft_ms REAL,
  queued_ms REAL,
  tokens_in INTEGER,
  tokens_out INTEGER,
  tokens_per_second REAL,
  attempts INTEGER NOT NULL DEFAULT 1,
  error TEXT
);
CREATE INDEX requests_at ON requests (at);
