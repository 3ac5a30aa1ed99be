//! The hot write paths' statements are prepared once per connection and
//! kept (`commerce_storage::sql::cached`, arrays instead of one VALUES row
//! per item): a statement parsed and planned again on every call cost a
//! round trip and most of PostgreSQL's CPU per order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_accounts::ledger::{move_in, Entry, Kind};
use commerce_domain::{IdempotencyKey, UserId};
use commerce_storage::idempotency::{insert_answered, Claim};
use commerce_storage::outbox::enqueue_many;
use commerce_testkit::TestApp;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn prepared_like(conn: &mut diesel_async::AsyncPgConnection, prefix: &str) -> i64 {
    let found: Count = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM pg_prepared_statements WHERE statement LIKE $1 || '%'",
    )
    .bind::<Text, _>(prefix)
    .get_result(conn)
    .await
    .unwrap();
    found.n
}

#[tokio::test]
async fn batch_statements_are_prepared_once_whatever_the_batch_size() {
    let app = TestApp::spawn().await;
    let users = app.seed_users(3).await;
    let user = UserId::parse(users[0].id).unwrap();
    let mut conn = commerce_storage::conn(&app.state.db).await.unwrap();

    // Keys claimed with their answers in batches of 1, 2 and 3.
    let mut n = 0;
    for size in 1..=3 {
        let answers: Vec<(Claim, u16, serde_json::Value)> = (0..size)
            .map(|_| {
                n += 1;
                let claim = Claim {
                    user_id: user,
                    key: IdempotencyKey::parse(&format!("prepared-{n}")).unwrap(),
                    request_hash: "h".into(),
                };
                (claim, 201, serde_json::json!({ "n": n }))
            })
            .collect();
        insert_answered(&conn, &answers).await.unwrap();
    }
    // Events enqueued in batches of 1 and 3.
    for size in [1usize, 3] {
        let events: Vec<(&str, String, serde_json::Value)> = (0..size)
            .map(|i| ("order_paid", i.to_string(), serde_json::json!({ "i": i })))
            .collect();
        enqueue_many(&conn, &events).await.unwrap();
    }
    // Balance movements of 1 and 2 entries.
    for size in 1..=2 {
        let entries: Vec<Entry> = (0..size)
            .map(|_| Entry {
                delta: 5,
                reference: None,
            })
            .collect();
        assert!(move_in(&conn, user, Kind::Charge, &entries)
            .await
            .unwrap()
            .is_some());
    }

    assert_eq!(
        prepared_like(
            &mut conn,
            "INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, response_body) SELECT"
        )
        .await,
        1,
        "three key batches, one prepared statement"
    );
    assert_eq!(
        prepared_like(
            &mut conn,
            "INSERT INTO outbox (id, event_type, aggregate_key, payload) SELECT"
        )
        .await,
        1,
        "two event batches, one prepared statement"
    );
    assert_eq!(
        prepared_like(&mut conn, "WITH moved AS").await,
        1,
        "two balance movements, one prepared statement"
    );
    // The ledger rows read as movements one after another.
    let off: Count = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM (SELECT balance_after, \
         SUM(delta) OVER (PARTITION BY user_id ORDER BY id) AS running FROM balance_ledger) l \
         WHERE balance_after <> running",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(off.n, 0);
}

#[tokio::test]
async fn a_refused_movement_changes_nothing() {
    let app = TestApp::spawn().await;
    let users = app.seed_users(1).await;
    let user = UserId::parse(users[0].id).unwrap();
    let conn = commerce_storage::conn(&app.state.db).await.unwrap();
    let before = commerce_accounts::balance(&app.state.db, user)
        .await
        .unwrap();
    // Two payments whose sum is more than the balance: neither is taken.
    let entries = [
        Entry {
            delta: -before.balance,
            reference: Some("order:1".into()),
        },
        Entry {
            delta: -1,
            reference: Some("order:2".into()),
        },
    ];
    assert_eq!(
        move_in(&conn, user, Kind::Payment, &entries).await.unwrap(),
        None
    );
    drop(conn);
    let after = commerce_accounts::balance(&app.state.db, user)
        .await
        .unwrap();
    assert_eq!(after, before);
    // A user that does not exist: refused, not an error.
    let conn = commerce_storage::conn(&app.state.db).await.unwrap();
    let ghost = UserId::parse(i64::MAX).unwrap();
    assert_eq!(
        move_in(&conn, ghost, Kind::Charge, &entries[..1])
            .await
            .unwrap(),
        None
    );
}
