-- The coordinator's schema on PostgreSQL: the same tables as on SQLite, with native types.
-- Times the services handle as epoch milliseconds are bigint; the rest are timestamptz.
CREATE TABLE agents (
  id text PRIMARY KEY,
  machine_name text NOT NULL,
  display_name text,
  labels jsonb NOT NULL DEFAULT '[]',
  ip_address text NOT NULL,
  ollama_port integer NOT NULL,
  ollama_version text NOT NULL,
  agent_version text,
  os text,
  parallel integer NOT NULL DEFAULT 1,
  weight double precision NOT NULL DEFAULT 1,
  drain boolean NOT NULL DEFAULT false,
  status text NOT NULL DEFAULT 'online',
  status_reason text,
  registered_at bigint NOT NULL,
  last_seen bigint NOT NULL,
  metrics jsonb,
  models jsonb NOT NULL DEFAULT '[]',
  loaded_models jsonb NOT NULL DEFAULT '[]',
  secret_hash text,
  UNIQUE (machine_name, ip_address, ollama_port)
);

CREATE TABLE events (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL,
  kind text NOT NULL,
  agent_id text,
  message text NOT NULL
);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_agent ON events (agent_id, id);

CREATE TABLE requests (
  seq bigserial,
  id text PRIMARY KEY,
  at timestamptz NOT NULL,
  route text NOT NULL,
  model text,
  agent_id text,
  agent_name text,
  status integer NOT NULL,
  latency_ms double precision NOT NULL,
  ttft_ms double precision,
  queued_ms double precision,
  tokens_in integer,
  tokens_out integer,
  tokens_per_second double precision,
  attempts integer NOT NULL DEFAULT 1,
  error text
);
CREATE INDEX requests_at ON requests (at);
CREATE INDEX requests_seq ON requests (seq);

CREATE TABLE settings (
  key text PRIMARY KEY,
  value text NOT NULL
);

CREATE TABLE api_keys (
  id text PRIMARY KEY,
  name text NOT NULL,
  prefix text NOT NULL,
  hash text NOT NULL UNIQUE,
  scope text NOT NULL CHECK (scope IN ('client', 'admin')),
  created_at timestamptz NOT NULL,
  last_used_at timestamptz,
  uses bigint NOT NULL DEFAULT 0,
  revoked_at timestamptz
);

CREATE TABLE sessions (
  id_hash text PRIMARY KEY,
  csrf text NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL
);
