//! SIGTERM stops the real `commerce-server` process within its configured
//! shutdown timeout while the broker is stalled (SIGSTOP: connections
//! open, nothing answered), with events in flight (issue 25). Prints the
//! time from SIGTERM to exit: `cargo nextest run -p commerce-server --test
//! kafka_sigterm --no-capture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use commerce_testkit::broker::Broker;
use commerce_testkit::TestDb;
use common::ServerProcess as Server;
use diesel_async::RunQueryDsl;
use std::process::Command;
use std::time::{Duration, Instant};

async fn insert_events(db: &TestDb, n: i64) {
    let mut c = db.conn().await;
    diesel::sql_query(format!(
        "INSERT INTO outbox (id, event_type, aggregate_key, payload) \
         SELECT gen_random_uuid(), 'order_paid', g::text, jsonb_build_object('order_id', g, 'user_id', 1, 'amount', 10, \
           'paid_at', now(), 'items', jsonb_build_array()) \
         FROM generate_series(1, {n}) g"
    ))
    .execute(&mut c)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sigterm_with_the_broker_stalled_exits_within_the_shutdown_timeout() {
    sigterm_with_the_broker_stalled(5).await;
}

/// A shutdown timeout shorter than the producer's flush bound still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sigterm_with_the_broker_stalled_and_a_one_second_timeout() {
    sigterm_with_the_broker_stalled(1).await;
}

/// Starts the binary with `http.shutdown_timeout_secs = shutdown_secs`,
/// stalls the broker with events in flight, sends SIGTERM and checks the
/// process is gone within the timeout (plus process teardown).
async fn sigterm_with_the_broker_stalled(shutdown_secs: u64) {
    let broker = Broker::start();
    let db = TestDb::create().await;
    let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
    let mut server = Server::start(
        "commerce-server",
        &db,
        &broker,
        &prefix,
        &[
            (
                "COMMERCE__HTTP__SHUTDOWN_TIMEOUT_SECS",
                shutdown_secs.to_string(),
            ),
            // Long enough that a publish to the stalled broker is still in
            // flight when SIGTERM comes.
            ("COMMERCE__KAFKA__DELIVERY_TIMEOUT_MS", "30000".to_owned()),
        ],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    server.wait_live(&client).await;
    // Events flow through the broker first (topics made, producer and
    // consumers connected).
    insert_events(&db, 50).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while db
        .scalar("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NOT NULL")
        .await
        < 50
    {
        assert!(
            Instant::now() < deadline,
            "events were not published before the stall"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.stall();
    insert_events(&db, 200).await;
    // The relay claims them and waits on the broker's answer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let in_flight = db
        .scalar("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL AND claimed_until IS NOT NULL")
        .await;
    let pid = server.child.id();
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = signalled + Duration::from_secs(shutdown_secs * 4 + 5);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running {:?} after SIGTERM with the broker stalled",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    eprintln!(
        "FIGURE sigterm with the broker stalled: exited ({exit}) {} ms after SIGTERM \
         (shutdown timeout {shutdown_secs} s; {in_flight} events claimed and in flight)",
        took.as_millis()
    );
    assert!(
        took <= Duration::from_secs(shutdown_secs) + Duration::from_millis(1500),
        "exit took {took:?}, over the {shutdown_secs} s shutdown timeout"
    );
    // What the stalled broker never acknowledged is still in the outbox.
    assert!(
        db.scalar("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
            .await
            > 0
    );
    broker.thaw();
    drop(server);
    drop(broker);
}
