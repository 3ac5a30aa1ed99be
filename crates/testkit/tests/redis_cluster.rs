//! The service on a real Redis Cluster (issue 29): three masters and three
//! replicas on loopback ports. The coupon burst and the flash sale are
//! exact over it, every Redis-backed part works there (gates, waiting room,
//! caches, locks, rankings), and a master killed mid-sale fails over to its
//! replica while every rule holds and the `redis` breaker heals.
//!
//! Figures (printed, never asserted): `cargo nextest run -p commerce-testkit
//! --test redis_cluster --no-capture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_resilience::BreakerState;
use commerce_server::Settings;
use commerce_testkit::redis_cluster::RedisCluster;
use commerce_testkit::{TestApp, TestUser};
use futures::future::join_all;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn on(cluster: &RedisCluster) -> impl Fn(&mut Settings) + Clone {
    let seeds = cluster.seeds();
    move |s: &mut Settings| {
        s.redis.cluster_nodes = seeds.clone();
        // A failover takes the node timeout plus an election: calls on the
        // lost slots fail fast meanwhile, rather than wait out a long bound.
        s.redis.response_timeout_ms = 1000;
    }
}

async fn coupon(app: &TestApp, quantity: i64) -> i64 {
    app.create_coupon(quantity, 10, -1, Some(3600)).await
}

async fn rush(apps: &[&TestApp], users: &[TestUser], product: i64) -> Vec<(u16, Value)> {
    join_all(users.iter().enumerate().map(|(i, u)| {
        let app = apps[i % apps.len()];
        async move { app.order_one(u, product).await }
    }))
    .await
}

async fn issue(apps: &[&TestApp], users: &[TestUser], coupon: i64) -> Vec<(u16, Value)> {
    let path = format!("/api/v1/coupons/{coupon}/issue");
    join_all(users.iter().enumerate().map(|(i, u)| {
        let app = apps[i % apps.len()];
        let path = path.clone();
        async move { app.post_empty(&path, &u.token).await }
    }))
    .await
}

fn tally(results: &[(u16, Value)]) -> HashMap<(u16, String), usize> {
    let mut t = HashMap::new();
    for (s, b) in results {
        *t.entry((*s, b["code"].as_str().unwrap_or_default().to_owned()))
            .or_default() += 1;
    }
    t
}

/// Answers allowed while a master is down: the sale's own (won, sold out),
/// or a retryable "busy" from the database path's limit.
fn unexpected<'a>(results: &'a [(u16, Value)], sold_out: &str) -> Option<&'a (u16, Value)> {
    results.iter().find(|(s, b)| {
        !(matches!(*s, 200 | 201)
            || (*s == 409 && (b["code"] == sold_out || b["code"] == "already_issued"))
            || (*s == 503 && matches!(b["code"].as_str(), Some("order_busy" | "coupon_busy"))))
    })
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    app.db.scalar(sql).await
}

async fn sold(app: &TestApp, product: i64) -> i64 {
    scalar(
        app,
        &format!(
            "SELECT COALESCE(SUM(oi.quantity), 0)::BIGINT AS n FROM order_items oi \
             JOIN orders o ON o.id = oi.order_id WHERE oi.product_id = {product} \
             AND o.status IN ('pending', 'paid')"
        ),
    )
    .await
}

async fn stock(app: &TestApp, product: i64) -> i64 {
    scalar(
        app,
        &format!("SELECT stock::BIGINT AS n FROM products WHERE id = {product}"),
    )
    .await
}

async fn issued(app: &TestApp, coupon: i64) -> (i64, i64) {
    let rows = scalar(
        app,
        &format!("SELECT COUNT(*) AS n FROM user_coupons WHERE coupon_id = {coupon}"),
    )
    .await;
    let holders = scalar(
        app,
        &format!(
            "SELECT COUNT(DISTINCT user_id) AS n FROM user_coupons WHERE coupon_id = {coupon}"
        ),
    )
    .await;
    (rows, holders)
}

