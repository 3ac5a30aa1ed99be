//! What a PostgreSQL restart does to a connection, seen through
//! `StorageError`: the backend is terminated (`pg_terminate_backend` sends
//! the same 57P01 a fast shutdown sends, to this test's own backend only),
//! and every resulting error must be `Unavailable` (503 `db_unavailable`),
//! never `Other` (500 `internal`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_storage::{DbConfig, StorageError};
use commerce_testkit::TestDb;
use diesel::sql_types::Integer;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use std::time::Duration;

#[derive(diesel::QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

async fn pid(c: &mut AsyncPgConnection) -> i32 {
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(c)
        .await
        .unwrap()
        .pid
}

async fn terminate(db: &TestDb, pid: i32) {
    let mut admin = db.conn().await;
    diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
        .execute(&mut admin)
        .await
        .unwrap();
    // Let the FATAL message and the close reach the client.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_mid_transaction_is_unavailable() {
    let db = TestDb::create().await;
    let cfg = DbConfig::with_url(&db.url);
    let mut c = commerce_storage::connect(&cfg).await.unwrap();
    let victim = pid(&mut c).await;
    let result = c
        .transaction(async |tx| {
            diesel::sql_query("SELECT 1").execute(tx).await?;
            terminate(&db, victim).await;
            diesel::sql_query("SELECT 1").execute(tx).await?;
            Ok::<_, StorageError>(())
        })
        .await;
    let err = result.unwrap_err();
    assert!(
        err.is_unavailable(),
        "a terminated backend mid-transaction: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_whose_backend_was_terminated_is_unavailable() {
    let db = TestDb::create().await;
    let cfg = DbConfig::with_url(&db.url);
    let mut c = commerce_storage::connect(&cfg).await.unwrap();
    let victim = pid(&mut c).await;
    terminate(&db, victim).await;
    let err: StorageError = diesel::sql_query("SELECT 1")
        .execute(&mut c)
        .await
        .unwrap_err()
        .into();
    assert!(err.is_unavailable(), "a terminated idle backend: {err:?}");
}
