-- Per-agent scheduling weight set by an admin (1 = normal, 0 = never chosen).
ALTER TABLE agents ADD COLUMN weight REAL NOT NULL DEFAULT 1;