/// How often the `redis` breakers of `apps` opened, from their metrics.
async fn redis_openings(apps: &[&TestApp]) -> u64 {
    let mut n = 0;
    for app in apps {
        n += app
            .metrics_text()
            .await
            .lines()
            .filter(|l| {
                l.starts_with("breaker_transitions_total{")
                    && l.contains("name=\"redis\"")
                    && l.contains("to=\"open\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    n
}

fn breakers_closed(apps: &[&TestApp]) -> bool {
    apps.iter()
        .all(|a| a.state.breakers.redis().state() == BreakerState::Closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coupon_burst_a_flash_sale_and_every_redis_part_work_on_a_cluster() {
    let cluster = RedisCluster::start();
    let setup = on(&cluster);
    let a = TestApp::spawn_with(setup.clone()).await;
    let b = a.sibling(setup.clone()).await;
    let apps = [&a, &b];
    let users = a.seed_users(400).await;

    // The coupon burst: exactly the quantity, one per user.
    let c = coupon(&a, 100).await;
    let started = Instant::now();
    let results = issue(&apps, &users, c).await;
    let coupon_burst = started.elapsed();
    assert!(
        unexpected(&results, "sold_out").is_none(),
        "{:?}",
        tally(&results)
    );
    assert_eq!(issued(&a, c).await, (100, 100), "{:?}", tally(&results));

    // The flash sale of one product: exactly its units.
    let p = a.create_product("sale", 50).await;
    let started = Instant::now();
    let results = rush(&apps, &users[..200], p).await;
    let sale = started.elapsed();
    assert!(
        unexpected(&results, "out_of_stock").is_none(),
        "{:?}",
        tally(&results)
    );
    assert_eq!(sold(&a, p).await, 50, "{:?}", tally(&results));
    assert_eq!(stock(&a, p).await, 0);
    eprintln!(
        "cluster: coupon burst of 400 in {coupon_burst:?}, flash sale of 200 in {sale:?}; \
         keys per master {:?}",
        cluster.keys_per_master()
    );

    // The gates' keys are on their own slots: a sale spreads over masters.
    let gate = format!("{}{{stock:{p}}}", a.redis_prefix);
    let coupon_tag = format!("{}{{coupon:{c}}}:seq", a.redis_prefix);
    assert!(cluster.master_of(&gate).is_some());
    assert!(cluster.master_of(&coupon_tag).is_some());
    assert!(
        cluster
            .keys_per_master()
            .values()
            .filter(|n| **n > 0)
            .count()
            >= 2,
        "keys spread over the masters: {:?}",
        cluster.keys_per_master()
    );

    // Product pages: the other instance's read comes from Redis (L2).
    let other = a.create_product("sale", 10).await;
    let path = format!("/api/v1/products/{other}");
    let (s, _) = a.get_json(&path, None).await;
    assert_eq!(s, 200);
    let res = b.client.get(b.url(&path)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cache = res
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert!(cache.as_deref() == Some("l2"), "{cache:?}");

    // Payments take the per-order lock and feed the ranking through Redis.
    for (i, u) in users[..3].iter().enumerate() {
        a.charge(u, 10_000).await;
        let (s, body) = a.order_one(u, other).await;
        assert_eq!(s, 201, "{body}");
        let id = body["id"].as_i64().unwrap();
        let (s, body) = apps[i % 2]
            .post_empty(&format!("/api/v1/orders/{id}/payment"), &u.token)
            .await;
        assert_eq!(s, 200, "{body}");
    }
    commerce_testkit::wait_until(Duration::from_secs(20), "popular from Redis", || async {
        let res = a
            .client
            .get(a.url("/api/v1/products/popular"))
            .send()
            .await
            .unwrap();
        let source = res
            .headers()
            .get("x-popular-source")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (_, body) = commerce_testkit::split(res).await;
        source.as_deref() == Some("redis")
            && body["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i["product_id"] == other))
    })
    .await;

    // The waiting room: users enter on both instances and are admitted.
    let room = |s: &mut Settings| {
        setup(s);
        s.queue.admit_per_tick = 5;
        s.queue.tick = Duration::from_millis(300);
    };
    let qa = TestApp::spawn_on(a.db.clone(), &a.redis_prefix, room).await;
    let qb = qa.sibling(room).await;
    let mut tokens = Vec::new();
    for (i, u) in users[..10].iter().enumerate() {
        let app = [&qa, &qb][i % 2];
        let (s, body) = app
            .post_json("/api/v1/queue/tokens", Some(&u.token), None, &json!({}))
            .await;
        assert_eq!(s, 201, "{body}");
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    commerce_testkit::wait_until(Duration::from_secs(20), "everyone admitted", || async {
        for (i, u) in users[..10].iter().enumerate() {
            let (s, body) = qa
                .get_json(
                    &format!("/api/v1/queue/tokens/{}", tokens[i]),
                    Some(&u.token),
                )
                .await;
            if s != 200 || body["status"] != "active" {
                return false;
            }
        }
        true
    })
    .await;
    assert!(breakers_closed(&[&a, &b, &qa, &qb]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_sale_fails_over_and_every_rule_holds() {
    let mut cluster = RedisCluster::start();
    let setup = on(&cluster);
    let a = TestApp::spawn_with(setup.clone()).await;
    let b = a.sibling(setup).await;
    let apps = [&a, &b];
    let users = a.seed_users(900).await;
    const UNITS: i64 = 150;
    const COUPONS: i64 = 150;
    let p = a.create_product("sale", UNITS).await;
    let c = coupon(&a, COUPONS).await;

    // The sale and the burst start; the gate's master dies between waves.
    let first = rush(&apps, &users[..100], p).await;
    let first_coupons = issue(&apps, &users[..100], c).await;
    let gate = format!("{}{{stock:{p}}}", a.redis_prefix);
    let killed_at = Instant::now();
    let dead = cluster.kill_master_of(&gate);
    let during = rush(&apps, &users[100..300], p).await;
    let during_coupons = issue(&apps, &users[100..300], c).await;
    let opened = redis_openings(&apps).await;
    let failover = {
        let cluster = &cluster;
        tokio::task::block_in_place(|| cluster.wait_failover(&gate, dead, Duration::from_secs(30)))
    } - killed_at;
    // Healed: both breakers closed and staying closed for a second (before
    // the failover, calls on live slots close them and calls on the lost
    // slots open them again).
    let mut closed_since: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let healed = loop {
        match (breakers_closed(&apps), closed_since) {
            (true, None) => closed_since = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() >= Duration::from_secs(1) => break t - killed_at,
            (false, _) => closed_since = None,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "redis breakers did not stay closed"
        );
        // Traffic keeps the breakers honest: a lost slot shows in a call.
        let _ = a.order_one(&users[0], p).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let after = rush(&apps, &users[300..], p).await;
    let after_coupons = issue(&apps, &users[300..], c).await;

    for (what, results, sold_out) in [
        ("orders before", &first, "out_of_stock"),
        ("orders during", &during, "out_of_stock"),
        ("orders after", &after, "out_of_stock"),
        ("coupons before", &first_coupons, "sold_out"),
        ("coupons during", &during_coupons, "sold_out"),
        ("coupons after", &after_coupons, "sold_out"),
    ] {
        assert!(
            unexpected(results, sold_out).is_none(),
            "{what}: {:?}",
            tally(results)
        );
        eprintln!("{what}: {:?}", tally(results));
    }
    // Rule 2: never more than the units; the 600 buyers after the failover
    // take whatever was left, so exactly all of them are sold.
    assert_eq!(sold(&a, p).await, UNITS);
    assert_eq!(stock(&a, p).await, 0);
    let won = [&first, &during, &after]
        .iter()
        .map(|r| r.iter().filter(|(s, _)| *s == 201).count() as i64)
        .sum::<i64>();
    assert_eq!(won, UNITS, "every 201 is a sold unit and no more");
    // Rule 1: exactly the coupons, one per user.
    assert_eq!(issued(&a, c).await, (COUPONS, COUPONS));
    eprintln!(
        "failover of the gate's master: new master after {failover:?}, \
         redis breakers closed for good {healed:?} after the kill; they opened {opened} times \
         during the outage, {} in all",
        redis_openings(&apps).await
    );

    // The killed node rejoins (as a replica now) and the cluster is whole.
    cluster.restart(dead);
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(30)));
    let p2 = a.create_product("sale", 20).await;
    let results = rush(&apps, &users[..100], p2).await;
    assert!(unexpected(&results, "out_of_stock").is_none());
    assert_eq!(sold(&a, p2).await, 20);
}
