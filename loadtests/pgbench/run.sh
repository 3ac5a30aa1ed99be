#!/usr/bin/env bash
# pgbench of the payment transaction's SQL, the database-side ceiling that the
# k6 payment-load figure is compared with. Uses its own database.
#   bash loadtests/pgbench/run.sh [clients=32] [seconds=20]
set -euo pipefail
cd "$(dirname "$0")/../.."
clients=${1:-32}; seconds=${2:-20}; orders=200000
db=commerce_pgbench
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
COMMERCE__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db" COMMERCE__LOG__LEVEL=warn \
  cargo run -q --release -p commerce-server -- migrate
psql -h 127.0.0.1 -U postgres -d $db -q <<SQL
INSERT INTO users (id, name, balance) SELECT g, 'u' || g, 1000000 FROM generate_series(1, $orders) g;
INSERT INTO balance_ledger (user_id, delta, balance_after, kind) SELECT g, 1000000, 1000000, 'charge' FROM generate_series(1, $orders) g;
INSERT INTO products (name, price, stock) VALUES ('p', 10, 1000000000);
INSERT INTO orders (id, user_id, total, discount, pay_amount, expires_at)
  SELECT g, g, 10, 0, 10, now() + interval '1 day' FROM generate_series(1, $orders) g;
VACUUM ANALYZE;
SQL
pgbench -h 127.0.0.1 -U postgres -n -c "$clients" -j 2 -T "$seconds" -D orders=$orders -f loadtests/pgbench/payment.sql -r $db
