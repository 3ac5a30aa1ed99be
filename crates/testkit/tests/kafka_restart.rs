//! The broker killed (SIGKILL) and started again on the same port and
//! storage while two instances take payments and charges, against a
//! disposable tansu of the test's own (issue 26): the `kafka` breaker of
//! every instance closes within seconds of the broker accepting
//! connections again, no request fails for it (events are off the request
//! path), and every event written before, during and after the outage is
//! published and applied once by every consumer group (rule 6).
//!
//! Figures: `cargo nextest run -p commerce-testkit --test kafka_restart
//! --no-capture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_resilience::BreakerState;
use commerce_testkit::broker::{kafka_mode_with, kafka_prefix, Broker};
use commerce_testkit::fake_http::FakePeer;
use commerce_testkit::{TestApp, TestUser};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// docs/architecture.md: a dependency is used again "within seconds" of its return; issue 26 asks ≤ 3 s.
const HEAL_WITHIN: Duration = Duration::from_secs(3);
/// Concurrent order-and-pay streams per instance, each on its own client.
const STREAMS: usize = 3;

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.db.scalar(sql).await
}

#[derive(Debug, Clone)]
struct Answer {
    at: Instant,
    step: &'static str,
    status: u16,
    code: String,
    retry_after: bool,
}

fn breaker_states(apps: &[&TestApp]) -> Vec<BreakerState> {
    apps.iter()
        .map(|a| a.state.breakers.kafka().state())
        .collect()
}

async fn send(req: reqwest::RequestBuilder, step: &'static str) -> (Answer, serde_json::Value) {
    match req.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let retry_after = res.headers().contains_key("retry-after");
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            (
                Answer {
                    at: Instant::now(),
                    step,
                    status,
                    code: body["code"].as_str().unwrap_or_default().to_owned(),
                    retry_after,
                },
                body,
            )
        }
        Err(e) => (
            Answer {
                at: Instant::now(),
                step,
                status: 0,
                code: e.to_string(),
                retry_after: false,
            },
            serde_json::Value::Null,
        ),
    }
}

