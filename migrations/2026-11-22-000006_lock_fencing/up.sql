-- Fencing tokens of the PostgreSQL fallback of distributed locks: each holder
-- gets a token larger than any before it, so storage can refuse a stale one.
CREATE TABLE IF NOT EXISTS lock_fencing (
    name  TEXT   PRIMARY KEY,
    token BIGINT NOT NULL
);
