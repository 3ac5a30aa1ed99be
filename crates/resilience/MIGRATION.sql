-- Fencing tokens for distributed locks taken through the PostgreSQL fallback
-- (commerce-resilience, lock module). One row per lock name; the token only
-- grows: GREATEST(token + 1, now in microseconds) on every acquisition.
CREATE TABLE IF NOT EXISTS lock_fencing (
    name  text   PRIMARY KEY,
    token bigint NOT NULL
);
