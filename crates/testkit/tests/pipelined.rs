//! Batches send `BEGIN` with their first statements and `COMMIT` right
//! behind their last (`commerce_storage::tx`), so a guard must fail its
//! statement (abort the transaction) rather than match no row: then
//! PostgreSQL rolls back everything sent in the same round trip, before the
//! guard or after it. These tests break if a guard quietly matches nothing
//! or if statements leave out of order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_catalog::stock::{take_in, Take, STOCK_CHECK};
use commerce_storage::{sql::cached, tx, StorageError};
use commerce_testkit::TestApp;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Integer)]
    stock: i32,
}

async fn product(c: &mut AsyncPgConnection, name: &str, price: i64, stock: i32) -> i64 {
    let row: Row = diesel::sql_query(
        "INSERT INTO products (name, price, stock) VALUES ($1, $2, $3) RETURNING id, stock",
    )
    .bind::<Text, _>(name)
    .bind::<BigInt, _>(price)
    .bind::<Integer, _>(stock)
    .get_result(c)
    .await
    .unwrap();
    row.id
}

async fn stock_and_marks(c: &mut AsyncPgConnection, id: i64, mark: &str) -> (i32, i64) {
    let row: Row = diesel::sql_query("SELECT id, stock FROM products WHERE id = $1")
        .bind::<BigInt, _>(id)
        .get_result(c)
        .await
        .unwrap();
    let marks: Row =
        diesel::sql_query("SELECT COUNT(*) AS id, 0 AS stock FROM products WHERE name = $1")
            .bind::<Text, _>(mark)
            .get_result(c)
            .await
            .unwrap();
    (row.stock, marks.id)
}

/// One round trip: BEGIN, an insert (the "batch's rows"), the guarded
/// take, COMMIT. Answers the take's result.
async fn batch(
    c: &AsyncPgConnection,
    p: i64,
    units: i32,
    price: i64,
    mark: &str,
) -> Result<(), StorageError> {
    let insert = cached("INSERT INTO products (name, price, stock) VALUES ($1, 1, 1)")
        .bind::<Text, _>(mark)
        .execute(&mut &*c);
    let takes = [Take {
        product: p,
        units,
        price,
    }];
    let (begun, inserted, taken, committed) =
        futures::join!(tx::begin(c), insert, take_in(c, &takes), tx::commit(c));
    begun.unwrap();
    inserted.unwrap();
    committed.unwrap();
    taken
}

#[tokio::test]
async fn a_guard_that_fails_rolls_back_the_whole_round_trip() {
    let app = TestApp::spawn().await;
    let mut c = commerce_storage::conn(&app.state.db).await.unwrap();
    let p = product(&mut c, "sale", 100, 5).await;

    // Enough stock at the price read: taken, and the row sent with it kept.
    batch(&c, p, 2, 100, "kept").await.unwrap();
    assert_eq!(stock_and_marks(&mut c, p, "kept").await, (3, 1));

    // Short: the check fails, the insert before it is rolled back.
    let short = batch(&c, p, 4, 100, "short").await;
    assert!(
        matches!(&short, Err(StorageError::CheckViolation(name)) if name == STOCK_CHECK),
        "{short:?}"
    );
    assert_eq!(stock_and_marks(&mut c, p, "short").await, (3, 0));

    // The price changed since it was read: refused the same way.
    let repriced = batch(&c, p, 1, 99, "repriced").await;
    assert!(
        matches!(&repriced, Err(StorageError::CheckViolation(name)) if name == STOCK_CHECK),
        "{repriced:?}"
    );
    assert_eq!(stock_and_marks(&mut c, p, "repriced").await, (3, 0));

    // The connection is usable and outside any transaction afterwards.
    batch(&c, p, 3, 100, "last").await.unwrap();
    assert_eq!(stock_and_marks(&mut c, p, "last").await, (0, 1));
}

