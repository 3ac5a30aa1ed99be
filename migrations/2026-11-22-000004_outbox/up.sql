-- Transactional outbox (rule 6): every state change writes its event here in
-- the same transaction; a relay publishes unpublished rows.
CREATE TABLE outbox (
    id            UUID        PRIMARY KEY,
    event_type    TEXT        NOT NULL,
    aggregate_key TEXT        NOT NULL,
    payload       JSONB       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts      INTEGER     NOT NULL DEFAULT 0,
    published_at  TIMESTAMPTZ,
    -- A relay's lease on the row while it publishes (instances skip it).
    claimed_until TIMESTAMPTZ,
    last_error    TEXT
);
CREATE INDEX outbox_unpublished_idx ON outbox (created_at) WHERE published_at IS NULL;
