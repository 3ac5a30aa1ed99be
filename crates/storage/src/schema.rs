// Diesel table definitions, kept by hand in step with `migrations/`.
// The `schema_matches_migrations` test fails when they drift.

diesel::table! {
    users (id) {
        id -> Int8,
        name -> Text,
        balance -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    balance_ledger (id) {
        id -> Int8,
        user_id -> Int8,
        delta -> Int8,
        balance_after -> Int8,
        kind -> Text,
        reference -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    idempotency_keys (user_id, key) {
        user_id -> Int8,
        key -> Text,
        request_hash -> Text,
        response_status -> Nullable<Int2>,
        response_body -> Nullable<Jsonb>,
        locked_at -> Timestamptz,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(balance_ledger -> users (user_id));

diesel::table! {
    coupons (id) {
        id -> Int8,
        name -> Text,
        discount_amount -> Int8,
        quantity -> Int4,
        opens_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    user_coupons (id) {
        id -> Int8,
        coupon_id -> Int8,
        coupon_quantity -> Int4,
        user_id -> Int8,
        slot -> Int4,
        status -> Text,
        order_id -> Nullable<Int8>,
        issued_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(user_coupons -> coupons (coupon_id));

diesel::table! {
    products (id) {
        id -> Int8,
        name -> Text,
        description -> Text,
        price -> Int8,
        stock -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    product_sales_daily (day, product_id) {
        day -> Date,
        product_id -> Int8,
        units -> Int8,
    }
}

diesel::table! {
    orders (id) {
        id -> Int8,
        user_id -> Int8,
        status -> Text,
        total -> Int8,
        discount -> Int8,
        pay_amount -> Int8,
        user_coupon_id -> Nullable<Int8>,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
        paid_at -> Nullable<Timestamptz>,
        closed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    order_items (order_id, product_id) {
        order_id -> Int8,
        product_id -> Int8,
        quantity -> Int4,
        unit_price -> Int8,
    }
}

diesel::table! {
    payments (id) {
        id -> Int8,
        order_id -> Int8,
        user_id -> Int8,
        amount -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(order_items -> orders (order_id));
diesel::joinable!(order_items -> products (product_id));
diesel::joinable!(product_sales_daily -> products (product_id));
diesel::joinable!(payments -> orders (order_id));

diesel::table! {
    outbox (id) {
        id -> Uuid,
        event_type -> Text,
        aggregate_key -> Text,
        payload -> Jsonb,
        created_at -> Timestamptz,
        attempts -> Int4,
        published_at -> Nullable<Timestamptz>,
        claimed_until -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    users,
    balance_ledger,
    idempotency_keys,
    coupons,
    user_coupons,
    products,
    product_sales_daily,
    orders,
    order_items,
    payments,
    outbox,
);
