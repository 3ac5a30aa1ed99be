//! The waiting room (issue 8) against real Redis, over two instances: dense
//! positions and exact arrival order, one admitter (N per interval), polling
//! paced by position, token expiry, protected routes, and the local limiter
//! while Redis is cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_server::Settings;
use commerce_testkit::chaos::ChaosProxy;
use commerce_testkit::{split, TestApp, TestUser};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const TOKENS: &str = "/api/v1/queue/tokens";

/// Admission by hand (`admit_once`) only: no background loop, so counts and
/// positions are exact.
fn manual(n: u32, tick_ms: u64) -> impl FnOnce(&mut Settings) {
    move |s| {
        s.queue.admit_per_tick = n;
        s.queue.tick = Duration::from_millis(tick_ms);
        s.queue.admitter = false;
    }
}

fn retry_after_header(res: &reqwest::Response) -> Option<u64> {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A client that drops idle connections well before the server's keep-alive
/// (5 s) would, so a burst never reuses a connection being closed (hyper's
/// `IncompleteMessage` race, not what these tests are about).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(300)
        .build()
        .unwrap()
}

/// Status, JSON body, `Retry-After` header.
type Answer = (u16, Value, Option<u64>);

/// POST /queue/tokens.
async fn enter(http: &reqwest::Client, app: &TestApp, token: &str, target: Option<&str>) -> Answer {
    let mut req = http.post(app.url(TOKENS)).bearer_auth(token);
    if let Some(t) = target {
        req = req.json(&json!({ "target": t }));
    }
    let res = req.send().await.expect("enter");
    let ra = retry_after_header(&res);
    let (s, body) = split(res).await;
    (s, body, ra)
}

async fn poll(
    http: &reqwest::Client,
    app: &TestApp,
    user_token: &str,
    queue_token: &str,
) -> (u16, Value) {
    let res = http
        .get(app.url(&format!("{TOKENS}/{queue_token}")))
        .bearer_auth(user_token)
        .send()
        .await
        .expect("poll");
    split(res).await
}

async fn order(app: &TestApp, user: &TestUser, product: i64) -> (u16, Value) {
    app.post_json(
        "/api/v1/orders",
        Some(&user.token),
        None,
        &json!({ "items": [{ "product_id": product, "quantity": 1 }] }),
    )
    .await
}

fn not_admitted(status: u16, body: &Value) -> bool {
    status == 403 && body["code"] == "not_admitted"
}

/// Sleeps into the start of the next admission interval (by Redis's clock,
/// which numbers them), so calls made right after fall in one interval.
async fn next_interval(app: &TestApp, tick_ms: u64) {
    let mut c = app.redis().await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    let now_ms = secs * 1000 + micros / 1000;
    let left = tick_ms - now_ms % tick_ms;
    tokio::time::sleep(Duration::from_millis(left + 50)).await;
}