#[tokio::test]
async fn statements_being_prepared_keep_their_place_before_the_commit() {
    let app = TestApp::spawn().await;
    let mut c = commerce_storage::conn(&app.state.db).await.unwrap();
    let p = product(&mut c, "sale", 100, 1).await;
    // A fresh statement text per round, so each is prepared on its first
    // poll while the COMMIT behind it is already cached: it must still be
    // sent after, or the short take would not roll back the insert.
    for round in 0..5 {
        let mark = format!("round-{round}");
        let sql = format!("INSERT INTO products (name, price, stock) VALUES ($1, {round}, 1)");
        let insert = cached(&sql).bind::<Text, _>(&mark).execute(&mut &*c);
        let takes = [Take {
            product: p,
            units: 2,
            price: 100,
        }];
        let (begun, inserted, taken, committed) =
            futures::join!(tx::begin(&c), insert, take_in(&c, &takes), tx::commit(&c));
        begun.unwrap();
        inserted.unwrap();
        committed.unwrap();
        assert!(
            matches!(taken, Err(StorageError::CheckViolation(_))),
            "{taken:?}"
        );
        assert_eq!(
            stock_and_marks(&mut c, p, &mark).await,
            (1, 0),
            "round {round}"
        );
    }
}

async fn stock_of(c: &mut AsyncPgConnection, id: i64) -> i32 {
    stock_and_marks(c, id, "").await.0
}

#[tokio::test]
async fn a_batch_takes_every_product_or_none() {
    let app = TestApp::spawn().await;
    let mut c = commerce_storage::conn(&app.state.db).await.unwrap();
    let a = product(&mut c, "a", 100, 5).await;
    let b = product(&mut c, "b", 50, 1).await;
    let take = |product, units, price| Take {
        product,
        units,
        price,
    };

    // b is short: a's units stay too.
    let short = take_in(&c, &[take(a, 2, 100), take(b, 2, 50)]).await;
    assert!(
        matches!(&short, Err(StorageError::CheckViolation(name)) if name == STOCK_CHECK),
        "{short:?}"
    );
    assert_eq!(
        (stock_of(&mut c, a).await, stock_of(&mut c, b).await),
        (5, 1)
    );

    // a's price changed: b's unit stays too.
    let repriced = take_in(&c, &[take(b, 1, 50), take(a, 1, 99)]).await;
    assert!(
        matches!(&repriced, Err(StorageError::CheckViolation(_))),
        "{repriced:?}"
    );
    assert_eq!(
        (stock_of(&mut c, a).await, stock_of(&mut c, b).await),
        (5, 1)
    );

    // Both there, given in any order: both taken.
    take_in(&c, &[take(b, 1, 50), take(a, 2, 100)])
        .await
        .unwrap();
    assert_eq!(
        (stock_of(&mut c, a).await, stock_of(&mut c, b).await),
        (3, 0)
    );
}

/// Two batches sharing products must lock them in the same order, or each
/// can hold the row the other waits for (a deadlock: both batches fail).
/// Here the higher id is held elsewhere and a take lists it first: the take
/// must already hold the lower id while it waits.
#[tokio::test]
async fn a_batch_locks_its_products_in_id_order() {
    let app = TestApp::spawn().await;
    let mut setup = commerce_storage::conn(&app.state.db).await.unwrap();
    let low = product(&mut setup, "low", 10, 5).await;
    let high = product(&mut setup, "high", 10, 5).await;
    assert!(low < high);

    let holder = commerce_storage::conn(&app.state.db).await.unwrap();
    tx::begin(&holder).await.unwrap();
    cached("SELECT id FROM products WHERE id = $1 FOR UPDATE")
        .bind::<BigInt, _>(high)
        .execute(&mut &*holder)
        .await
        .unwrap();

    let taker = commerce_storage::conn(&app.state.db).await.unwrap();
    let takes = [
        Take {
            product: high,
            units: 1,
            price: 10,
        },
        Take {
            product: low,
            units: 1,
            price: 10,
        },
    ];
    let waiting = tokio::spawn(async move {
        tx::begin(&taker).await.unwrap();
        let taken = take_in(&taker, &takes).await;
        tx::commit(&taker).await.unwrap();
        taken
    });

    // Until the taker holds `low` (it waits on `high` meanwhile).
    let mut held = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let probe = cached("SELECT id FROM products WHERE id = $1 FOR UPDATE NOWAIT")
            .bind::<BigInt, _>(low)
            .execute(&mut setup)
            .await;
        if probe.is_err() {
            held = true;
            break;
        }
    }
    assert!(held, "the take did not lock the lower id first");
    assert!(
        !waiting.is_finished(),
        "the take did not wait for the higher id"
    );

    tx::commit(&holder).await.unwrap();
    waiting.await.unwrap().unwrap();
    assert_eq!(stock_of(&mut setup, low).await, 4);
    assert_eq!(stock_of(&mut setup, high).await, 4);
}
