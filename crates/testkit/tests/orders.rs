//! Orders and payment (rules 2-5) across two instances, against real
//! PostgreSQL and Redis. Every test ends by checking the ledger and stock
//! invariants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_testkit::{TestApp, TestUser};
use diesel_async::RunQueryDsl;
use futures::future::join_all;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// Inserts products with the given (price, stock); returns their ids.
async fn products(app: &TestApp, specs: &[(i64, i32)]) -> Vec<i64> {
    let mut c = app.db.conn().await;
    let mut ids = Vec::new();
    for (price, stock) in specs {
        let row: Id = diesel::sql_query(
            "INSERT INTO products (name, price, stock) VALUES ('p', $1, $2) RETURNING id",
        )
        .bind::<diesel::sql_types::BigInt, _>(price)
        .bind::<diesel::sql_types::Integer, _>(stock)
        .get_result(&mut c)
        .await
        .unwrap();
        ids.push(row.id);
    }
    ids
}

async fn order(
    app: &TestApp,
    user: &TestUser,
    items: &[(i64, i64)],
    coupon: Option<i64>,
) -> (u16, Value) {
    let items: Vec<Value> = items
        .iter()
        .map(|(p, q)| json!({"product_id": p, "quantity": q}))
        .collect();
    app.post_json(
        "/api/v1/orders",
        Some(&user.token),
        None,
        &json!({ "items": items, "user_coupon_id": coupon }),
    )
    .await
}

async fn pay(app: &TestApp, user: &TestUser, order: i64, key: Option<&str>) -> (u16, Value) {
    app.post_json(
        &format!("/api/v1/orders/{order}/payment"),
        Some(&user.token),
        key,
        &json!({}),
    )
    .await
}

