DROP TABLE idempotency_keys;
DROP TABLE balance_ledger;
DROP TABLE users;
