//! The read replica (`database.replica_url`), with real processes: a
//! disposable primary and a hot standby made with `pg_basebackup -R`.
//! Catalog reads go to the replica; an order's stock and a payment never do
//! (checked with the replica's replay paused, so it shows an older stock);
//! with the replica stopped pages keep answering from the primary and the
//! `db_replica` breaker opens; once it is back the breaker heals and reads
//! return to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_testkit::pg_server::PgServer;
use commerce_testkit::{TestApp, TestDb};
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BREAKER: &str = "db_replica";

/// `db_reads_total` by target: (replica, primary).
async fn reads(app: &TestApp) -> (u64, u64) {
    let text = app.metrics_text().await;
    let value = |target: &str| {
        let prefix = format!("db_reads_total{{target=\"{target}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    (value("replica"), value("primary"))
}

fn breaker_state(app: &TestApp) -> commerce_resilience::BreakerState {
    app.state.breakers.get(BREAKER).expect("db_replica").state()
}

/// A product page: status and body.
async fn page(app: &TestApp, id: i64) -> (u16, Value) {
    app.get_json(&format!("/api/v1/products/{id}"), None).await
}

/// One round of catalog reads (the list and each product's page), each
/// checked against what the products are.
async fn browse(app: &TestApp, products: &[(i64, &str)]) {
    let (s, list) = app.get_json("/api/v1/products?size=50", None).await;
    assert_eq!(s, 200, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    for (id, name) in products {
        assert!(names.contains(name), "{name} missing from {list}");
        let (s, body) = page(app, *id).await;
        assert_eq!((s, body["name"].as_str()), (200, Some(*name)), "{body}");
    }
}

async fn scalar(url: &str, sql: &str) -> Option<i64> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut cfg = commerce_storage::DbConfig::with_url(url);
    cfg.connect_timeout = Duration::from_secs(2);
    let mut c = commerce_storage::connect(&cfg).await.ok()?;
    let row: N = diesel::sql_query(sql).get_result(&mut c).await.ok()?;
    Some(row.n)
}

async fn on_replica(url: &str, sql: &str) {
    let mut c = commerce_storage::connect(&commerce_storage::DbConfig::with_url(url))
        .await
        .unwrap();
    diesel::sql_query(sql).execute(&mut c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_reads_go_to_the_replica_and_survive_its_outage() {
    // Declared first, dropped last: after the app and its database.
    let primary = PgServer::start_primary().await;
    let replica = PgServer::start_replica_of(&primary).await;
    let db = Arc::new(TestDb::create_on(&primary.server_url()).await);
    let replica_url = replica.url(&db.name);
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let app = TestApp::spawn_on(db.clone(), &prefix, |s| {
        s.database.replica_url = Some(replica_url.clone());
        // Every page read is a miss (the list is never cached), so each
        // read shows where misses go.
        s.catalog.detail_cache = false;
        // Orders decide on the product rows themselves.
        s.orders.stock_gate = false;
    })
    .await;

    let products = [
        (app.create_product("replica-a", 1).await, "replica-a"),
        (app.create_product("replica-b", 50).await, "replica-b"),
        (app.create_product("replica-c", 50).await, "replica-c"),
    ];
    let count_sql = "SELECT COUNT(*) AS n FROM products WHERE name LIKE 'replica-%'";
    let lag = commerce_testkit::wait_until(
        Duration::from_secs(30),
        "products on the replica",
        || async { scalar(&replica_url, count_sql).await == Some(3) },
    )
    .await;
    eprintln!("products visible on the replica after {lag:?}");

    // Reads go to the replica.
    let before = reads(&app).await;
    for _ in 0..20 {
        browse(&app, &products).await;
    }
    let (s, body) = app.get_json("/api/v1/products/popular", None).await;
    assert_eq!(s, 200, "{body}");
    let after = reads(&app).await;
    let (replica_reads, primary_reads) = (after.0 - before.0, after.1 - before.1);
    let share = replica_reads as f64 / (replica_reads + primary_reads).max(1) as f64;
    eprintln!(
        "replica share of catalog reads: {:.1} % ({replica_reads} replica, {primary_reads} primary)",
        share * 100.0
    );
    assert!(replica_reads >= 80, "{replica_reads} replica reads");
    assert!(share >= 0.9, "replica share {share}");

    // Money and stock decisions read the primary: with the replica's replay
    // paused it shows the old stock, and the orders still see the new one.
    let (sold_out, _) = products[0];
    on_replica(&replica_url, "SELECT pg_wal_replay_pause()").await;
    let (alice, bob) = (app.create_user("alice").await, app.create_user("bob").await);
    let (s, first) = app.order_one(&alice, sold_out).await;
    assert_eq!(s, 201, "{first}");
    let (s, second) = app.order_one(&bob, sold_out).await;
    assert_eq!((s, second["code"].as_str()), (409, Some("out_of_stock")));
    let (s, stale) = page(&app, sold_out).await;
    assert_eq!((s, stale["stock"].as_i64()), (200, Some(1)), "lagging page");
    on_replica(&replica_url, "SELECT pg_wal_replay_resume()").await;
    commerce_testkit::wait_until(Duration::from_secs(10), "the page catches up", || async {
        page(&app, sold_out).await.1["stock"].as_i64() == Some(0)
    })
    .await;

    // The replica stops: pages answer from the primary, the breaker opens.
    assert_eq!(
        breaker_state(&app),
        commerce_resilience::BreakerState::Closed
    );
    let stopped = Instant::now();
    replica.stop_immediate().await;
    let opened =
        commerce_testkit::wait_until(Duration::from_secs(30), "db_replica opens", || async {
            browse(&app, &products).await;
            breaker_state(&app) == commerce_resilience::BreakerState::Open
        })
        .await;
    eprintln!(
        "db_replica opened {opened:?} after the replica was stopped ({:?} including the stop)",
        stopped.elapsed()
    );
    let during = reads(&app).await;
    for _ in 0..5 {
        browse(&app, &products).await;
    }
    let (s, stale) = page(&app, sold_out).await;
    assert_eq!((s, stale["stock"].as_i64()), (200, Some(0)));
    let after_outage = reads(&app).await;
    assert_eq!(after_outage.0, during.0, "no replica read while it is down");
    assert!(
        after_outage.1 >= during.1 + 20,
        "{during:?} -> {after_outage:?}"
    );

    // Money paths are untouched: an order is placed and paid.
    let (in_stock, _) = products[1];
    app.charge(&alice, 1_000).await;
    let (s, placed) = app.order_one(&alice, in_stock).await;
    assert_eq!(s, 201, "{placed}");
    let id = placed["id"].as_i64().unwrap();
    let (s, paid) = app
        .post_json(
            &format!("/api/v1/orders/{id}/payment"),
            Some(&alice.token),
            None,
            &json!({}),
        )
        .await;
    assert_eq!(s, 200, "{paid}");

    // Back: the breaker heals and reads return to the replica.
    // The recovery watch may close the breaker before `start` returns (it
    // tries every 250 ms; `start` waits for pg_ctl, then for a connection
    // of its own): the heal is timed from the restart.
    let restarting = Instant::now();
    let closed = Arc::new(std::sync::Mutex::new(None));
    let watcher = {
        let (breaker, closed) = (app.state.breakers.get(BREAKER).unwrap(), closed.clone());
        tokio::spawn(async move {
            while breaker.state() != commerce_resilience::BreakerState::Closed {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            *closed.lock().unwrap() = Some(Instant::now());
        })
    };
    let accepting = replica.start().await;
    tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("db_replica closes within 30 s after the replica is back")
        .unwrap();
    let closed = closed.lock().unwrap().unwrap();
    eprintln!(
        "replica restarted (accepting) {:?} after pg_ctl start; db_replica closed {:?} after pg_ctl start",
        accepting - restarting,
        closed - restarting
    );
    let healed_at = reads(&app).await;
    commerce_testkit::wait_until(
        Duration::from_secs(15),
        "reads back on the replica",
        || async {
            browse(&app, &products).await;
            reads(&app).await.0 > healed_at.0
        },
    )
    .await;
    let back = reads(&app).await;
    for _ in 0..10 {
        browse(&app, &products).await;
    }
    let end = reads(&app).await;
    let (r, p) = (end.0 - back.0, end.1 - back.1);
    eprintln!("after healing: {r} replica reads, {p} primary");
    // A read slower than the breaker's timeout on a busy machine goes to
    // the primary; nearly all must be the replica's again.
    assert!(r >= 40 && p * 10 <= r, "{r} replica, {p} primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_not_there_costs_pages_nothing_and_orders_never_see_it() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::spawn_with(|s| {
        s.database.replica_url = Some(format!("postgres://postgres@127.0.0.1:{closed}/none"));
        s.catalog.detail_cache = false;
    })
    .await;
    let product = app.create_product("only-one", 1).await;
    let before = reads(&app).await;
    for _ in 0..10 {
        let (s, body) = page(&app, product).await;
        assert_eq!((s, body["stock"].as_i64()), (200, Some(1)), "{body}");
        let (s, body) = app.get_json("/api/v1/products", None).await;
        assert_eq!(s, 200, "{body}");
    }
    assert_eq!(breaker_state(&app), commerce_resilience::BreakerState::Open);
    // The one unit is sold once, and the page then says so: all primary.
    let (alice, bob) = (app.create_user("alice").await, app.create_user("bob").await);
    let (s, first) = app.order_one(&alice, product).await;
    assert_eq!(s, 201, "{first}");
    let (s, second) = app.order_one(&bob, product).await;
    assert_eq!((s, second["code"].as_str()), (409, Some("out_of_stock")));
    let (s, body) = page(&app, product).await;
    assert_eq!((s, body["stock"].as_i64()), (200, Some(0)), "{body}");
    let after = reads(&app).await;
    assert_eq!(
        after.0, before.0,
        "nothing served by a replica that is not there"
    );
    assert!(after.1 >= before.1 + 21, "{before:?} -> {after:?}");
    let (s, ready) = app.get_json("/health/ready", None).await;
    assert_eq!(
        (s, ready["status"].as_str()),
        (200, Some("degraded")),
        "{ready}"
    );
    assert_eq!(ready["checks"]["breakers"][BREAKER], "open", "{ready}");
}
