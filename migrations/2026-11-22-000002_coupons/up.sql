-- First-come coupons. PostgreSQL is the last guard of rule 1:
--  * one coupon per user: UNIQUE (coupon_id, user_id);
--  * never beyond the quantity: every issued coupon takes a numbered slot
--    1..quantity, UNIQUE per coupon, and the slot bound is checked against the
--    coupon's own quantity through a composite foreign key. No counter row is
--    updated, so winners' inserts spread over rows and group-commit.
CREATE TABLE coupons (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    discount_amount BIGINT      NOT NULL CHECK (discount_amount > 0),
    quantity        INTEGER     NOT NULL CHECK (quantity > 0),
    opens_at        TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ CHECK (expires_at IS NULL OR expires_at > opens_at),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (id, quantity)
);

CREATE TABLE user_coupons (
    id              BIGSERIAL PRIMARY KEY,
    coupon_id       BIGINT      NOT NULL,
    coupon_quantity INTEGER     NOT NULL,
    user_id         BIGINT      NOT NULL REFERENCES users (id),
    slot            INTEGER     NOT NULL,
    status          TEXT        NOT NULL DEFAULT 'issued' CHECK (status IN ('issued', 'used')),
    order_id        BIGINT,
    issued_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_at         TIMESTAMPTZ,
    CONSTRAINT user_coupons_coupon_fk FOREIGN KEY (coupon_id, coupon_quantity)
        REFERENCES coupons (id, quantity),
    CONSTRAINT user_coupons_slot_range CHECK (slot BETWEEN 1 AND coupon_quantity),
    CONSTRAINT user_coupons_one_per_user UNIQUE (coupon_id, user_id),
    CONSTRAINT user_coupons_one_per_slot UNIQUE (coupon_id, slot),
    CONSTRAINT user_coupons_used_has_order CHECK ((status = 'used') = (order_id IS NOT NULL))
);
CREATE INDEX user_coupons_user_idx ON user_coupons (user_id, id);
