//! How fast the ranking consumer drains a backlog of 10 000 `order_paid`
//! events, in process (no broker) and through Kafka (tansu). Each test
//! seeds its own database, prints a `FIGURE` line, and asserts only
//! correctness (every sale counted exactly once), never a timing: rerun
//! with `cargo nextest run -p commerce-testkit -E 'binary(drain)'
//! --no-capture` and read the figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_testkit::broker::Broker;
use commerce_testkit::{TestApp, TestDb};
use diesel_async::RunQueryDsl;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BACKLOG: i64 = 10_000;
/// Sales spread over a few products: one hot row takes most of them (a
/// flash sale), the others check the counts per product.
const PRODUCTS: i64 = 4;

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// Products with the given ids (the same ids in every database of a run).
async fn seed_products(db: &TestDb, first: Option<i64>) -> Vec<i64> {
    let mut c = db.conn().await;
    let mut ids = Vec::new();
    for i in 0..PRODUCTS {
        let row: Id = match first {
            None => diesel::sql_query(
                "INSERT INTO products (name, price, stock) VALUES ('p', 10, 100) RETURNING id",
            )
            .get_result(&mut c)
            .await
            .unwrap(),
            Some(first) => diesel::sql_query(
                "INSERT INTO products (id, name, price, stock) VALUES ($1, 'p', 10, 100) RETURNING id",
            )
            .bind::<diesel::sql_types::BigInt, _>(first + i)
            .get_result(&mut c)
            .await
            .unwrap(),
        };
        ids.push(row.id);
    }
    ids
}

/// Event `g` sells 1 unit of product `g % 8 < 5 ? hot : other`: five eighths
/// on the first product, the rest spread over the others.
fn product_of(products: &[i64], g: i64) -> i64 {
    let k = g % 8;
    if k < 5 {
        products[0]
    } else {
        products[usize::try_from(k - 4).unwrap() % products.len()]
    }
}

/// Whether event `g` is a poison one (a product that does not exist) when
/// every `poison_every`-th event is.
fn is_poison(poison_every: Option<i64>, g: i64) -> bool {
    poison_every.is_some_and(|n| g % n == n / 2)
}

fn poison_count(poison_every: Option<i64>) -> i64 {
    i64::try_from(
        (1..=BACKLOG)
            .filter(|g| is_poison(poison_every, *g))
            .count(),
    )
    .unwrap()
}

/// Units each product must end up with.
fn expected(products: &[i64], poison_every: Option<i64>) -> Vec<(i64, i64)> {
    products
        .iter()
        .map(|p| {
            let n = (1..=BACKLOG)
                .filter(|g| !is_poison(poison_every, *g) && product_of(products, *g) == *p)
                .count();
            (*p, i64::try_from(n).unwrap())
        })
        .collect()
}

/// Writes the backlog into the outbox in one statement (as a burst of
/// payments would have left it).
async fn seed_backlog(app: &TestApp, products: &[i64], poison_every: Option<i64>) {
    let [p0, p1, p2, p3] = products else {
        panic!("four products")
    };
    let poison = match poison_every {
        Some(n) => format!("WHEN g % {n} = {} THEN {}", n / 2, p0 + 1_000_000),
        None => String::new(),
    };
    let mut c = app.db.conn().await;
    diesel::sql_query(format!(
        "INSERT INTO outbox (id, event_type, aggregate_key, payload) \
         SELECT gen_random_uuid(), 'order_paid', g::text, jsonb_build_object('order_id', g, 'user_id', 1, 'amount', 10, \
           'paid_at', now(), 'items', jsonb_build_array(jsonb_build_object('product_id', \
             CASE {poison} WHEN g % 8 < 5 THEN {p0} WHEN g % 8 = 5 THEN {p1} WHEN g % 8 = 6 THEN {p2} ELSE {p3} END, \
             'quantity', 1, 'unit_price', 10))) \
         FROM generate_series(1, {BACKLOG}) g"
    ))
    .execute(&mut c)
    .await
    .unwrap();
    // Guard the seeding itself against drifting from `product_of`.
    assert_eq!(product_of(products, 5), *p1);
    assert_eq!(product_of(products, 7), *p3);
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.db.scalar(sql).await
}

