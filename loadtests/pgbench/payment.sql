-- The payment transaction's statements (crates/orders, Orders::pay), one
-- order per transaction: guarded pending -> paid, guarded debit, ledger
-- row, payment row, outbox event. :id walks the pre-created orders.
\set id random(1, :orders)
BEGIN;
UPDATE orders SET status = 'paid', paid_at = now()
 WHERE id = :id AND user_id = :id AND status = 'pending' AND expires_at > now()
 RETURNING pay_amount, user_coupon_id;
UPDATE users SET balance = balance - 10, updated_at = now() WHERE id = :id AND balance >= 10 RETURNING balance;
INSERT INTO balance_ledger (user_id, delta, balance_after, kind, reference) VALUES (:id, -10, 0, 'payment', 'order:' || :id);
INSERT INTO payments (order_id, user_id, amount) VALUES (:id, :id, 10) ON CONFLICT (order_id) DO NOTHING;
INSERT INTO outbox (id, event_type, aggregate_key, payload) VALUES (gen_random_uuid(), 'order_paid', :id::text, '{}');
COMMIT;
