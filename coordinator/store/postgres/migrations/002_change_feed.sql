-- A change counter on agents: a coordinator told "agents changed" reads only the rows changed
-- since the last value it saw, whatever notifications it missed while disconnected.
CREATE SEQUENCE agents_changed_seq;
ALTER TABLE agents ADD COLUMN changed_seq bigint NOT NULL DEFAULT nextval('agents_changed_seq');
CREATE INDEX agents_changed ON agents (changed_seq);