/// Waits until the ranking consumer settled the whole backlog (applied or
/// parked); returns when.
async fn ranking_done(app: &TestApp, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    let mut last_report = Instant::now();
    loop {
        let n = count(
            app,
            "SELECT (SELECT COUNT(*) FROM inbox_ranking) + (SELECT COUNT(*) FROM dead_letters WHERE consumer = 'ranking') AS n",
        )
        .await;
        if n >= BACKLOG {
            return Instant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!("ranking inbox: {n}/{BACKLOG}");
            last_report = Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the ranking consumer drained {n} of {BACKLOG} in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every sale counted once, per product, on its day; every poison event
/// parked.
async fn assert_counts(app: &TestApp, products: &[i64], poison_every: Option<i64>) {
    let poison = poison_count(poison_every);
    assert_eq!(
        count(app, "SELECT COUNT(*) AS n FROM inbox_ranking").await,
        BACKLOG - poison
    );
    for (p, units) in expected(products, poison_every) {
        assert_eq!(
            count(
                app,
                &format!("SELECT COALESCE(SUM(units), 0)::BIGINT AS n FROM product_sales_daily WHERE product_id = {p}")
            )
            .await,
            units,
            "units of product {p}"
        );
    }
    assert_eq!(
        count(
            app,
            "SELECT COUNT(*) AS n FROM dead_letters WHERE consumer = 'ranking'"
        )
        .await,
        poison,
        "the poison events parked, nothing else"
    );
}

/// Rate between the first and the last commit of the ranking inbox (group
/// joins and start-up excluded).
async fn commit_span_ms(app: &TestApp) -> i64 {
    count(
        app,
        "SELECT (EXTRACT(EPOCH FROM MAX(processed_at) - MIN(processed_at)) * 1000)::BIGINT AS n FROM inbox_ranking",
    )
    .await
}

fn rate(n: i64, ms: f64) -> f64 {
    if ms <= 0.0 {
        return f64::INFINITY;
    }
    n as f64 * 1000.0 / ms
}

async fn drain_in_process(poison_every: Option<i64>) {
    // Only the wake-up below starts the relay: the clock starts with it.
    let app = TestApp::spawn_with(|s| s.events.relay_idle_ms = 600_000).await;
    let products = seed_products(&app.db, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // first (empty) pass done
    seed_backlog(&app, &products, poison_every).await;
    let started = Instant::now();
    commerce_storage::outbox::written();
    let done = ranking_done(&app, Duration::from_secs(300)).await;
    let wall = done - started;
    let span = commit_span_ms(&app).await;
    assert_counts(&app, &products, poison_every).await;
    let span_f = span as f64;
    eprintln!(
        "FIGURE ranking drain in process: {BACKLOG} order_paid events ({} poison) in {wall:?} ({:.0} events/s wall; \
         {:.0} events/s first to last inbox commit)",
        poison_count(poison_every),
        rate(BACKLOG, wall.as_secs_f64() * 1000.0),
        rate(BACKLOG, span_f),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_drains_a_backlog_of_ten_thousand_in_process() {
    drain_in_process(None).await;
}

/// One poison event per thousand: each is parked, the batches around it
/// still apply in few transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_drains_a_backlog_with_poison_events_in_process() {
    drain_in_process(Some(1000)).await;
}

/// The backlog waits in the topic (published by one instance, which then
/// stops); a fresh consumer group on a database of its own then drains it
/// from the first offset, as after a consumer outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_drains_a_backlog_of_ten_thousand_through_kafka() {
    let broker = Broker::start();
    let topics = format!("t{}.", uuid::Uuid::new_v4().simple());
    let address = broker.address();
    let kafka = |group: String| {
        let (address, topics) = (address.clone(), topics.clone());
        move |s: &mut commerce_server::Settings| {
            s.kafka.brokers = Some(address);
            s.kafka.topic_prefix = topics;
            s.kafka.group_prefix = group;
            s.kafka.delivery_timeout_ms = 5000;
            s.events.relay_batch = 1000;
        }
    };
    let publisher =
        TestApp::spawn_with(kafka(format!("g{}.", uuid::Uuid::new_v4().simple()))).await;
    let products = seed_products(&publisher.db, None).await;
    seed_backlog(&publisher, &products, None).await;
    commerce_storage::outbox::written();
    let deadline = Instant::now() + Duration::from_secs(180);
    while count(
        &publisher,
        "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL",
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "the backlog was not published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The publisher's own consumers stop: the machine is the drainer's.
    publisher.state.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The drainer's products exist before its consumers start.
    let db = Arc::new(TestDb::create().await);
    seed_products(&db, Some(products[0])).await;
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    let drainer = TestApp::spawn_on(
        db,
        &prefix,
        kafka(format!("g{}.", uuid::Uuid::new_v4().simple())),
    )
    .await;
    let done = ranking_done(&drainer, Duration::from_secs(300)).await;
    let wall = done - started;
    let span = commit_span_ms(&drainer).await;
    assert_counts(&drainer, &products, None).await;
    let span_f = span as f64;
    eprintln!(
        "FIGURE ranking drain through kafka: {BACKLOG} order_paid events in {wall:?} from the consumer's start \
         ({:.0} events/s wall, group join included; {:.0} events/s first to last inbox commit)",
        rate(BACKLOG, wall.as_secs_f64() * 1000.0),
        rate(BACKLOG, span_f),
    );
    drop(drainer);
    drop(publisher);
    drop(broker);
}
