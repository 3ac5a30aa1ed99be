-- The aggregate keys relays hold claims on (a few hundred rows at most): a
-- relay claims a key's rows only while no other relay holds an older one,
-- so one key's events reach the broker in order.
CREATE INDEX outbox_claimed_key_idx ON outbox (event_type, aggregate_key)
    WHERE published_at IS NULL AND claimed_until IS NOT NULL;
