-- Users and their balance. The balance lives on the user row; every change is
-- a ledger row written in the same transaction (rule 3).
CREATE TABLE users (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    balance     BIGINT      NOT NULL DEFAULT 0
                CONSTRAINT users_balance_range CHECK (balance >= 0 AND balance <= 1000000000000000),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE balance_ledger (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT      NOT NULL REFERENCES users (id),
    delta         BIGINT      NOT NULL CHECK (delta <> 0),
    balance_after BIGINT      NOT NULL CHECK (balance_after >= 0),
    kind          TEXT        NOT NULL CHECK (kind IN ('charge', 'payment', 'refund')),
    reference     TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX balance_ledger_user_idx ON balance_ledger (user_id, id);

-- Idempotency keys, per user. A row without a response is a request in
-- progress; `locked_at` lets a crashed holder's key be taken over.
CREATE TABLE idempotency_keys (
    user_id         BIGINT      NOT NULL REFERENCES users (id),
    key             TEXT        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash    TEXT        NOT NULL,
    response_status SMALLINT,
    response_body   JSONB,
    locked_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
