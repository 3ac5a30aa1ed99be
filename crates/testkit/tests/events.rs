//! Side effects through events (rule 6): outbox, relay, idempotent
//! consumers, dead letters; in process and through a real broker (tansu).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_events::consumers::DATA_PLATFORM;
use commerce_events::{Delivery, Event};
use commerce_resilience::BreakerState;
use commerce_testkit::broker::{kafka_mode_with, kafka_prefix, Broker};
use commerce_testkit::fake_http::{FakePeer, Mode};
use commerce_testkit::{TestApp, TestUser};
use diesel_async::RunQueryDsl;
use futures::StreamExt;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

async fn product(app: &TestApp, stock: i32) -> i64 {
    let mut c = app.db.conn().await;
    let row: Id = diesel::sql_query(
        "INSERT INTO products (name, price, stock) VALUES ('p', 10, $1) RETURNING id",
    )
    .bind::<diesel::sql_types::Integer, _>(stock)
    .get_result(&mut c)
    .await
    .unwrap();
    row.id
}

/// Gives every user money (directly, with its ledger row).
async fn fund(app: &TestApp, amount: i64) {
    let mut c = app.db.conn().await;
    diesel::sql_query(format!(
        "WITH u AS (UPDATE users SET balance = balance + {amount} RETURNING id, balance) \
         INSERT INTO balance_ledger (user_id, delta, balance_after, kind) SELECT id, {amount}, balance, 'charge' FROM u"
    ))
    .execute(&mut c)
    .await
    .unwrap();
}

