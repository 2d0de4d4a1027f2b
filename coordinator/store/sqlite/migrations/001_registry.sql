-- Agents and the events of their lives.
CREATE TABLE agents (
  id TEXT PRIMARY KEY,
  machine_name TEXT NOT NULL,
  display_name TEXT,
  labels TEXT NOT NULL DEFAULT '[]',
  ip_address TEXT NOT NULL,
  ollama_port INTEGER NOT NULL,
  ollama_version TEXT NOT NULL,
  agent_version TEXT,
  os TEXT,
  parallel INTEGER NOT NULL DEFAULT 1,
  drain INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT 'online',
  status_reason TEXT,
  registered_at TEXT NOT NULL,
  last_seen TEXT NOT NULL,
  metrics TEXT,
  models TEXT NOT NULL DEFAULT '[]',
  loaded_models TEXT NOT NULL DEFAULT '[]',
  UNIQUE (machine_name, ip_address, ollama_port)
);

CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at TEXT NOT NULL,
  kind TEXT NOT NULL,
  agent_id TEXT,
  message TEXT NOT NULL
);
CREATE INDEX events_at ON events (at);
