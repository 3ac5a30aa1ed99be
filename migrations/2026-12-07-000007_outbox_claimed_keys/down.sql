DROP INDEX IF EXISTS outbox_claimed_key_idx;