/// Rules 2 and 3 over the whole database: stock never negative, stock plus
/// units held by pending or paid orders equals the initial stock, and every
/// balance equals its ledger.
async fn check_invariants(app: &TestApp, initial: &HashMap<i64, i64>) {
    let negative = app
        .db
        .scalar("SELECT COUNT(*) AS n FROM products WHERE stock < 0")
        .await;
    assert_eq!(negative, 0);
    for (product, stock) in initial {
        let accounted = app
            .db
            .scalar(&format!(
                "SELECT (p.stock + COALESCE((SELECT SUM(oi.quantity) FROM order_items oi JOIN orders o ON o.id = oi.order_id \
                 WHERE oi.product_id = p.id AND o.status IN ('pending', 'paid')), 0))::BIGINT AS n \
                 FROM products p WHERE p.id = {product}"
            ))
            .await;
        assert_eq!(accounted, *stock, "stock of product {product} is conserved");
    }
    let off = app
        .db
        .scalar(
            "SELECT COUNT(*) AS n FROM users u WHERE u.balance <> \
             COALESCE((SELECT SUM(delta) FROM balance_ledger l WHERE l.user_id = u.id), 0)",
        )
        .await;
    assert_eq!(off, 0, "every balance equals its ledger");
    // Each ledger row's balance is the running sum up to it: movements
    // written together (a batch of one payer's payments) read as if made
    // one after another.
    let running_off = app
        .db
        .scalar(
            "SELECT COUNT(*) AS n FROM (SELECT balance_after, \
             SUM(delta) OVER (PARTITION BY user_id ORDER BY id) AS running FROM balance_ledger) l \
             WHERE l.balance_after <> l.running",
        )
        .await;
    assert_eq!(
        running_off, 0,
        "every ledger row's balance_after is its running sum"
    );
    let paid_without_payment = app
        .db
        .scalar(
            "SELECT COUNT(*) AS n FROM orders o WHERE o.status = 'paid' AND \
             (SELECT COUNT(*) FROM payments p WHERE p.order_id = o.id) <> 1",
        )
        .await;
    assert_eq!(paid_without_payment, 0, "one payment per paid order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_orders_for_fifty_units() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let users = a.seed_users(1000).await;
    let p = products(&a, &[(100, 50)]).await[0];
    let results = join_all(users.iter().enumerate().map(|(i, u)| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move { order(app, u, &[(p, 1)], None).await }
    }))
    .await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let out = results
        .iter()
        .filter(|(s, b)| *s == 409 && b["code"] == "out_of_stock")
        .count();
    assert_eq!(created, 50, "exactly the stock is sold");
    assert_eq!(
        out,
        950,
        "{:?}",
        results.iter().find(|(s, _)| *s != 201 && *s != 409)
    );
    assert_eq!(
        a.db.scalar(&format!(
            "SELECT stock::BIGINT AS n FROM products WHERE id = {p}"
        ))
        .await,
        0
    );
    check_invariants(&a, &HashMap::from([(p, 50)])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_race_for_the_last_unit() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let users = a.seed_users(1000).await;
    let ids = products(&a, &vec![(10, 1); 500]).await;
    let results = join_all(users.iter().enumerate().map(|(i, u)| {
        let product = ids[i / 2];
        let app = if i % 2 == 0 { &a } else { &b };
        async move { (product, order(app, u, &[(product, 1)], None).await) }
    }))
    .await;
    let mut wins: HashMap<i64, usize> = HashMap::new();
    for (product, (s, body)) in &results {
        match *s {
            201 => *wins.entry(*product).or_default() += 1,
            409 => assert_eq!(body["code"], "out_of_stock"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(wins.len(), 500);
    assert!(
        wins.values().all(|w| *w == 1),
        "exactly one of each pair wins"
    );
    check_invariants(&a, &ids.iter().map(|p| (*p, 1)).collect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_payments_pay_once() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let user = a.create_user("payer").await;
    a.charge(&user, 10_000).await;
    let p = products(&a, &[(1_500, 10)]).await[0];
    let (s, o) = order(&a, &user, &[(p, 2)], None).await;
    assert_eq!(s, 201, "{o}");
    let id = o["id"].as_i64().unwrap();
    assert_eq!(o["pay_amount"], 3_000);
    let results = join_all((0..50).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let user = &user;
        // Half share one key (double clicks); the rest each have their own.
        let key = if i < 25 {
            "same-key".to_owned()
        } else {
            format!("key-{i}")
        };
        async move { pay(app, user, id, Some(&key)).await }
    }))
    .await;
    let paid = results.iter().filter(|(s, _)| *s == 200).count();
    for (s, body) in &results {
        assert!(
            *s == 200 || (*s == 409 && body["code"] == "already_paid"),
            "{s} {body}"
        );
    }
    // Every 200 is the same payment (the first, or its replay).
    assert!(paid >= 1);
    assert!(results
        .iter()
        .filter(|(s, _)| *s == 200)
        .all(|(_, b)| b["order_id"] == id && b["paid_amount"] == 3_000));
    let (_, bal) = a.get_json("/api/v1/me/balance", Some(&user.token)).await;
    assert_eq!(bal["balance"], 7_000, "one debit");
    let db = &a.db;
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) AS n FROM payments WHERE order_id = {id}"
        ))
        .await,
        1
    );
    assert_eq!(
        db.scalar(&format!("SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'order_paid' AND aggregate_key = '{id}'"))
            .await,
        1
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) AS n FROM balance_ledger WHERE user_id = {} AND kind = 'payment'",
            user.id
        ))
        .await,
        1
    );
    check_invariants(&a, &HashMap::from([(p, 10)])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_racing_expiry_pays_or_expires_never_both() {
    let a = TestApp::spawn_with(|s| {
        s.orders.ttl = Duration::from_secs(1);
        s.orders.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let b = a
        .sibling(|s| {
            s.orders.ttl = Duration::from_secs(1);
            s.orders.sweep_interval = Duration::from_millis(50);
        })
        .await;
    let users = a.seed_users(40).await;
    let p = products(&a, &[(100, 1000)]).await[0];
    let mut orders = Vec::new();
    for u in &users {
        a.charge(u, 1000).await;
        let (s, o) = order(&a, u, &[(p, 3)], None).await;
        assert_eq!(s, 201, "{o}");
        orders.push(o["id"].as_i64().unwrap());
    }
    // Pay each order around its expiry, from both instances.
    tokio::time::sleep(std::time::Duration::from_millis(850)).await;
    let results = join_all(users.iter().zip(&orders).enumerate().map(|(i, (u, id))| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move {
            tokio::time::sleep(std::time::Duration::from_millis((i as u64 % 10) * 40)).await;
            pay(app, u, *id, None).await
        }
    }))
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for ((s, body), id) in results.iter().zip(&orders) {
        let status = a
            .db
            .scalar(&format!(
                "SELECT CASE status WHEN 'paid' THEN 1 WHEN 'expired' THEN 2 ELSE 3 END::BIGINT AS n FROM orders WHERE id = {id}"
            ))
            .await;
        match *s {
            200 => assert_eq!(status, 1, "paid answer, paid order"),
            409 => {
                assert_eq!(body["code"], "order_expired", "{body}");
                assert_eq!(status, 2, "expired answer, expired order");
            }
            other => panic!("{other} {body}"),
        }
    }
    check_invariants(&a, &HashMap::from([(p, 1000)])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_balance_coupon_reuse_and_cancel() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let user = a.create_user("buyer").await;
    let p = products(&a, &[(1_000, 10)]).await;
    let p = p[0];
    // Insufficient balance: 409 and nothing changes.
    a.charge(&user, 500).await;
    let (_, o1) = order(&a, &user, &[(p, 1)], None).await;
    let o1 = o1["id"].as_i64().unwrap();
    let (s, body) = pay(&a, &user, o1, Some("k1")).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (409, Some("insufficient_balance"))
    );
    let (_, ord) = a
        .get_json(&format!("/api/v1/orders/{o1}"), Some(&user.token))
        .await;
    assert_eq!(ord["status"], "pending");
    let (_, bal) = a.get_json("/api/v1/me/balance", Some(&user.token)).await;
    assert_eq!(bal["balance"], 500);

    // One coupon in two orders paid concurrently: one wins.
    let (s, coupon) = a
        .admin_post(
            "/admin/coupons",
            &json!({"name": "c", "discount_amount": 300, "quantity": 5, "opens_at": chrono::Utc::now() - chrono::Duration::seconds(1)}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, issued) = a
        .post_empty(
            &format!("/api/v1/coupons/{}/issue", coupon["id"]),
            &user.token,
        )
        .await;
    assert_eq!(s, 201, "{issued}");
    let uc = issued["user_coupon_id"].as_i64().unwrap();
    a.charge(&user, 5_000).await;
    let (s, o2) = order(&a, &user, &[(p, 1)], Some(uc)).await;
    assert_eq!(s, 201, "{o2}");
    assert_eq!(
        (o2["discount"].as_i64(), o2["pay_amount"].as_i64()),
        (Some(300), Some(700))
    );
    let (_, o3) = order(&b, &user, &[(p, 2)], Some(uc)).await;
    let (o2, o3) = (o2["id"].as_i64().unwrap(), o3["id"].as_i64().unwrap());
    let (r2, r3) = tokio::join!(pay(&a, &user, o2, None), pay(&b, &user, o3, None));
    let outcomes = [r2.0, r3.0];
    assert!(
        outcomes.contains(&200) && outcomes.contains(&409),
        "{r2:?} {r3:?}"
    );
    let loser = if r2.0 == 409 { &r2.1 } else { &r3.1 };
    assert_eq!(loser["code"], "coupon_already_used");
    let (_, bal) = a.get_json("/api/v1/me/balance", Some(&user.token)).await;
    let expected = 5_500 - if r2.0 == 200 { 700 } else { 2_000 - 300 };
    assert_eq!(bal["balance"], expected, "only the winner debited");
    assert_eq!(
        a.db.scalar(&format!(
            "SELECT COUNT(*) AS n FROM user_coupons WHERE id = {uc} AND status = 'used'"
        ))
        .await,
        1
    );

    // Cancel then pay: 409, stock returned once; cancelling again is a no-op.
    let (s, c) = a
        .post_json(
            &format!("/api/v1/orders/{o1}/cancel"),
            Some(&user.token),
            None,
            &json!({}),
        )
        .await;
    assert_eq!((s, c["status"].as_str()), (200, Some("cancelled")));
    let (s, c2) = b
        .post_json(
            &format!("/api/v1/orders/{o1}/cancel"),
            Some(&user.token),
            None,
            &json!({}),
        )
        .await;
    assert_eq!((s, c2["status"].as_str()), (200, Some("cancelled")));
    let (s, body) = pay(&a, &user, o1, None).await;
    assert_eq!((s, body["code"].as_str()), (409, Some("order_cancelled")));
    // The paid order cannot be cancelled.
    let paid = if r2.0 == 200 { o2 } else { o3 };
    let (s, body) = a
        .post_json(
            &format!("/api/v1/orders/{paid}/cancel"),
            Some(&user.token),
            None,
            &json!({}),
        )
        .await;
    assert_eq!((s, body["code"].as_str()), (409, Some("already_paid")));
    check_invariants(&a, &HashMap::from([(p, 10)])).await;
}

/// A coupon that expires between the order and its payment: 410
/// `coupon_expired` (the code coupon issue answers past `expires_at`), and
/// the order stays pending with nothing debited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_with_a_coupon_that_expired_meanwhile_is_410_coupon_expired() {
    let a = TestApp::spawn().await;
    let user = a.create_user("late").await;
    let p = products(&a, &[(1_000, 10)]).await[0];
    let coupon = a.create_coupon(5, 300, -1, Some(3600)).await;
    let (s, issued) = a
        .post_empty(&format!("/api/v1/coupons/{coupon}/issue"), &user.token)
        .await;
    assert_eq!(s, 201, "{issued}");
    a.charge(&user, 5_000).await;
    let (s, o) = order(&a, &user, &[(p, 1)], issued["user_coupon_id"].as_i64()).await;
    assert_eq!(s, 201, "{o}");
    let o = o["id"].as_i64().unwrap();
    // Expire the coupon without waiting for it.
    let mut c = a.db.conn().await;
    diesel::sql_query(format!(
        "UPDATE coupons SET opens_at = now() - interval '2 hours', \
         expires_at = now() - interval '1 hour' WHERE id = {coupon}"
    ))
    .execute(&mut c)
    .await
    .unwrap();
    let (s, body) = pay(&a, &user, o, Some("late-1")).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (410, Some("coupon_expired")),
        "{body}"
    );
    let (_, ord) = a
        .get_json(&format!("/api/v1/orders/{o}"), Some(&user.token))
        .await;
    assert_eq!(ord["status"], "pending");
    let (_, bal) = a.get_json("/api/v1/me/balance", Some(&user.token)).await;
    assert_eq!(bal["balance"], 5_000);
    check_invariants(&a, &HashMap::from([(p, 10)])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_order_input_is_4xx_and_reserves_nothing() {
    let a = TestApp::spawn().await;
    let user = a.create_user("u").await;
    let other = a.create_user("o").await;
    let p = products(&a, &[(100, 5)]).await[0];
    let (s, theirs) = order(&a, &other, &[(p, 1)], None).await;
    assert_eq!(s, 201);
    let theirs = theirs["id"].as_i64().unwrap();
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"items": [{"product_id": 999999, "quantity": 1}]}),
            422,
            "unknown_product",
        ),
        (
            json!({"items": [{"product_id": p, "quantity": 0}]}),
            422,
            "invalid_quantity",
        ),
        (
            json!({"items": [{"product_id": p, "quantity": 1000000}]}),
            422,
            "invalid_quantity",
        ),
        (
            json!({"items": [{"product_id": p, "quantity": 1}, {"product_id": p, "quantity": 1}]}),
            422,
            "duplicate_product",
        ),
        (json!({"items": []}), 422, "invalid_items"),
        (
            json!({"items": [{"product_id": p, "quantity": 6}]}),
            409,
            "out_of_stock",
        ),
        (
            json!({"items": [{"product_id": p, "quantity": 1}], "user_coupon_id": 12345}),
            422,
            "invalid_coupon",
        ),
        (
            json!({"items": [{"product_id": p, "quantity": 1.5}]}),
            422,
            "invalid_body",
        ),
        (json!({"items": "nope"}), 422, "invalid_body"),
        (json!({"itemz": []}), 422, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let (s, b) = a
            .post_json("/api/v1/orders", Some(&user.token), None, &body)
            .await;
        assert_eq!((s, b["code"].as_str()), (status, Some(code)), "{body}");
    }
    // A body refusal names the field by its path and what it expects.
    let (s, b) = a
        .post_json(
            "/api/v1/orders",
            Some(&user.token),
            None,
            &json!({"items": [{"product_id": p, "quantity": 1}, {"product_id": p, "quantity": "2"}]}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let message = b["message"].as_str().unwrap();
    assert!(
        message.starts_with("invalid body: items[1].quantity: ")
            && message.contains("expected an integer")
            && !message.contains("line"),
        "{message}"
    );
    // Someone else's order: not found for reads, cancel and payment.
    let (s, _) = a
        .get_json(&format!("/api/v1/orders/{theirs}"), Some(&user.token))
        .await;
    assert_eq!(s, 404);
    let (s, _) = pay(&a, &user, theirs, None).await;
    assert_eq!(s, 404);
    let (s, _) = a
        .post_json(
            &format!("/api/v1/orders/{theirs}/cancel"),
            Some(&user.token),
            None,
            &json!({}),
        )
        .await;
    assert_eq!(s, 404);
    for bad in ["abc", "-1", "0"] {
        let (s, _) = a
            .get_json(&format!("/api/v1/orders/{bad}"), Some(&user.token))
            .await;
        assert!(s == 400 || s == 404, "{bad}: {s}");
    }
    // Someone else's coupon.
    let (_, coupon) = a
        .admin_post(
            "/admin/coupons",
            &json!({"name": "c", "discount_amount": 10, "quantity": 5, "opens_at": chrono::Utc::now() - chrono::Duration::seconds(1)}),
        )
        .await;
    let (_, issued) = a
        .post_empty(
            &format!("/api/v1/coupons/{}/issue", coupon["id"]),
            &other.token,
        )
        .await;
    let (s, b) = order(&a, &user, &[(p, 1)], issued["user_coupon_id"].as_i64()).await;
    assert_eq!((s, b["code"].as_str()), (422, Some("invalid_coupon")));
    assert_eq!(
        a.db.scalar(&format!(
            "SELECT stock::BIGINT AS n FROM products WHERE id = {p}"
        ))
        .await,
        4
    );
    assert_eq!(a.db.scalar("SELECT COUNT(*) AS n FROM orders").await, 1);
    check_invariants(&a, &HashMap::from([(p, 5)])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_idempotency_replays_the_same_order() {
    let a = TestApp::spawn().await;
    let user = a.create_user("u").await;
    let p = products(&a, &[(100, 5)]).await[0];
    let body = json!({"items": [{"product_id": p, "quantity": 2}]});
    let (s1, o1) = a
        .post_json("/api/v1/orders", Some(&user.token), Some("ord-1"), &body)
        .await;
    let (s2, o2) = a
        .post_json("/api/v1/orders", Some(&user.token), Some("ord-1"), &body)
        .await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(o1, o2);
    assert_eq!(
        a.db.scalar(&format!(
            "SELECT stock::BIGINT AS n FROM products WHERE id = {p}"
        ))
        .await,
        3
    );
    let (s3, b3) = a
        .post_json(
            "/api/v1/orders",
            Some(&user.token),
            Some("ord-1"),
            &json!({"items": [{"product_id": p, "quantity": 1}]}),
        )
        .await;
    assert_eq!(
        (s3, b3["code"].as_str()),
        (422, Some("idempotency_key_mismatch"))
    );
    check_invariants(&a, &HashMap::from([(p, 5)])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_payments_debit_each_payer_once_and_never_below_zero() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let rich = a.seed_users(40).await;
    let poor = a.create_user("poor").await;
    let p = products(&a, &[(100, 1000)]).await[0];
    let mut payers: Vec<(&TestUser, i64)> = Vec::new();
    for u in &rich {
        a.charge(u, 1000).await;
        let (s, o) = order(&a, u, &[(p, 1)], None).await;
        assert_eq!(s, 201, "{o}");
        payers.push((u, o["id"].as_i64().unwrap()));
    }
    // Six orders of 100 against 350: exactly three can be paid, whichever
    // batches they land in.
    a.charge(&poor, 350).await;
    for _ in 0..6 {
        let (s, o) = order(&a, &poor, &[(p, 1)], None).await;
        assert_eq!(s, 201, "{o}");
        payers.push((&poor, o["id"].as_i64().unwrap()));
    }
    let pay_all = || {
        join_all(payers.iter().enumerate().map(|(i, (u, id))| {
            let app = if i % 2 == 0 { &a } else { &b };
            let key = format!("pay-{id}");
            async move { pay(app, u, *id, Some(&key)).await }
        }))
    };
    let first = pay_all().await;
    for (s, body) in &first[..40] {
        assert_eq!(*s, 200, "{body}");
    }
    let poor_paid = first[40..].iter().filter(|(s, _)| *s == 200).count();
    let poor_refused = first[40..]
        .iter()
        .filter(|(s, b)| *s == 409 && b["code"] == "insufficient_balance")
        .count();
    assert_eq!((poor_paid, poor_refused), (3, 3), "{:?}", &first[40..]);
    let (_, bal) = a.get_json("/api/v1/me/balance", Some(&poor.token)).await;
    assert_eq!(bal["balance"], 50);
    // Each answer's balance is one the payer really had after that payment.
    let mut seen: Vec<i64> = first[40..]
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b["balance"].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![50, 150, 250]);
    // Retried with the same keys: the first answers, nothing more paid.
    let again = pay_all().await;
    for ((s1, b1), (s2, b2)) in first.iter().zip(&again) {
        assert_eq!((s1, b1), (s2, b2));
    }
    let initial = HashMap::from([(p, 1000)]);
    check_invariants(&a, &initial).await;
    assert_eq!(
        a.db.scalar("SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'order_paid'")
            .await,
        43,
        "one event per paid order"
    );
}

/// A keyed payment's batch claims the key with the payment (one row with
/// its answer): a retry replays it, the stored answer is the 200, and a
/// payment the batch cannot make (someone else's order, a short balance)
/// still gets its own refusal under its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_payment_stores_its_answer_with_the_payment() {
    let a = TestApp::spawn().await;
    let b = a.sibling(|_| {}).await;
    let user = a.create_user("payer").await;
    let other = a.create_user("other").await;
    a.charge(&user, 5_000).await;
    let p = products(&a, &[(1_000, 10)]).await[0];
    let (_, o) = order(&a, &user, &[(p, 1)], None).await;
    let id = o["id"].as_i64().unwrap();
    let first = pay(&a, &user, id, Some("pay-1")).await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first.1["balance"], 4_000);
    let again = pay(&b, &user, id, Some("pay-1")).await;
    assert_eq!(first, again, "the retry replays the first answer");
    let stored =
        a.db.scalar(&format!(
            "SELECT COUNT(*) AS n FROM idempotency_keys WHERE user_id = {} AND key = 'pay-1' \
             AND response_status = 200 AND (response_body->>'order_id')::bigint = {id}",
            user.id
        ))
        .await;
    assert_eq!(stored, 1, "the answer is stored with the payment");
    // Someone else's order: 404 under the key, and its retry too.
    let theirs = pay(&a, &other, id, Some("pay-2")).await;
    assert_eq!(theirs.0, 404, "{}", theirs.1);
    assert_eq!(pay(&b, &other, id, Some("pay-2")).await, theirs);
    // A short balance: 409, recorded; charging in between changes nothing
    // for the same key.
    let (_, o2) = order(&a, &user, &[(p, 5)], None).await;
    let id2 = o2["id"].as_i64().unwrap();
    let short = pay(&a, &user, id2, Some("pay-3")).await;
    assert_eq!(
        (short.0, short.1["code"].as_str()),
        (409, Some("insufficient_balance"))
    );
    a.charge(&user, 5_000).await;
    assert_eq!(pay(&b, &user, id2, Some("pay-3")).await, short);
    let (_, bal) = a.get_json("/api/v1/me/balance", Some(&user.token)).await;
    assert_eq!(bal["balance"], 9_000, "one debit in all");
    check_invariants(&a, &HashMap::from([(p, 10)])).await;
}