/// Polls every user's token (spread over the instances): (status, body) by
/// user index.
async fn poll_all(
    http: &reqwest::Client,
    apps: &[&TestApp],
    users: &[TestUser],
    tokens: &[String],
) -> Vec<(u16, Value)> {
    let mut out: Vec<(usize, (u16, Value))> = stream::iter(users.iter().zip(tokens).enumerate())
        .map(|(i, (u, t))| {
            let app = apps[(i + 1) % apps.len()];
            async move { (i, poll(http, app, &u.token, t).await) }
        })
        .buffer_unordered(300)
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_users_get_dense_positions_and_are_admitted_in_order_n_per_interval() {
    let http = &http();
    const N: u64 = 100;
    const USERS: usize = 5000;
    const TICK_MS: u64 = 2000;
    // Exactness under a burst, not latency, is under test: a loaded machine
    // must not push Redis calls past their timeout into the degraded path,
    // nor the burst's own p95 over the admission bound (which would halve
    // the rate this test counts; the health policy has tests of its own).
    let setup = |s: &mut Settings| {
        manual(N as u32, TICK_MS)(s);
        s.redis.response_timeout_ms = 3000;
        s.queue.p95_limit = None;
    };
    let a = TestApp::spawn_with(setup).await;
    let b = a.sibling(setup).await;
    let apps = [&a, &b];
    let users = a.seed_users(USERS).await;

    let started = Instant::now();
    let entered: Vec<(usize, Answer)> = stream::iter(users.iter().enumerate())
        .map(|(i, u)| {
            let app = apps[i % 2];
            async move { (i, enter(http, app, &u.token, None).await) }
        })
        .buffer_unordered(300)
        .collect()
        .await;
    eprintln!("{USERS} entries in {:?}", started.elapsed());

    let mut tokens = vec![String::new(); USERS];
    let mut entry_pos = vec![0u64; USERS];
    for (i, (s, body, ra)) in &entered {
        assert_eq!(*s, 201, "{body}");
        assert_eq!(body["status"], "waiting", "{body}");
        assert_eq!(body["target"], "store");
        assert_eq!(body["degraded"], false);
        assert_eq!(
            *ra,
            body["retry_after"].as_u64(),
            "Retry-After header matches the body"
        );
        tokens[*i] = body["token"].as_str().unwrap().to_owned();
        entry_pos[*i] = body["position"].as_u64().unwrap();
    }
    let mut sorted = entry_pos.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (1..=USERS as u64).collect::<Vec<_>>(),
        "positions are unique and dense"
    );
    assert_eq!(
        tokens.iter().collect::<HashSet<_>>().len(),
        USERS,
        "tokens are unique"
    );

    // Entering again (through the other instance) gives the same token back.
    for i in 0..20 {
        let (s, body, _) = enter(http, apps[(i + 1) % 2], &users[i].token, None).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["token"], tokens[i].as_str());
        assert_eq!(body["position"], entry_pos[i]);
    }

    // Polling: same positions, retry_after non-decreasing in position,
    // short at the front, longer at the back.
    let polled = poll_all(http, &apps, &users, &tokens).await;
    let mut pairs: Vec<(u64, u64)> = polled
        .iter()
        .enumerate()
        .map(|(i, (s, body))| {
            assert_eq!(*s, 200, "{body}");
            assert_eq!(body["position"], entry_pos[i], "nothing admitted yet");
            (
                body["position"].as_u64().unwrap(),
                body["retry_after"].as_u64().unwrap(),
            )
        })
        .collect();
    pairs.sort_unstable();
    assert!(
        pairs.windows(2).all(|w| w[0].1 <= w[1].1),
        "retry_after is monotonic in position"
    );
    let (front, back) = (pairs[0].1, pairs[USERS - 1].1);
    assert!(front <= 2, "the front polls within 1-2 s, got {front}");
    assert!(back > 10 && back <= 60, "the back polls rarely, got {back}");
    eprintln!("retry_after: front {front}s, back {back}s");

    // Tick 1: both instances try at once; exactly N get in, the first N.
    next_interval(&a, TICK_MS).await;
    let (x, y) = tokio::join!(a.state.queue.admit_once(), b.state.queue.admit_once());
    assert_eq!(x.admitted() + y.admitted(), N, "{x:?} / {y:?}");
    let (x, y) = tokio::join!(a.state.queue.admit_once(), b.state.queue.admit_once());
    assert_eq!(
        x.admitted() + y.admitted(),
        0,
        "one admission per interval: {x:?} / {y:?}"
    );
    check_admitted_prefix(http, &apps, &users, &tokens, &entry_pos, N).await;

    // Tick 2, in the next interval: the next N.
    next_interval(&a, TICK_MS).await;
    let (x, y) = tokio::join!(a.state.queue.admit_once(), b.state.queue.admit_once());
    assert_eq!(x.admitted() + y.admitted(), N, "{x:?} / {y:?}");
    check_admitted_prefix(http, &apps, &users, &tokens, &entry_pos, 2 * N).await;
}

