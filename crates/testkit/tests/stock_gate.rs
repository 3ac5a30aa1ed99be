//! The stock gate (rule 2 under a flash sale): the Redis gate decides first,
//! PostgreSQL stays the truth and the last guard. Each test checks that a
//! gate that is lost, wrong, stale or unreachable never sells a unit that is
//! not there, and that units given back (cancel, expiry, failed writes) can
//! be sold again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_testkit::chaos::ChaosProxy;
use commerce_testkit::{TestApp, TestUser};
use diesel_async::RunQueryDsl;
use futures::future::join_all;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

async fn product(app: &TestApp, stock: i32) -> i64 {
    let mut c = app.db.conn().await;
    let row: Id = diesel::sql_query(
        "INSERT INTO products (name, price, stock) VALUES ('sale', 100, $1) RETURNING id",
    )
    .bind::<diesel::sql_types::Integer, _>(stock)
    .get_result(&mut c)
    .await
    .unwrap();
    row.id
}

async fn order(app: &TestApp, user: &TestUser, product: i64, quantity: i64) -> (u16, Value) {
    app.post_json(
        "/api/v1/orders",
        Some(&user.token),
        None,
        &json!({ "items": [{ "product_id": product, "quantity": quantity }] }),
    )
    .await
}

/// Every user orders one unit at once, spread over the apps.
async fn rush(apps: &[&TestApp], users: &[TestUser], product: i64) -> Vec<(u16, Value)> {
    join_all(users.iter().enumerate().map(|(i, u)| {
        let app = apps[i % apps.len()];
        async move { order(app, u, product, 1).await }
    }))
    .await
}

