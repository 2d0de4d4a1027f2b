-- The id a client gave its request (X-Request-Id), kept beside the coordinator's own: each
-- request has its own row whatever id the client sends.
ALTER TABLE requests ADD COLUMN client_request_id TEXT;