/// Exactly the first `admitted` arrivals are active; everyone else moved up
/// by that many.
async fn check_admitted_prefix(
    http: &reqwest::Client,
    apps: &[&TestApp],
    users: &[TestUser],
    tokens: &[String],
    entry_pos: &[u64],
    admitted: u64,
) {
    let polled = poll_all(http, apps, users, tokens).await;
    for (i, (s, body)) in polled.iter().enumerate() {
        assert_eq!(*s, 200, "{body}");
        if entry_pos[i] <= admitted {
            assert_eq!(
                body["status"], "active",
                "arrival {} should be in: {body}",
                entry_pos[i]
            );
            assert_eq!(body["position"], 0);
        } else {
            assert_eq!(
                body["status"], "waiting",
                "arrival {} should wait: {body}",
                entry_pos[i]
            );
            assert_eq!(body["position"], entry_pos[i] - admitted);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_loop_on_two_instances_admits_in_order_at_the_configured_pace() {
    let http = &http();
    const N: u32 = 3;
    const TICK_MS: u64 = 400;
    let auto = |s: &mut Settings| {
        s.queue.admit_per_tick = N;
        s.queue.tick = Duration::from_millis(TICK_MS);
    };
    let a = TestApp::spawn_with(auto).await;
    let b = a.sibling(auto).await;
    let apps = [&a, &b];
    let users = a.seed_users(30).await;
    let started = Instant::now();
    let mut tokens = Vec::new();
    // One by one, so arrival order is the index order.
    for (i, u) in users.iter().enumerate() {
        let (s, body, _) = enter(http, apps[i % 2], &u.token, None).await;
        assert!(s == 201, "{body}");
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    loop {
        // Back to front, one at a time: admission only grows, so a later
        // user seen active before an earlier one seen waiting is a real
        // order break, never a tick landing between concurrent polls.
        let mut active = vec![false; users.len()];
        for i in (0..users.len()).rev() {
            let (s, b) = poll(http, apps[(i + 1) % 2], &users[i].token, &tokens[i]).await;
            assert_eq!(s, 200, "{b}");
            active[i] = b["status"] == "active";
        }
        let elapsed = started.elapsed();
        let n_active = active.iter().filter(|x| **x).count() as u64;
        // Admitted users are always a prefix of the arrival order.
        assert!(
            active.windows(2).all(|w| w[0] || !w[1]),
            "admission out of order: {active:?}"
        );
        // Never faster than N per interval across both instances (one
        // interval of slack for the boundary).
        let intervals = elapsed.as_millis() as u64 / TICK_MS + 2;
        assert!(
            n_active <= u64::from(N) * intervals,
            "{n_active} admitted after {elapsed:?}"
        );
        if n_active == users.len() as u64 {
            break;
        }
        assert!(
            elapsed < Duration::from_secs(20),
            "admission stalled at {n_active}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    eprintln!("30 users admitted in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_active_tokens_lose_access() {
    let http = &http();
    let a = TestApp::spawn_with(|s| {
        manual(10, 1000)(s);
        s.queue.active_idle = Duration::from_secs(1);
        s.queue.protect_order_create = true;
    })
    .await;
    let user = a.create_user("idle").await;
    let (s, body, _) = enter(http, &a, &user.token, None).await;
    assert_eq!(s, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(a.state.queue.admit_once().await.admitted(), 1);
    let (s, body) = poll(http, &a, &user.token, &token).await;
    assert_eq!(
        (s, body["status"].as_str()),
        (200, Some("active")),
        "{body}"
    );
    // Using a protected route is allowed (the order itself fails: no such product).
    let (s, body) = order(&a, &user, 999_999).await;
    assert!(!not_admitted(s, &body), "{s} {body}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, body) = poll(http, &a, &user.token, &token).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (404, Some("queue_token_not_found")),
        "{body}"
    );
    let (s, body) = order(&a, &user, 999_999).await;
    assert!(not_admitted(s, &body), "{s} {body}");
    assert_eq!(body["position"], Value::Null, "not in line any more");
    // Entering again starts a new token at the back.
    let (s, body, _) = enter(http, &a, &user.token, None).await;
    assert_eq!(
        (s, body["status"].as_str()),
        (201, Some("waiting")),
        "{body}"
    );
    assert_ne!(body["token"], token.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_refuse_waiting_callers_and_admit_active_ones() {
    let http = &http();
    let protect = |s: &mut Settings| {
        manual(1, 1000)(s);
        s.queue.protect_order_create = true;
        s.queue.protect_coupon_issue = true;
    };
    let a = TestApp::spawn_with(protect).await;
    let b = a.sibling(protect).await;
    let (s, product) = a
        .admin_post(
            "/admin/products",
            &json!({ "name": "gated", "price": 1000, "stock": 10 }),
        )
        .await;
    assert_eq!(s, 201, "{product}");
    let product = product["id"].as_i64().unwrap();
    let first = a.create_user("first").await;
    let second = a.create_user("second").await;
    let outsider = a.create_user("outsider").await;
    assert_eq!(enter(http, &a, &first.token, None).await.0, 201);
    assert_eq!(enter(http, &b, &second.token, None).await.0, 201);
    // Nobody is active yet.
    let (s, body) = order(&b, &first, product).await;
    assert!(not_admitted(s, &body), "{s} {body}");
    assert_eq!(body["position"], 1);

    assert_eq!(a.state.queue.admit_once().await.admitted(), 1);
    let (s, body) = order(&b, &first, product).await;
    assert_eq!(s, 201, "the active caller orders: {body}");

    // The waiting one is refused with its place and a Retry-After.
    let res = a
        .client
        .post(a.url("/api/v1/orders"))
        .bearer_auth(&second.token)
        .json(&json!({ "items": [{ "product_id": product, "quantity": 1 }] }))
        .send()
        .await
        .unwrap();
    let header = retry_after_header(&res);
    let (s, body) = split(res).await;
    assert!(not_admitted(s, &body), "{s} {body}");
    assert_eq!(body["position"], 1);
    assert_eq!(body["target"], "store");
    assert_eq!(body["degraded"], false);
    assert!(
        header.is_some_and(|h| h >= 1) && body["retry_after"].as_u64() == header,
        "{header:?} {body}"
    );
    let (s, body) = a.post_empty("/api/v1/coupons/1/issue", &second.token).await;
    assert!(
        not_admitted(s, &body),
        "coupon issue is protected too: {s} {body}"
    );
    // Never entered: refused, no position.
    let (s, body) = order(&a, &outsider, product).await;
    assert!(not_admitted(s, &body), "{s} {body}");
    assert_eq!(body["position"], Value::Null);
    // The active caller passes the coupon gate (then: no such coupon).
    let (s, body) = a
        .post_empty("/api/v1/coupons/999999/issue", &first.token)
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (404, Some("coupon_not_found")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_private_rooms_are_separate_and_bad_input_is_refused() {
    let http = &http();
    let a = TestApp::spawn_with(manual(10, 1000)).await;
    let alice = a.create_user("alice").await;
    let bob = a.create_user("bob").await;
    let (s, body, _) = enter(http, &a, &alice.token, None).await;
    assert_eq!(s, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("store."), "{token}");

    let (s, body) = poll(http, &a, &alice.token, &token).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = poll(http, &a, &bob.token, &token).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (404, Some("queue_token_not_found")),
        "someone else's token: {body}"
    );
    let unknown = format!("store.{}", "0".repeat(32));
    assert_eq!(poll(http, &a, &alice.token, &unknown).await.0, 404);
    for garbage in [
        "garbage",
        "store.xyz",
        "coupon-0.00000000000000000000000000000001",
        "%20",
        "store.%2e%2e",
    ] {
        let (s, body) = poll(http, &a, &alice.token, garbage).await;
        assert!((400..500).contains(&s), "{garbage}: {s} {body}");
        assert_ne!(s, 200);
    }
    let (s, body) = poll(http, &a, &alice.token, "garbage").await;
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("invalid_queue_token"))
    );
    let res = a
        .client
        .get(a.url(&format!("{TOKENS}/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = a.client.post(a.url(TOKENS)).send().await.unwrap();
    assert_eq!(res.status(), 401);

    // Rooms (a coupon's room opens only for a coupon that exists).
    let (s, coupon) = a
        .admin_post(
            "/admin/coupons",
            &json!({"name": "room", "discount_amount": 1, "quantity": 10,
                    "opens_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, 201, "{coupon}");
    let cid = coupon["id"].as_i64().unwrap();
    let room = format!("coupon:{cid}");
    let (s, body) = a
        .post_empty(&format!("{TOKENS}?target=nope"), &alice.token)
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (422, Some("invalid_queue_target")),
        "{body}"
    );
    let (s, body, _) = enter(http, &a, &alice.token, Some("coupon:abc")).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (422, Some("invalid_queue_target")),
        "{body}"
    );
    let (s, body, _) = enter(http, &a, &alice.token, Some(room.as_str())).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["target"], room);
    assert_eq!(body["position"], 1, "a coupon's room has its own line");
    let coupon_token = body["token"].as_str().unwrap().to_owned();
    assert!(
        coupon_token.starts_with(&format!("coupon-{cid}.")),
        "{coupon_token}"
    );
    let (s, body, _) = enter(http, &a, &bob.token, Some(room.as_str())).await;
    assert_eq!((s, body["position"].as_u64()), (201, Some(2)), "{body}");
    let (s, body) = a
        .post_empty(&format!("{TOKENS}?target={room}"), &bob.token)
        .await;
    assert_eq!(
        (s, body["position"].as_u64()),
        (200, Some(2)),
        "query form, same token: {body}"
    );
    let (s, body) = poll(http, &a, &alice.token, &coupon_token).await;
    assert_eq!(
        (s, body["target"].as_str()),
        (200, Some(room.as_str())),
        "{body}"
    );
    // An admission tick serves every room.
    assert_eq!(a.state.queue.admit_once().await.admitted(), 3);
    let (s, body) = poll(http, &a, &alice.token, &coupon_token).await;
    assert_eq!(
        (s, body["status"].as_str()),
        (200, Some("active")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_cut_the_room_fails_open_to_the_local_limiter() {
    let http = &http();
    const BURST: usize = 20;
    let proxy = ChaosProxy::start("127.0.0.1:6379".parse().unwrap())
        .await
        .unwrap();
    let url = format!("redis://{}", proxy.addr());
    let limited = |s: &mut Settings| {
        manual(10, 1000)(s);
        s.redis.url = url.clone();
        s.queue.protect_order_create = true;
        s.queue.fallback_burst = BURST as u32;
        s.queue.fallback_rate_per_sec = 0.5;
    };
    let a = TestApp::spawn_with(limited).await;
    let b = a.sibling(limited).await;
    let users = a.seed_users(250).await;
    let (s, body, _) = enter(http, &a, &users[0].token, None).await;
    assert_eq!(
        (s, body["degraded"].as_bool()),
        (201, Some(false)),
        "{body}"
    );

    proxy.cut();
    // 100 users enter at once on one instance: about a burst get in.
    let (first, rest) = users[1..].split_at(100);
    let answers: Vec<Answer> = stream::iter(first)
        .map(|u| enter(http, &a, &u.token, None))
        .buffer_unordered(100)
        .collect()
        .await;
    let mut active = HashSet::new();
    for (s, body, ra) in &answers {
        assert!(*s == 200 || *s == 201, "{s} {body}");
        assert_eq!(body["degraded"], true, "{body}");
        assert!(ra.is_some_and(|r| r >= 1), "{body}");
        if body["status"] == "active" {
            active.insert(body["token"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(body["status"], "waiting");
            assert_eq!(
                body["position"],
                Value::Null,
                "no global line while degraded"
            );
        }
    }
    eprintln!("degraded entry: {} of 100 let in", active.len());
    assert!(
        (BURST..=BURST + 2).contains(&active.len()),
        "permits ≈ burst: {}",
        active.len()
    );

    // The same 100 on the protected route: those let in keep access, the
    // rest are refused (a permit may have refilled meanwhile).
    let results: Vec<(u16, Value)> = stream::iter(first)
        .map(|u| order(&a, u, 999_999))
        .buffer_unordered(100)
        .collect()
        .await;
    let passed = results.iter().filter(|(s, b)| !not_admitted(*s, b)).count();
    for (s, body) in results.iter().filter(|(s, b)| not_admitted(*s, b)) {
        assert_eq!(body["degraded"], true, "{s} {body}");
    }
    assert!(
        (active.len()..=active.len() + 2).contains(&passed),
        "{passed} passed, {} active",
        active.len()
    );

    // The other instance has a bucket of its own: about a burst of callers
    // who never entered get through.
    let results: Vec<(u16, Value)> = stream::iter(&rest[..100])
        .map(|u| order(&b, u, 999_999))
        .buffer_unordered(100)
        .collect()
        .await;
    let passed = results.iter().filter(|(s, b)| !not_admitted(*s, b)).count();
    eprintln!("degraded protected route on b: {passed} of 100 passed");
    assert!((BURST..=BURST + 2).contains(&passed), "{passed}");

    // Back to normal once Redis is.
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, body, _) = enter(http, &a, &users[240].token, None).await;
        if body["degraded"] == false {
            assert_eq!(s, 201, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still degraded: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_halves_while_any_instance_is_unhealthy_and_recovers() {
    const N: u64 = 40;
    const TICK_MS: u64 = 1000;
    let http = &http();
    let a = TestApp::spawn_with(manual(N as u32, TICK_MS)).await;
    let b = a.sibling(manual(N as u32, TICK_MS)).await;
    let users = a.seed_users(300).await;
    let entered: Vec<Answer> = stream::iter(&users)
        .map(|u| enter(http, &a, &u.token, None))
        .buffer_unordered(100)
        .collect()
        .await;
    assert!(entered.iter().all(|(s, _, _)| *s == 201));

    // A breaker open on b: b admits at half rate, and marks the cluster
    // unhealthy, so a (healthy itself) slows down too.
    b.state
        .breakers
        .control("notification", "force-open".parse().unwrap())
        .unwrap();
    next_interval(&a, TICK_MS).await;
    let tick = b.state.queue.admit_once().await;
    assert_eq!(tick.admitted(), N / 2, "{tick:?}");
    next_interval(&a, TICK_MS).await;
    let tick = a.state.queue.admit_once().await;
    assert_eq!(
        tick.admitted(),
        N / 2,
        "peer trouble slows every admitter: {tick:?}"
    );

    // Healthy again: back by a quarter per tick, up to N.
    b.state
        .breakers
        .control("notification", "reset".parse().unwrap())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2 * TICK_MS)).await;
    let mut admitted = Vec::new();
    for _ in 0..3 {
        next_interval(&a, TICK_MS).await;
        admitted.push(a.state.queue.admit_once().await.admitted());
    }
    assert_eq!(admitted, [N / 2 + N / 4, N, N]);
}