fn count(results: &[(u16, Value)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

/// The first answer neither 201 nor 409 `out_of_stock`, if any.
fn other(results: &[(u16, Value)]) -> Option<&(u16, Value)> {
    results
        .iter()
        .find(|(s, b)| *s != 201 && !(*s == 409 && b["code"] == "out_of_stock"))
}

async fn stock(app: &TestApp, product: i64) -> i64 {
    app.db
        .scalar(&format!(
            "SELECT stock::BIGINT AS n FROM products WHERE id = {product}"
        ))
        .await
}

/// Units held by live orders plus the stock left: what the product started with.
async fn accounted(app: &TestApp, product: i64) -> i64 {
    app.db
        .scalar(&format!(
            "SELECT (p.stock + COALESCE((SELECT SUM(oi.quantity) FROM order_items oi \
             JOIN orders o ON o.id = oi.order_id WHERE oi.product_id = p.id \
             AND o.status IN ('pending', 'paid')), 0))::BIGINT AS n FROM products p WHERE p.id = {product}"
        ))
        .await
}

async fn live_orders(app: &TestApp, product: i64) -> i64 {
    app.db
        .scalar(&format!(
            "SELECT COUNT(*) AS n FROM order_items oi JOIN orders o ON o.id = oi.order_id \
             WHERE oi.product_id = {product} AND o.status IN ('pending', 'paid')"
        ))
        .await
}

fn gate_key(app: &TestApp, product: i64) -> String {
    format!("{}{{stock:{product}}}", app.redis_prefix)
}

async fn gate_value(app: &TestApp, product: i64) -> Option<i64> {
    let mut c = app.redis().await;
    redis::cmd("GET")
        .arg(gate_key(app, product))
        .query_async(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_sells_exactly_its_units_through_the_gate_and_batches() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let users = a.seed_users(600).await;
    let p = product(&a, 100).await;
    let results = rush(&[&a, &b], &users, p).await;
    assert_eq!(count(&results, 201), 100, "{:?}", other(&results));
    assert!(other(&results).is_none(), "{:?}", other(&results));
    assert_eq!(stock(&a, p).await, 0);
    assert_eq!(accounted(&a, p).await, 100);
    assert_eq!(
        gate_value(&a, p).await,
        Some(0),
        "the gate counted them too"
    );
    // The winners went through the gate and the batch writer.
    let metrics = a.metrics_text().await + &b.metrics_text().await;
    assert!(
        metrics.contains("write_batch_size") && metrics.contains("kind=\"order\""),
        "{metrics}"
    );
}

/// The same sale through the process's shared clients (`orders.worker_io`
/// off) and through each worker's own (on, the default), both instances
/// alike and mixed: exact either way, and every winner can pay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_is_exact_through_shared_and_per_worker_clients() {
    let a = TestApp::spawn_with(|s| s.orders.worker_io = false).await;
    let b = a.sibling(|s| s.orders.worker_io = true).await;
    let c = a.sibling(|s| s.orders.worker_io = false).await;
    let users = a.seed_users(300).await;
    for (apps, units) in [(vec![&a, &c], 50), (vec![&a, &b], 60)] {
        let p = product(&a, units).await;
        let results = rush(&apps, &users, p).await;
        assert!(other(&results).is_none(), "{:?}", other(&results));
        assert_eq!(count(&results, 201) as i64, i64::from(units));
        assert_eq!(stock(&a, p).await, 0);
        assert_eq!(accounted(&a, p).await, i64::from(units));
        assert_eq!(gate_value(&a, p).await, Some(0));
        // Each winner pays through the instance that took its order.
        let paid = join_all(
            results
                .iter()
                .enumerate()
                .filter(|(_, (s, _))| *s == 201)
                .map(|(i, (_, body))| {
                    let app = apps[i % apps.len()];
                    let user = &users[i];
                    let id = body["id"].as_i64().unwrap();
                    async move {
                        app.charge(user, 100).await;
                        app.post_json(
                            &format!("/api/v1/orders/{id}/payment"),
                            Some(&user.token),
                            None,
                            &json!({}),
                        )
                        .await
                        .0
                    }
                }),
        )
        .await;
        assert!(paid.iter().all(|s| *s == 200), "{paid:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_lost_mid_sale_is_reloaded_and_the_sale_stays_exact() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let users = a.seed_users(400).await;
    let p = product(&a, 120).await;
    let (first, rest) = users.split_at(100);
    let flusher = async {
        // Redis restarted empty / flushed while orders are in flight.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        a.flush_prefix().await;
    };
    let apps = [&a, &b];
    let (r1, ()) = tokio::join!(rush(&apps, first, p), flusher);
    a.flush_prefix().await;
    let r2 = rush(&[&a, &b], rest, p).await;
    let all: Vec<_> = r1.into_iter().chain(r2).collect();
    assert!(other(&all).is_none(), "{:?}", other(&all));
    assert_eq!(count(&all, 201), 120, "exactly the units, gate lost or not");
    assert_eq!(stock(&a, p).await, 0);
    assert_eq!(accounted(&a, p).await, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_over_counts_cannot_oversell() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let users = a.seed_users(60).await;
    let p = product(&a, 5).await;
    let (s, body) = order(&a, &users[0], p, 1).await;
    assert_eq!(s, 201, "{body}");
    // The gate believes in far more units than PostgreSQL has.
    let mut c = a.redis().await;
    let _: () = redis::cmd("SET")
        .arg(gate_key(&a, p))
        .arg(1000)
        .query_async(&mut c)
        .await
        .unwrap();
    let results = rush(&[&a, &b], &users[1..], p).await;
    assert!(other(&results).is_none(), "{:?}", other(&results));
    assert_eq!(count(&results, 201), 4, "PostgreSQL guards the rest");
    assert_eq!(stock(&a, p).await, 0);
    assert_eq!(live_orders(&a, p).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_expired_units_go_back_to_the_gate_once() {
    let a = TestApp::spawn_with(|s| {
        s.orders.ttl = Duration::from_secs(1);
        s.orders.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let users = a.seed_users(4).await;
    let p = product(&a, 1).await;
    let (s, first) = order(&a, &users[0], p, 1).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(order(&a, &users[1], p, 1).await.0, 409);
    // Cancel twice: the unit comes back once.
    let id = first["id"].as_i64().unwrap();
    for _ in 0..2 {
        a.post_json(
            &format!("/api/v1/orders/{id}/cancel"),
            Some(&users[0].token),
            None,
            &json!({}),
        )
        .await;
    }
    assert_eq!(gate_value(&a, p).await, Some(1));
    let (s, body) = order(&a, &users[1], p, 1).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(order(&a, &users[2], p, 1).await.0, 409);
    // The second order expires (ttl 1 s): its unit comes back too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while stock(&a, p).await == 0 {
        assert!(std::time::Instant::now() < deadline, "order never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (s, body) = order(&a, &users[2], p, 1).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(order(&a, &users[3], p, 1).await.0, 409);
    assert_eq!(accounted(&a, p).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_stock_change_reloads_the_gate() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let users = a.seed_users(20).await;
    let p = product(&a, 2).await;
    let sold = rush(&[&a, &b], &users[..4], p).await;
    assert_eq!(count(&sold, 201), 2);
    let res = a
        .client
        .patch(a.url(&format!("/admin/products/{p}")))
        .header("X-Admin-Key", commerce_testkit::ADMIN_KEY)
        .json(&json!({ "stock": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let results = rush(&[&a, &b], &users[4..], p).await;
    assert!(other(&results).is_none(), "{:?}", other(&results));
    assert_eq!(count(&results, 201), 3, "the new stock, no more, no less");
    assert_eq!(stock(&a, p).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_cut_orders_stay_exact_and_the_gate_heals_after() {
    let proxy = ChaosProxy::start("127.0.0.1:6379".parse().unwrap())
        .await
        .unwrap();
    let url = format!("redis://{}", proxy.addr());
    let a = TestApp::spawn_with(|s| s.redis.url = url.clone()).await;
    let b = a.sibling(|s| s.redis.url = url.clone()).await;
    let users = a.seed_users(300).await;
    let p = product(&a, 40).await;
    // The gate is loaded, then Redis goes away mid-sale.
    let (s, first) = order(&a, &users[0], p, 1).await;
    assert_eq!(s, 201, "{first}");
    proxy.cut();
    let results = rush(&[&a, &b], &users[1..200], p).await;
    // The PostgreSQL path sheds what exceeds its limit with a retryable 503.
    let shed = results.iter().find(|(s, b)| {
        *s != 201
            && !(*s == 409 && b["code"] == "out_of_stock")
            && !(*s == 503 && b["code"] == "order_busy")
    });
    assert!(shed.is_none(), "{shed:?}");
    assert!(live_orders(&a, p).await <= 40);
    // A cancel while Redis is out: the unit cannot reach the gate, which
    // must not lose it once Redis is back.
    let id = first["id"].as_i64().unwrap();
    let (s, _) = a
        .post_json(
            &format!("/api/v1/orders/{id}/cancel"),
            Some(&users[0].token),
            None,
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    proxy.restore();
    for app in [&a, &b] {
        app.admin_post("/admin/breakers/redis/reset", &json!({}))
            .await;
    }
    // Whatever is left sells exactly, through the healed gate.
    let left = stock(&a, p).await;
    let results = rush(&[&a, &b], &users[200..], p).await;
    assert!(other(&results).is_none(), "{:?}", other(&results));
    assert_eq!(count(&results, 201) as i64, left.min(100));
    assert_eq!(stock(&a, p).await, (left - 100).max(0));
    assert_eq!(accounted(&a, p).await, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_item_orders_with_a_coupon_still_work_through_the_gate() {
    let a = TestApp::spawn().await;
    let users = a.seed_users(30).await;
    let p1 = product(&a, 10).await;
    let p2 = product(&a, 1).await;
    // Two orders want p2's last unit with p1: one wins, and the loser's p1
    // unit goes back to the gate.
    let body = json!({ "items": [
        { "product_id": p1, "quantity": 2 }, { "product_id": p2, "quantity": 1 }
    ] });
    let results = join_all(
        users[..2]
            .iter()
            .map(|u| a.post_json("/api/v1/orders", Some(&u.token), None, &body)),
    )
    .await;
    assert_eq!(count(&results, 201), 1, "{results:?}");
    assert_eq!(stock(&a, p1).await, 8);
    assert_eq!(gate_value(&a, p1).await, Some(8));
    let rest = rush(&[&a], &users[2..], p1).await;
    assert_eq!(count(&rest, 201), 8);
    assert_eq!(accounted(&a, p1).await, 10);
    assert_eq!(accounted(&a, p2).await, 1);
}

/// Rule 5 with the gate asked before the key is claimed: a winner's retry
/// after the sale sold out still gets its 201, a loser's retry gets its
/// 409 even after units come back, and a key reused for another order is
/// refused, whichever the gate says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_get_their_first_answer_when_the_gate_answers_first() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let users = a.seed_users(40).await;
    let p = product(&a, 10).await;
    let body = json!({ "items": [{ "product_id": p, "quantity": 1 }] });
    let send = |app: &'static str, u: &TestUser, key: String| {
        let app = if app == "a" { &a } else { &b };
        let token = u.token.clone();
        let body = body.clone();
        async move {
            app.post_json("/api/v1/orders", Some(&token), Some(&key), &body)
                .await
        }
    };
    let first = join_all(
        users
            .iter()
            .enumerate()
            .map(|(i, u)| send(if i % 2 == 0 { "a" } else { "b" }, u, format!("k-{i}"))),
    )
    .await;
    assert_eq!(count(&first, 201), 10);
    assert_eq!(count(&first, 409), 30);
    // A winner cancels: a unit is back, yet every loser's retry replays 409
    // and every winner's retry replays its own order.
    let (w, won) = first.iter().enumerate().find(|(_, r)| r.0 == 201).unwrap();
    let (s, _) = a
        .post_json(
            &format!("/api/v1/orders/{}/cancel", won.1["id"]),
            Some(&users[w].token),
            None,
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let again = join_all(
        users
            .iter()
            .enumerate()
            .map(|(i, u)| send(if i % 2 == 0 { "b" } else { "a" }, u, format!("k-{i}"))),
    )
    .await;
    for (i, (r1, r2)) in first.iter().zip(&again).enumerate() {
        assert_eq!(r1, r2, "retry {i} got another answer");
    }
    assert_eq!(live_orders(&a, p).await, 9, "no retry wrote anything");
    // The same key with another body: 422, whether the gate says yes or no.
    let other = json!({ "items": [{ "product_id": p, "quantity": 2 }] });
    for i in [w, first.iter().position(|r| r.0 == 409).unwrap()] {
        let (s, body) = a
            .post_json(
                "/api/v1/orders",
                Some(&users[i].token),
                Some(&format!("k-{i}")),
                &other,
            )
            .await;
        assert_eq!(
            (s, body["code"].as_str()),
            (422, Some("idempotency_key_mismatch"))
        );
    }
    // The unit the cancel returned is still there for a new order.
    assert_eq!(gate_value(&a, p).await, Some(1));
    assert_eq!(accounted(&a, p).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_created_by_the_admin_api_has_its_gate_loaded() {
    let a = TestApp::spawn().await;
    let (s, body) = a
        .admin_post(
            "/admin/products",
            &json!({ "name": "drop", "price": 100, "stock": 7 }),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let p = body["id"].as_i64().unwrap();
    assert_eq!(gate_value(&a, p).await, Some(7), "primed at creation");
    let users = a.seed_users(9).await;
    let results = rush(&[&a], &users, p).await;
    assert_eq!(count(&results, 201), 7);
    assert_eq!(stock(&a, p).await, 0);
}

/// A batch claims its orders' keys with their answers in one statement, so
/// a key already taken fails the whole batch: the taken keys go back to
/// their requests (which replay), the rest of the batch is written anyway,
/// and a key sent twice at once (a double click) makes one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_double_clicks_inside_a_crowd_write_each_order_once() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let users = a.seed_users(60).await;
    let p = product(&a, 200).await;
    let body = json!({ "items": [{ "product_id": p, "quantity": 1 }] });
    let send = |i: usize, key: String| {
        let app = if i.is_multiple_of(2) { &a } else { &b };
        let token = users[i].token.clone();
        let body = body.clone();
        async move {
            app.post_json("/api/v1/orders", Some(&token), Some(&key), &body)
                .await
        }
    };
    let first = join_all((0..20).map(|i| send(i, format!("k-{i}")))).await;
    assert_eq!(count(&first, 201), 20, "{first:?}");
    // Retries of the first 20, ten double clicks and thirty new orders, at
    // once, so they share batches.
    let crowd = (0..20)
        .map(|i| (i, format!("k-{i}")))
        .chain((20..30).flat_map(|i| [(i, format!("d-{i}")), (i, format!("d-{i}"))]))
        .chain((30..60).map(|i| (i, format!("n-{i}"))));
    let second = join_all(crowd.map(|(i, key)| send(i, key))).await;
    assert!(other(&second).is_none(), "{:?}", other(&second));
    for (i, (r1, r2)) in first.iter().zip(&second).enumerate() {
        assert_eq!(r1, r2, "retry {i} got another answer");
    }
    for pair in second[20..40].chunks(2) {
        assert_eq!(pair[0].0, 201, "{pair:?}");
        assert_eq!(pair[0], pair[1], "a double click made two orders");
    }
    assert_eq!(count(&second[40..], 201), 30);
    assert_eq!(live_orders(&a, p).await, 60, "each order written once");
    assert_eq!(stock(&a, p).await, 140);
    assert_eq!(accounted(&a, p).await, 200);
}

/// An order without an `Idempotency-Key` is refused before the gate: a
/// naive retry of it would reserve twice. Nothing is reserved, in the gate
/// or in PostgreSQL, so the one unit is still there for a keyed order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_without_a_key_is_refused_and_reserves_nothing() {
    let app = TestApp::spawn().await;
    let user = app.create_user("naive").await;
    let p = product(&app, 1).await;
    // Load the gate first, so a unit taken from it would show.
    let (s, _) = order(&app, &user, p, 2).await;
    assert_eq!(s, 409);
    assert_eq!(gate_value(&app, p).await, Some(1));
    for _ in 0..3 {
        let res = app
            .client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(&user.token)
            .json(&json!({ "items": [{ "product_id": p, "quantity": 1 }] }))
            .send()
            .await
            .unwrap();
        let (s, body) = commerce_testkit::split(res).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (400, Some("idempotency_key_required")),
            "{body}"
        );
    }
    assert_eq!(gate_value(&app, p).await, Some(1));
    assert_eq!((stock(&app, p).await, live_orders(&app, p).await), (1, 0));
    let (s, body) = order(&app, &user, p, 1).await;
    assert_eq!(s, 201, "{body}");
}

/// Batches remember the prices they read (a batch is then one round trip):
/// a price the admin changes afterwards is what the next orders pay, never
/// the remembered one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_changed_after_earlier_batches_is_what_later_orders_pay() {
    let app = TestApp::spawn().await;
    let users = app.seed_users(6).await;
    let (s, p) = app
        .admin_post(
            "/admin/products",
            &json!({ "name": "priced", "price": 100, "stock": 50 }),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let id = p["id"].as_i64().unwrap();
    for u in &users[..2] {
        let (s, o) = order(&app, u, id, 2).await;
        assert_eq!((s, o["total"].as_i64()), (201, Some(200)), "{o}");
    }
    let res = app
        .client
        .patch(app.url(&format!("/admin/products/{id}")))
        .header("X-Admin-Key", commerce_testkit::ADMIN_KEY)
        .json(&json!({ "price": 250 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    for u in &users[2..] {
        let (s, o) = order(&app, u, id, 2).await;
        assert_eq!((s, o["total"].as_i64()), (201, Some(500)), "{o}");
    }
    // Every unit accounted for, every order at its own price.
    assert_eq!(accounted(&app, id).await, 50);
    let billed = app
        .db
        .scalar(&format!(
            "SELECT SUM(oi.quantity * oi.unit_price)::BIGINT AS n FROM order_items oi \
             WHERE oi.product_id = {id}"
        ))
        .await;
    assert_eq!(billed, 2 * 200 + 4 * 500);
}

/// The pool figures (`/health/ready`, `db_pool_*` gauges) count the
/// workers' own pools too: orders go through those, and a pool running dry
/// there must show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_figures_count_the_workers_own_pools() {
    let app = TestApp::spawn().await;
    let users = app.seed_users(4).await;
    let p = product(&app, 10).await;
    for u in &users {
        let (s, b) = order(&app, u, p, 1).await;
        assert_eq!(s, 201, "{b}");
    }
    let (_, ready) = app.get_json("/health/ready", None).await;
    let counted = ready["checks"]["db_pool"]["size"].as_i64().unwrap();
    let shared = commerce_storage::pool_status(&app.state.db).0 as i64;
    assert!(
        counted > shared,
        "the orders' worker pools hold connections too: {counted} counted, {shared} shared"
    );
    let metrics = app.metrics_text().await;
    let open: f64 = metrics
        .lines()
        .find(|l| l.starts_with("db_pool_connections{state=\"open\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(open as i64 > shared, "{metrics}");
}

/// While Redis is out, payments lock in PostgreSQL: on the shared pool, so
/// lock holders cannot take every connection of a worker's small pool
/// (sized for its writers) and leave the payment writers none (503
/// `db_busy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_cut_payments_do_not_drain_the_workers_pools() {
    let proxy = ChaosProxy::start("127.0.0.1:6379".parse().unwrap())
        .await
        .unwrap();
    let url = format!("redis://{}", proxy.addr());
    let app = TestApp::spawn_with(|s| {
        s.redis.url = url.clone();
        s.orders.worker_pool_size = 2;
        s.database.pool_wait_ms = 500;
    })
    .await;
    let users = app.seed_users(40).await;
    let p = product(&app, 100).await;
    let mut orders = Vec::new();
    for u in &users {
        app.charge(u, 1000).await;
        let (s, o) = order(&app, u, p, 1).await;
        assert_eq!(s, 201, "{o}");
        orders.push(o["id"].as_i64().unwrap());
    }
    proxy.cut();
    let paid = join_all(users.iter().zip(&orders).map(|(u, id)| {
        let app = &app;
        async move {
            app.post_json(
                &format!("/api/v1/orders/{id}/payment"),
                Some(&u.token),
                None,
                &json!({}),
            )
            .await
        }
    }))
    .await;
    let busy = paid.iter().find(|(s, _)| *s == 503);
    assert!(busy.is_none(), "{busy:?}");
    assert!(paid.iter().all(|(s, _)| *s == 200), "{paid:?}");
    proxy.restore();
}
