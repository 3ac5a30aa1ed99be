-- The tables an order's batch writes carry no foreign-key checks. Each such
-- check is a locking read per row inserted (FOR KEY SHARE on the user and
-- the product): four per order, and on a sale's one product a lock taken
-- next to the batch that is updating it (a multixact per batch). The ids
-- are checked where they are written instead: the user by authentication,
-- the products by the batch's own price read in the same transaction, the
-- order by the statement that inserts it with its items. Nothing deletes a
-- user, a product or an order. The load tests check after every run that
-- no row lost its parent (rules.rs, "every order, item and key has its
-- parent").
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_user_id_fkey;
ALTER TABLE order_items DROP CONSTRAINT IF EXISTS order_items_order_id_fkey;
ALTER TABLE order_items DROP CONSTRAINT IF EXISTS order_items_product_id_fkey;
ALTER TABLE idempotency_keys DROP CONSTRAINT IF EXISTS idempotency_keys_user_id_fkey;
