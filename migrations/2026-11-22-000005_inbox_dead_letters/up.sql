-- Consumer inboxes (rule 6): one per consumer group, keyed by event id, so a
-- redelivered event is recognised and ignored. The row is written in the
-- same transaction as the consumer's effect.
CREATE TABLE inbox_data_platform (
    event_id     UUID        PRIMARY KEY,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE inbox_notification (
    event_id     UUID        PRIMARY KEY,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE inbox_ranking (
    event_id     UUID        PRIMARY KEY,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Events a consumer gave up on after its retries; an admin re-drives them.
CREATE TABLE dead_letters (
    id            BIGSERIAL   PRIMARY KEY,
    consumer      TEXT        NOT NULL,
    event_id      UUID        NOT NULL,
    event_type    TEXT        NOT NULL,
    aggregate_key TEXT        NOT NULL,
    payload       JSONB       NOT NULL,
    event_created_at TIMESTAMPTZ NOT NULL,
    error         TEXT        NOT NULL,
    attempts      INTEGER     NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    redriven_at   TIMESTAMPTZ,
    UNIQUE (consumer, event_id)
);
CREATE INDEX dead_letters_open_idx ON dead_letters (id) WHERE redriven_at IS NULL;