/// One stream: charge, order one unit, pay it; again until `stop`.
/// Returns the orders it was told are paid.
async fn stream(
    base: String,
    users: Arc<Vec<TestUser>>,
    product: i64,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
) -> usize {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut paid = 0;
    while !stop.load(Ordering::SeqCst) {
        let n = next.fetch_add(1, Ordering::SeqCst);
        let user = &users[n % users.len()];
        let charge = client
            .post(format!("{base}/api/v1/me/balance/charge"))
            .bearer_auth(&user.token)
            .header("Idempotency-Key", format!("charge-{n}"))
            .json(&json!({"amount": 10}));
        let (a, _) = send(charge, "charge").await;
        answers.lock().unwrap().push(a);
        let order = client
            .post(format!("{base}/api/v1/orders"))
            .bearer_auth(&user.token)
            .header("Idempotency-Key", format!("order-{n}"))
            .json(&json!({"items": [{"product_id": product, "quantity": 1}]}));
        let (a, body) = send(order, "order").await;
        let created = a.status == 201;
        answers.lock().unwrap().push(a);
        if created {
            let pay = client
                .post(format!("{base}/api/v1/orders/{}/payment", body["id"]))
                .bearer_auth(&user.token)
                .header("Idempotency-Key", format!("pay-{n}"))
                .json(&json!({}));
            let (a, _) = send(pay, "pay").await;
            paid += usize::from(a.status == 200);
            answers.lock().unwrap().push(a);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    paid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_killed_and_restarted_heals_every_instance_within_seconds() {
    let mut broker = Broker::start();
    let data_platform = FakePeer::start().await;
    let prefix = kafka_prefix();
    let address = broker.address();
    // The production breaker policy and delivery timeout: the heal bar is
    // the one an operator gets, not a test's shortened one.
    let configure = |s: &mut commerce_server::Settings| {
        kafka_mode_with(s, &address, &prefix);
        s.data_platform.url = Some(data_platform.url.clone());
    };
    let a = TestApp::spawn_with(configure).await;
    let b = a.sibling(configure).await;
    let users = Arc::new(a.seed_users(3_000).await);
    let product = {
        use diesel_async::RunQueryDsl;
        let mut c = a.db.conn().await;
        diesel::sql_query(
            "WITH u AS (UPDATE users SET balance = balance + 1000000 RETURNING id, balance) \
             INSERT INTO balance_ledger (user_id, delta, balance_after, kind) SELECT id, 1000000, balance, 'charge' FROM u",
        )
        .execute(&mut c)
        .await
        .unwrap();
        a.db.insert_product(10, 1_000_000).await
    };

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let mut streams = Vec::new();
    for app in [&a, &b] {
        for _ in 0..STREAMS {
            streams.push(tokio::spawn(stream(
                app.address.clone(),
                users.clone(),
                product,
                next.clone(),
                stop.clone(),
                answers.clone(),
            )));
        }
    }

    // Before: events flow through the broker, both breakers closed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(breaker_states(&[&a, &b]), [BreakerState::Closed; 2]);
    let published_before = count(
        &a,
        "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NOT NULL",
    )
    .await;
    assert!(
        published_before > 0,
        "events reached the broker before the kill"
    );

    broker.stop();
    let killed = Instant::now();
    eprintln!("broker killed (SIGKILL)");
    // Each breaker seen open apart: while the broker is away a breaker
    // alternates open and half-open (probing).
    let mut opened = [false, false];
    while opened != [true, true] {
        for (seen, state) in opened.iter_mut().zip(breaker_states(&[&a, &b])) {
            *seen |= state != BreakerState::Closed;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "both kafka breakers open while the broker is down: {:?}",
            breaker_states(&[&a, &b])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened_after = killed.elapsed();
    // Down a while, as in a real crash: failed probes lengthen the open
    // period (2, 4, 8 s), the clients' reconnects back off.
    tokio::time::sleep(Duration::from_secs(8)).await;

    broker.resume();
    let ready = Instant::now();
    eprintln!("broker accepting connections again");
    let mut healed = None;
    while ready.elapsed() < Duration::from_secs(60) {
        if breaker_states(&[&a, &b]) == [BreakerState::Closed; 2] {
            healed = Some(ready.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // After: more events, through the healed path.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let mut paid = 0;
    for s in streams {
        paid += s.await.unwrap();
    }
    let snapshots: Vec<_> = [&a, &b]
        .iter()
        .map(|x| x.state.breakers.kafka().snapshot())
        .collect();
    eprintln!(
        "FIGURE kafka restart: breakers seen open {opened_after:?} after the kill; \
         both closed {healed:?} after the broker accepted connections again; {snapshots:?}"
    );
    let healed = healed.unwrap_or_else(|| panic!("not healed in 60 s: {snapshots:?}"));
    assert!(
        healed <= HEAL_WITHIN,
        "every instance's kafka breaker closes within {HEAL_WITHIN:?} of the broker returning; took {healed:?}: {snapshots:?}"
    );

    // No request failed for the broker: events are not on the request path.
    let answers = answers.lock().unwrap().clone();
    let during = answers
        .iter()
        .filter(|x| x.at > killed && x.at < ready)
        .count();
    assert!(during > 20, "traffic while the broker was down: {during}");
    for x in &answers {
        assert!(
            matches!((x.step, x.status), ("charge" | "pay", 200) | ("order", 201)),
            "an answer that failed while only the broker was away ({}): {x:?}",
            x.code
        );
        assert!(x.status != 503 || x.retry_after, "{x:?}");
    }

    // Every event published, and applied once by every group.
    let paid = i64::try_from(paid).unwrap();
    let drained_from = Instant::now();
    let deadline = drained_from + Duration::from_secs(120);
    let mut drained = None;
    loop {
        let unpublished = count(
            &a,
            "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL",
        )
        .await;
        if unpublished == 0 && drained.is_none() {
            drained = Some(ready.elapsed());
        }
        let ranked = count(&a, "SELECT COUNT(*) AS n FROM inbox_ranking").await;
        let notified = count(&a, "SELECT COUNT(*) AS n FROM inbox_notification").await;
        let exported = i64::try_from(data_platform.distinct()).unwrap();
        if unpublished == 0 && ranked == paid && notified == paid && exported == paid {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every event delivered: {paid} paid; unpublished {unpublished}, ranking {ranked}, \
             notification {notified}, data platform {exported}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered = ready.elapsed();
    eprintln!(
        "FIGURE kafka restart: {paid} orders paid ({} answers, {during} while the broker was down); \
         outbox empty {drained:?} and every group done {delivered:?} after the broker returned",
        answers.len()
    );
    assert_eq!(
        count(
            &a,
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'order_paid'"
        )
        .await,
        paid,
        "one order_paid event per paid order"
    );
    assert_eq!(
        usize::try_from(paid).unwrap(),
        data_platform.accepted(),
        "each data-platform effect once"
    );
    assert_eq!(
        count(
            &a,
            &format!("SELECT COALESCE(SUM(units), 0)::BIGINT AS n FROM product_sales_daily WHERE product_id = {product}")
        )
        .await,
        paid,
        "each sale counted once in the ranking"
    );
    assert_eq!(breaker_states(&[&a, &b]), [BreakerState::Closed; 2]);
    drop(b);
    drop(a);
    drop(broker);
}
