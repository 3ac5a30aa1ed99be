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
diesel::allow_tables_to_appear_in_same_query!(users, balance_ledger, idempotency_keys);
