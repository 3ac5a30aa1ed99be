-- Products, orders and payments. Stock is reserved by conditional updates
-- (rule 2); an order is paid at most once (rule 4, UNIQUE payment per order
-- and a status-guarded transition).
CREATE TABLE products (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description TEXT        NOT NULL DEFAULT '' CHECK (char_length(description) <= 5000),
    price       BIGINT      NOT NULL CHECK (price >= 0),
    stock       INTEGER     NOT NULL CHECK (stock >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Units sold per product per day (the truth behind the popular-products
-- ranking; Redis keeps per-day sorted sets as the fast copy).
CREATE TABLE product_sales_daily (
    day        DATE    NOT NULL,
    product_id BIGINT  NOT NULL REFERENCES products (id),
    units      BIGINT  NOT NULL CHECK (units >= 0),
    PRIMARY KEY (day, product_id)
);

CREATE TABLE orders (
    id              BIGSERIAL PRIMARY KEY,
    user_id         BIGINT      NOT NULL REFERENCES users (id),
    status          TEXT        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'paid', 'cancelled', 'expired')),
    total           BIGINT      NOT NULL CHECK (total >= 0),
    discount        BIGINT      NOT NULL CHECK (discount >= 0),
    pay_amount      BIGINT      NOT NULL CHECK (pay_amount >= 0 AND pay_amount = total - discount),
    user_coupon_id  BIGINT      REFERENCES user_coupons (id),
    expires_at      TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at         TIMESTAMPTZ,
    closed_at       TIMESTAMPTZ,
    CHECK ((status = 'paid') = (paid_at IS NOT NULL))
);
CREATE INDEX orders_user_idx ON orders (user_id, id);
CREATE INDEX orders_pending_expiry_idx ON orders (expires_at) WHERE status = 'pending';

CREATE TABLE order_items (
    order_id   BIGINT  NOT NULL REFERENCES orders (id),
    product_id BIGINT  NOT NULL REFERENCES products (id),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_price BIGINT  NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX order_items_product_idx ON order_items (product_id);

CREATE TABLE payments (
    id         BIGSERIAL PRIMARY KEY,
    order_id   BIGINT      NOT NULL UNIQUE REFERENCES orders (id),
    user_id    BIGINT      NOT NULL REFERENCES users (id),
    amount     BIGINT      NOT NULL CHECK (amount >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A coupon is used by at most one order.
CREATE UNIQUE INDEX user_coupons_order_idx ON user_coupons (order_id) WHERE order_id IS NOT NULL;