/// Creates and pays one order (2 units) per user, `in_flight` at a time,
/// alternating instances; `progress` counts paid orders.
async fn pay_orders(
    apps: &[&TestApp],
    users: &[TestUser],
    product: i64,
    in_flight: usize,
    progress: &AtomicUsize,
) -> Vec<Duration> {
    futures::stream::iter(users.iter().enumerate())
        .map(|(i, u)| {
            let app = apps[i % apps.len()];
            async move {
                let (s, o) = app
                    .post_json(
                        "/api/v1/orders",
                        Some(&u.token),
                        None,
                        &json!({"items": [{"product_id": product, "quantity": 2}]}),
                    )
                    .await;
                assert_eq!(s, 201, "{o}");
                let started = Instant::now();
                let (s, p) = app
                    .post_json(
                        &format!("/api/v1/orders/{}/payment", o["id"]),
                        Some(&u.token),
                        None,
                        &json!({}),
                    )
                    .await;
                assert_eq!(s, 200, "{p}");
                progress.fetch_add(1, Ordering::SeqCst);
                started.elapsed()
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the relay has published every outbox row.
async fn outbox_drained(app: &TestApp, what: &str, limit: Duration) {
    eventually(what, limit, async || {
        count(
            app,
            "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL",
        )
        .await
            == 0
    })
    .await;
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.db.scalar(sql).await
}

fn p95(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 95 / 100).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_consumers_apply_each_event_once() {
    let peer = FakePeer::start().await;
    let url = peer.url.clone();
    let app = TestApp::spawn_with(|s| s.data_platform.url = Some(url)).await;
    let users = app.seed_users(60).await;
    fund(&app, 1_000).await;
    let p = product(&app, 1_000).await;
    pay_orders(&[&app], &users, p, 20, &AtomicUsize::new(0)).await;
    eventually(
        "every consumer to see 60 paid orders",
        Duration::from_secs(20),
        async || {
            count(&app, "SELECT COUNT(*) AS n FROM inbox_ranking").await == 60
                && peer.distinct() == 60
        },
    )
    .await;
    assert_eq!(peer.accepted(), 60, "no duplicate effects");
    // The relay marks rows published once every consumer has them.
    outbox_drained(&app, "the outbox to be settled", Duration::from_secs(5)).await;
    assert_eq!(
        count(&app, &format!("SELECT COALESCE(SUM(units), 0)::BIGINT AS n FROM product_sales_daily WHERE product_id = {p}")).await,
        120
    );
    // The notification consumer (no URL: logs) saw paid orders too.
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM inbox_notification").await,
        60
    );
    let (_, ready) = app.get_json("/health/ready", None).await;
    assert_eq!(ready["checks"]["outbox"]["unpublished"], 0);
    let lag_ms = count(
        &app,
        "SELECT (percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM i.processed_at - o.created_at)) * 1000)::BIGINT AS n \
         FROM inbox_ranking i JOIN outbox o ON o.id = i.event_id",
    )
    .await;
    eprintln!("FIGURE in-process events: commit-to-effect lag p95 {lag_ms} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_ignored_by_every_consumer() {
    let peer = FakePeer::start().await;
    let url = peer.url.clone();
    let app = TestApp::spawn_with(|s| s.data_platform.url = Some(url)).await;
    let p = product(&app, 10).await;
    let event = paid_event(p, 2);
    for consumer in app.state.events.consumers() {
        assert_eq!(
            app.state.events.deliver(consumer.as_ref(), &event).await,
            Delivery::Processed
        );
        assert_eq!(
            app.state.events.deliver(consumer.as_ref(), &event).await,
            Delivery::Duplicate
        );
    }
    assert_eq!(peer.accepted(), 1);
    assert_eq!(
        count(
            &app,
            &format!("SELECT units AS n FROM product_sales_daily WHERE product_id = {p}")
        )
        .await,
        2
    );
}

/// Pays one order through the API and waits (at most `limit`) for the
/// ranking consumer to have it; returns how long that took.
async fn one_payment_reaches_ranking(app: &TestApp, limit: Duration) -> Duration {
    let users = app.seed_users(1).await;
    fund(app, 1_000).await;
    let p = product(app, 10).await;
    let started = Instant::now();
    pay_orders(&[app], &users, p, 1, &AtomicUsize::new(0)).await;
    eventually(
        "the paid order's event at the ranking consumer",
        limit,
        async || count(app, "SELECT COUNT(*) AS n FROM inbox_ranking").await == 1,
    )
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_wakes_on_this_processs_writes_instead_of_its_poll() {
    // A poll this rare never fires within the test: only the wake-up by
    // the payment's own outbox write can deliver in time.
    let app = TestApp::spawn_with(|s| s.events.relay_idle_ms = 600_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // first (empty) pass done
    let took = one_payment_reaches_ranking(&app, Duration::from_secs(5)).await;
    eprintln!(
        "FIGURE relay wake-up: payment to ranking {} ms",
        took.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_polls_for_rows_another_instance_wrote() {
    let app = TestApp::spawn_with(|s| s.events.relay_idle_ms = 200).await;
    let p = product(&app, 10).await;
    let event = paid_event(p, 1);
    // Written straight into the table, as another process would: no
    // wake-up reaches this relay, its poll has to find the row.
    let mut c = app.db.conn().await;
    diesel::sql_query(
        "INSERT INTO outbox (id, event_type, aggregate_key, payload) VALUES ($1, $2, $3, $4)",
    )
    .bind::<diesel::sql_types::Uuid, _>(event.id)
    .bind::<diesel::sql_types::Text, _>(&event.event_type)
    .bind::<diesel::sql_types::Text, _>(&event.key)
    .bind::<diesel::sql_types::Jsonb, _>(&event.payload)
    .execute(&mut c)
    .await
    .unwrap();
    eventually(
        "the row to be relayed",
        Duration::from_secs(5),
        async || count(&app, "SELECT COUNT(*) AS n FROM inbox_ranking").await == 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_writes_that_never_pause_the_relay_still_runs_every_max_delay() {
    let app = TestApp::spawn_with(|s| {
        s.events.relay_idle_ms = 600_000;
        s.events.relay_lull_ms = 100;
        s.events.relay_max_delay_ms = 300;
    })
    .await;
    // Writes every 10 ms, for longer than the test may take: the lull the
    // relay waits for never comes, only `max_delay` lets it run.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn({
        let stop = stop.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !AtomicBool::load(&stop, Ordering::SeqCst) && Instant::now() < deadline {
                commerce_storage::outbox::written();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let took = one_payment_reaches_ranking(&app, Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    writes.await.unwrap();
    eprintln!(
        "FIGURE relay under steady writes: payment to ranking {} ms",
        took.as_millis()
    );
}

fn paid_event(product: i64, quantity: i64) -> Event {
    Event {
        id: uuid::Uuid::now_v7(),
        event_type: "order_paid".into(),
        key: "1".into(),
        payload: json!({"order_id": 1, "user_id": 1, "amount": 10 * quantity, "paid_at": chrono::Utc::now(),
                         "items": [{"product_id": product, "quantity": quantity, "unit_price": 10}]}),
        created_at: chrono::Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_skips_what_an_inbox_holds_and_applies_the_rest_once() {
    let peer = FakePeer::start().await;
    let url = peer.url.clone();
    let app = TestApp::spawn_with(|s| s.data_platform.url = Some(url)).await;
    let p = product(&app, 10).await;
    let events: Vec<Event> = (0..6).map(|_| paid_event(p, 1)).collect();
    // The first one already reached every consumer on its own.
    for consumer in app.state.events.consumers() {
        assert_eq!(
            app.state
                .events
                .deliver(consumer.as_ref(), &events[0])
                .await,
            Delivery::Processed
        );
    }
    let waits = app.state.events.deliver_many(&events, 4).await;
    assert_eq!(waits, vec![None; 6], "all settled");
    assert_eq!(peer.accepted(), 6, "the seen event was not sent again");
    assert_eq!(peer.distinct(), 6);
    for table in ["inbox_data_platform", "inbox_notification", "inbox_ranking"] {
        assert_eq!(
            count(&app, &format!("SELECT COUNT(*) AS n FROM {table}")).await,
            6,
            "{table}"
        );
    }
    let units = format!("SELECT units AS n FROM product_sales_daily WHERE product_id = {p}");
    assert_eq!(count(&app, &units).await, 6);
    // The same batch again changes nothing.
    assert_eq!(
        app.state.events.deliver_many(&events, 4).await,
        vec![None; 6]
    );
    assert_eq!(peer.accepted(), 6);
    assert_eq!(count(&app, &units).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_event_in_a_transactional_batch_is_parked_and_the_rest_apply_once() {
    let app = TestApp::spawn().await;
    let p = product(&app, 10).await;
    let mut events: Vec<Event> = (0..5).map(|_| paid_event(p, 1)).collect();
    // An unknown product: the ranking consumer refuses it for good, which
    // rolls back the batch's shared transaction.
    events.insert(2, paid_event(p + 1_000_000, 1));
    let waits = app.state.events.deliver_many(&events, 4).await;
    assert_eq!(waits, vec![None; 6], "all settled");
    let units = format!("SELECT units AS n FROM product_sales_daily WHERE product_id = {p}");
    assert_eq!(count(&app, &units).await, 5, "each good event counted once");
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT COUNT(*) AS n FROM dead_letters WHERE consumer = 'ranking' AND event_id = '{}'",
                events[2].id
            )
        )
        .await,
        1,
        "the bad one parked"
    );
    // Delivered again, nothing changes.
    app.state.events.deliver_many(&events, 4).await;
    assert_eq!(count(&app, &units).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_inbox_write_fails_is_delivered_again_not_lost() {
    let peer = FakePeer::start().await;
    let url = peer.url.clone();
    let app = TestApp::spawn_with(|s| s.data_platform.url = Some(url)).await;
    let p = product(&app, 10).await;
    let events: Vec<Event> = (0..4).map(|_| paid_event(p, 1)).collect();
    // The data platform's inbox refuses writes: its effects happen, but
    // cannot be recorded.
    let mut c = app.db.conn().await;
    diesel::sql_query(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$",
    )
    .execute(&mut c)
    .await
    .unwrap();
    diesel::sql_query("CREATE TRIGGER refuse BEFORE INSERT ON inbox_data_platform FOR EACH STATEMENT EXECUTE FUNCTION refuse()")
        .execute(&mut c)
        .await
        .unwrap();
    let waits = app.state.events.deliver_many(&events, 4).await;
    assert!(waits.iter().all(Option::is_some), "none settled: {waits:?}");
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM inbox_data_platform").await,
        0
    );
    // The other consumers recorded theirs.
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM inbox_ranking").await,
        4
    );
    diesel::sql_query("DROP TRIGGER refuse ON inbox_data_platform")
        .execute(&mut c)
        .await
        .unwrap();
    assert_eq!(
        app.state.events.deliver_many(&events, 4).await,
        vec![None; 4]
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM inbox_data_platform").await,
        4
    );
    assert_eq!(peer.distinct(), 4, "every event reached the peer");
    // Ranking applied each sale once although its events came twice.
    assert_eq!(
        count(
            &app,
            &format!("SELECT units AS n FROM product_sales_daily WHERE product_id = {p}")
        )
        .await,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_data_platform_parks_events_then_redrive_delivers_once() {
    let peer = FakePeer::start().await;
    peer.set_mode(Mode::Fail(500));
    let url = peer.url.clone();
    let app = TestApp::spawn_with(|s| {
        s.data_platform.url = Some(url);
        s.events.max_attempts = 3;
        // Keep the breaker closed so every attempt reaches the peer.
        s.breaker.failure_threshold = 1000;
    })
    .await;
    let users = app.seed_users(10).await;
    fund(&app, 1_000).await;
    let p = product(&app, 100).await;
    pay_orders(&[&app], &users, p, 10, &AtomicUsize::new(0)).await;
    eventually("10 dead letters", Duration::from_secs(30), async || {
        count(
            &app,
            "SELECT COUNT(*) AS n FROM dead_letters WHERE redriven_at IS NULL",
        )
        .await
            == 10
    })
    .await;
    assert_eq!(
        count(&app, "SELECT MIN(attempts)::BIGINT AS n FROM dead_letters").await,
        3
    );
    assert!(peer.requests() >= 30, "three attempts each");
    // Other consumers were not held back.
    eventually("ranking effects", Duration::from_secs(10), async || {
        count(&app, "SELECT COUNT(*) AS n FROM inbox_ranking").await == 10
    })
    .await;

    peer.set_mode(Mode::Ok);
    let (s, list) = app.get_json_admin("/admin/dead-letters").await;
    assert_eq!(s, 200);
    let ids: Vec<i64> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 10);
    assert!(list["items"][0]["consumer"] == DATA_PLATFORM);
    for id in &ids {
        let (s, r) = app
            .admin_post(&format!("/admin/dead-letters/{id}/redrive"), &json!({}))
            .await;
        assert_eq!((s, r["outcome"].as_str()), (200, Some("processed")), "{r}");
    }
    assert_eq!(peer.distinct(), 10);
    assert_eq!(peer.accepted(), 10);
    // Re-driving again changes nothing.
    let (s, _) = app
        .admin_post(
            &format!("/admin/dead-letters/{}/redrive", ids[0]),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(peer.accepted(), 10);
    let (_, list) = app.get_json_admin("/admin/dead-letters").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (s, _) = app
        .admin_post("/admin/dead-letters/999999/redrive", &json!({}))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_data_platform_does_not_slow_payments() {
    let fast_peer = FakePeer::start().await;
    let slow_peer = FakePeer::start().await;
    slow_peer.set_mode(Mode::Delay(Duration::from_millis(200)));
    let (fast_url, slow_url) = (fast_peer.url.clone(), slow_peer.url.clone());
    let fast = TestApp::spawn_with(|s| s.data_platform.url = Some(fast_url)).await;
    let slow = TestApp::spawn_with(|s| s.data_platform.url = Some(slow_url)).await;
    let mut p95s = Vec::new();
    for app in [&fast, &slow] {
        let users = app.seed_users(100).await;
        fund(app, 1_000).await;
        let p = product(app, 1_000).await;
        p95s.push(p95(
            pay_orders(&[app], &users, p, 10, &AtomicUsize::new(0)).await
        ));
    }
    eprintln!(
        "payment p95: fast data platform {:?}, 200 ms data platform {:?}",
        p95s[0], p95s[1]
    );
    // Generous: the 200 ms call is off the request path, so it must not add
    // anything near 200 ms to the payment.
    assert!(
        p95s[1] < p95s[0] * 2 + Duration::from_millis(100),
        "{p95s:?}"
    );
    eventually(
        "the slow peer to get every event",
        Duration::from_secs(30),
        async || slow_peer.distinct() == 100,
    )
    .await;
}

/// What goes wrong during a Kafka run.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    BrokerOutage,
    ConsumerRestart,
}

async fn kafka_run(fault: Fault, orders: usize) {
    let mut broker = Broker::start();
    let peer = FakePeer::start().await;
    let prefix = kafka_prefix();
    let address = broker.address();
    let configure = |s: &mut commerce_server::Settings| {
        kafka_mode_with(s, &address, &prefix);
        s.kafka.delivery_timeout_ms = 2000;
        s.data_platform.url = Some(peer.url.clone());
        s.breaker.open_ms = 500;
        s.breaker.max_open_ms = 2000;
    };
    let a = TestApp::spawn_with(configure).await;
    let b = a.sibling(configure).await;
    let users = a.seed_users(orders).await;
    fund(&a, 1_000).await;
    let p = product(&a, 10_000).await;

    let progress = AtomicUsize::new(0);
    let apps = [&a, &b];
    let payments = pay_orders(&apps, &users, p, 25, &progress);
    let chaos = async {
        let wait_for = |n: usize| {
            let progress = &progress;
            async move {
                while progress.load(Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let mut restarted = None;
        match fault {
            Fault::BrokerOutage => {
                wait_for(orders / 4).await;
                eprintln!("stopping broker");
                broker.stop();
                wait_for(orders / 2).await;
                // The outage lasts until both relays' breakers opened, so
                // recovery is through the breaker's probe on every machine,
                // not a reconnect inside one delivery timeout. Each is seen
                // apart: a breaker alternates open and half-open (probing)
                // while the broker is away, so both need not be open at once.
                let mut opened = [false, false];
                eventually(
                    "both kafka breakers to open",
                    Duration::from_secs(60),
                    async || {
                        for (seen, app) in opened.iter_mut().zip([&a, &b]) {
                            *seen |= app.state.breakers.kafka().state() != BreakerState::Closed;
                        }
                        opened == [true, true]
                    },
                )
                .await;
                broker.resume();
                eprintln!("broker resumed");
            }
            Fault::ConsumerRestart => {
                wait_for(orders / 4).await;
                // One instance's consumers (and relay) die mid-batch; its
                // HTTP side keeps taking payments.
                b.state.shutdown.cancel();
                eprintln!("consumers of b stopped");
                wait_for(orders / 2).await;
                restarted = Some(a.sibling(configure).await);
                eprintln!("b restarted");
            }
        }
        restarted
    };
    let (_, restarted) = tokio::join!(payments, chaos);
    let n = i64::try_from(orders).unwrap();
    let mut polls = 0u32;
    eventually(
        "every effect of the paid orders",
        Duration::from_secs(150),
        async || {
            // Every consumer group, each at its own pace.
            let ranking = count(&a, "SELECT COUNT(*) AS n FROM inbox_ranking").await;
            let notified = count(&a, "SELECT COUNT(*) AS n FROM inbox_notification").await;
            let unpublished = count(
                &a,
                "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL",
            )
            .await;
            polls += 1;
            if polls.is_multiple_of(50) {
                // Which group lags, if this ever times out.
                eprintln!(
                    "waiting: data_platform {}/{orders}, ranking {ranking}/{n}, notification {notified}/{n}, unpublished {unpublished}",
                    peer.distinct()
                );
            }
            peer.distinct() == orders && ranking == n && notified == n
        },
    )
    .await;
    if fault == Fault::BrokerOutage {
        for app in [&a, &b] {
            assert_eq!(
                app.state.breakers.kafka().state(),
                BreakerState::Closed,
                "the kafka breaker heals once the broker is back"
            );
        }
    }
    assert_eq!(peer.accepted(), orders, "each data-platform effect once");
    assert_eq!(
        count(&a, "SELECT COUNT(*) AS n FROM inbox_data_platform").await,
        n
    );
    assert_eq!(
        count(&a, "SELECT COUNT(*) AS n FROM inbox_notification").await,
        n
    );
    assert_eq!(
        count(
            &a,
            &format!("SELECT COALESCE(SUM(units), 0)::BIGINT AS n FROM product_sales_daily WHERE product_id = {p}")
        )
        .await,
        2 * n,
        "each ranking effect once"
    );
    assert_eq!(
        count(
            &a,
            "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL"
        )
        .await,
        0
    );
    drop(restarted);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kafka_every_effect_happens_once_across_a_broker_outage() {
    kafka_run(Fault::BrokerOutage, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kafka_every_effect_happens_once_when_a_consumer_dies_mid_batch() {
    kafka_run(Fault::ConsumerRestart, 1000).await;
}

/// Figures for the closing note (also checks every event lands once): relay
/// throughput to the broker, end-to-end lag, and how long a 10 000-event
/// backlog takes to drain after the broker returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_backlog_of_ten_thousand_drains_after_the_broker_returns() {
    let mut broker = Broker::start();
    let prefix = kafka_prefix();
    let address = broker.address();
    let app = TestApp::spawn_with(|s| {
        kafka_mode_with(s, &address, &prefix);
        s.kafka.delivery_timeout_ms = 2000;
        s.breaker.open_ms = 500;
        s.breaker.max_open_ms = 1000;
        s.events.relay_batch = 1000;
    })
    .await;
    let p = product(&app, 10).await;
    // Let the consumers join their groups, then take the broker away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.stop();
    let mut c = app.db.conn().await;
    diesel::sql_query(format!(
        "INSERT INTO outbox (id, event_type, aggregate_key, payload) \
         SELECT gen_random_uuid(), 'order_paid', g::text, jsonb_build_object('order_id', g, 'user_id', 1, 'amount', 10, \
           'paid_at', now(), 'items', jsonb_build_array(jsonb_build_object('product_id', {p}, 'quantity', 1, 'unit_price', 10))) \
         FROM generate_series(1, 10000) g"
    ))
    .execute(&mut c)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL"
        )
        .await,
        10_000,
        "rows wait while the broker is down"
    );
    let resumed = Instant::now();
    broker.resume();
    outbox_drained(
        &app,
        "the backlog to be published",
        Duration::from_secs(120),
    )
    .await;
    let published = resumed.elapsed();
    eventually(
        "every event to reach the ranking consumer",
        Duration::from_secs(180),
        async || count(&app, "SELECT COUNT(*) AS n FROM inbox_ranking").await == 10_000,
    )
    .await;
    let consumed = resumed.elapsed();
    assert_eq!(
        count(
            &app,
            &format!("SELECT units AS n FROM product_sales_daily WHERE product_id = {p}")
        )
        .await,
        10_000,
        "each sale counted once"
    );
    let lag_ms = count(
        &app,
        "SELECT (percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM i.processed_at - o.published_at)) * 1000)::BIGINT AS n \
         FROM inbox_ranking i JOIN outbox o ON o.id = i.event_id",
    )
    .await;
    eprintln!(
        "FIGURE kafka backlog: 10 000 events published in {published:?} ({:.0} events/s); consumed by ranking in {consumed:?}; \
         publish-to-consume lag p95 {lag_ms} ms",
        10_000.0 / published.as_secs_f64()
    );
    drop(broker);
}

/// An `order_paid` event selling `quantity` of `product` at `paid_at`.
fn paid_event_at(product: i64, quantity: i64, paid_at: chrono::DateTime<chrono::Utc>) -> Event {
    let mut e = paid_event(product, quantity);
    e.payload["paid_at"] = json!(paid_at);
    e
}

/// A batch as a redelivering transport hands it over: an event the inbox
/// already holds, an event repeated inside the batch, sales of two products
/// on two days, and two poison events in the middle (a payload that does
/// not parse, and a product that does not exist).
struct MixedBatch {
    events: Vec<Event>,
    poison: [uuid::Uuid; 2],
    seen: uuid::Uuid,
    /// (product, day, units) expected, the seen event's sale included.
    expected: Vec<(i64, chrono::NaiveDate, i64)>,
    distinct_good: i64,
}

async fn mixed_batch(app: &TestApp) -> MixedBatch {
    let (p, q) = (product(app, 10).await, product(app, 10).await);
    let today = chrono::Utc::now();
    let yesterday = today - chrono::Duration::days(1);
    let seen = paid_event_at(p, 1, today);
    let ranking = app.state.events.consumer("ranking").unwrap();
    assert_eq!(
        app.state.events.deliver(ranking.as_ref(), &seen).await,
        Delivery::Processed
    );
    let repeated = paid_event_at(q, 4, today);
    let mut unparsable = paid_event(p, 1);
    unparsable.payload = json!({"order_id": 7, "items": "not a list"});
    let unknown = paid_event(p + 1_000_000, 1);
    let events = vec![
        paid_event_at(p, 2, today),
        repeated.clone(),
        seen.clone(),
        paid_event_at(p, 3, yesterday),
        unparsable.clone(),
        repeated.clone(),
        paid_event_at(q, 5, yesterday),
        unknown.clone(),
        paid_event_at(p, 7, today),
        repeated,
        paid_event_at(q, 1, today),
    ];
    MixedBatch {
        events,
        poison: [unparsable.id, unknown.id],
        seen: seen.id,
        expected: vec![
            (p, today.date_naive(), 1 + 2 + 7),
            (p, yesterday.date_naive(), 3),
            (q, today.date_naive(), 4 + 1),
            (q, yesterday.date_naive(), 5),
        ],
        // Six good ones in the batch (the repeated one once) plus the seen one.
        distinct_good: 7,
    }
}

/// Counts per product and day, the inbox and the dead letters are exact.
async fn assert_mixed_batch_applied_once(app: &TestApp, batch: &MixedBatch) {
    for (product, day, units) in &batch.expected {
        assert_eq!(
            count(
                app,
                &format!("SELECT COALESCE(SUM(units), 0)::BIGINT AS n FROM product_sales_daily WHERE product_id = {product} AND day = '{day}'")
            )
            .await,
            *units,
            "units of product {product} on {day}"
        );
    }
    assert_eq!(
        count(app, "SELECT COUNT(*) AS n FROM inbox_ranking").await,
        batch.distinct_good,
        "every good event once in the inbox, no poison"
    );
    for poison in batch.poison {
        assert_eq!(
            count(
                app,
                &format!("SELECT COUNT(*) AS n FROM dead_letters WHERE consumer = 'ranking' AND event_id = '{poison}' AND redriven_at IS NULL")
            )
            .await,
            1,
            "poison event {poison} parked"
        );
    }
    assert_eq!(
        count(
            app,
            "SELECT COUNT(*) AS n FROM dead_letters WHERE consumer = 'ranking'"
        )
        .await,
        2,
        "nothing else parked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranking_batch_with_repeats_seen_events_and_poison_counts_each_sale_once() {
    let app = TestApp::spawn().await;
    let batch = mixed_batch(&app).await;
    let ranking = app.state.events.consumer("ranking").unwrap();
    let outcome = app
        .state
        .events
        .deliver_batch(ranking.as_ref(), &batch.events, 4)
        .await;
    let expected: Vec<Option<Delivery>> = batch
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Some(if batch.poison.contains(&e.id) {
                Delivery::Parked
            } else if e.id == batch.seen || batch.events[..i].iter().any(|f| f.id == e.id) {
                Delivery::Duplicate
            } else {
                Delivery::Processed
            })
        })
        .collect();
    assert_eq!(outcome, expected);
    assert_mixed_batch_applied_once(&app, &batch).await;
    // The whole batch again (a transport that redelivers after a crash):
    // every good event is a duplicate, nothing changes.
    let again = app
        .state
        .events
        .deliver_batch(ranking.as_ref(), &batch.events, 4)
        .await;
    for (e, d) in batch.events.iter().zip(again) {
        if !batch.poison.contains(&e.id) {
            assert_eq!(d, Some(Delivery::Duplicate));
        }
    }
    assert_mixed_batch_applied_once(&app, &batch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_pass_with_repeats_seen_events_and_poison_counts_each_sale_once() {
    let peer = FakePeer::start().await;
    let url = peer.url.clone();
    let app = TestApp::spawn_with(|s| s.data_platform.url = Some(url)).await;
    let batch = mixed_batch(&app).await;
    let waits = app.state.events.deliver_many(&batch.events, 4).await;
    assert_eq!(waits, vec![None; batch.events.len()], "all settled");
    assert_mixed_batch_applied_once(&app, &batch).await;
    // The HTTP consumers took every distinct event once (the poison ones
    // too: they only forward them), the seen one included.
    let distinct = usize::try_from(batch.distinct_good).unwrap() + 2;
    assert_eq!(peer.distinct(), distinct);
    assert_eq!(
        peer.accepted(),
        distinct,
        "a repeat inside the batch is sent once"
    );
    app.state.events.deliver_many(&batch.events, 4).await;
    assert_mixed_batch_applied_once(&app, &batch).await;
    assert_eq!(peer.accepted(), distinct);
}

/// The same mixed batch published to the broker as a transport that
/// redelivers would: the ranking consumer takes it in one poll and still
/// counts each sale once, parks the poison, and moves on to later events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_kafka_a_batch_with_repeats_and_poison_counts_each_sale_once() {
    let broker = Broker::start();
    let prefix = kafka_prefix();
    let address = broker.address();
    let app = TestApp::spawn_with(|s| {
        kafka_mode_with(s, &address, &prefix);
        s.kafka.delivery_timeout_ms = 5000;
    })
    .await;
    let batch = mixed_batch(&app).await;
    let config = app.state.settings.kafka_config().unwrap();
    let publisher =
        commerce_events::kafka::Publisher::new(&config, app.state.breakers.kafka()).unwrap();
    // Topics exist once the instance created them.
    eventually("the topics", Duration::from_secs(30), async || {
        commerce_events::kafka::ensure_topics(&config, &["order_paid"])
            .await
            .is_ok()
    })
    .await;
    // Sent together, so they reach the consumer together.
    for sent in futures::future::join_all(batch.events.iter().map(|e| publisher.publish(e))).await {
        sent.unwrap();
    }
    // A later good event: the poison did not block the partition.
    let later = paid_event(batch.expected[0].0, 1);
    publisher.publish(&later).await.unwrap();
    eventually(
        "the batch at the ranking consumer",
        Duration::from_secs(60),
        async || {
            count(&app, "SELECT COUNT(*) AS n FROM inbox_ranking").await == batch.distinct_good + 1
                && count(&app, "SELECT COUNT(*) AS n FROM dead_letters").await >= 2
        },
    )
    .await;
    let mut expected = batch;
    expected.expected[0].2 += 1;
    expected.distinct_good += 1;
    assert_mixed_batch_applied_once(&app, &expected).await;
    drop(app);
    drop(broker);
}

/// Without poison the whole batch is one transaction: an event repeated
/// inside it must still count once (the inbox insert holds it once, the
/// effect must too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_inside_one_ranking_transaction_counts_once() {
    let app = TestApp::spawn().await;
    let p = product(&app, 10).await;
    let (a, b) = (paid_event(p, 2), paid_event(p, 3));
    let batch = vec![a.clone(), b.clone(), a.clone(), a, b];
    let ranking = app.state.events.consumer("ranking").unwrap();
    let outcome = app
        .state
        .events
        .deliver_batch(ranking.as_ref(), &batch, 4)
        .await;
    use Delivery::{Duplicate, Processed};
    assert_eq!(
        outcome,
        [Processed, Processed, Duplicate, Duplicate, Duplicate].map(Some)
    );
    let units = format!("SELECT units AS n FROM product_sales_daily WHERE product_id = {p}");
    assert_eq!(count(&app, &units).await, 5);
    assert_eq!(
        app.state.events.deliver_many(&batch, 4).await,
        vec![None; 5]
    );
    assert_eq!(count(&app, &units).await, 5);
}

/// The data platform's breaker closes within a few hundred milliseconds of
/// the endpoint answering again (a HEAD every 250 ms while open), not after
/// an open period that doubled with each failed probe: here the open period
/// is 20 s, so only the health check can close it in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_platform_breaker_closes_soon_after_the_endpoint_returns() {
    let peer = FakePeer::start().await;
    peer.set_mode(Mode::Fail(503));
    let url = peer.url.clone();
    let app = TestApp::spawn_with(|s| {
        s.data_platform.url = Some(url);
        s.events.max_attempts = 100;
        s.breaker.failure_threshold = 3;
        s.breaker.open_ms = 20_000;
        s.breaker.max_open_ms = 60_000;
    })
    .await;
    let users = app.seed_users(5).await;
    fund(&app, 1_000).await;
    let p = product(&app, 100).await;
    pay_orders(&[&app], &users, p, 5, &AtomicUsize::new(0)).await;
    let breaker = app.state.breakers.data_platform();
    eventually(
        "data platform breaker open",
        Duration::from_secs(20),
        async || breaker.state() == BreakerState::Open,
    )
    .await;
    // Still failing: the health check must not close it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(breaker.state(), BreakerState::Open, "a 503 keeps it open");

    peer.set_mode(Mode::Ok);
    let back = Instant::now();
    eventually(
        "data platform breaker closed",
        Duration::from_secs(10),
        async || breaker.state() == BreakerState::Closed,
    )
    .await;
    let took = back.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "closed {took:?} after the endpoint returned (open period 20 s)"
    );
    // The events the open breaker held back then flow (the relay retries
    // a deferred batch within 5 s).
    eventually(
        "every event delivered",
        Duration::from_secs(20),
        async || peer.distinct() == 5,
    )
    .await;
}
