//! The HTTP contract under hostile input (issue 27): 405 with `Allow`,
//! control characters refused, 401 for a token of a user that does not
//! exist, waiting rooms only for real coupons and sales, no lock or Redis key
//! for someone else's (or no) order, the queue body's `null`, per-user rate
//! limits, the body limit's JSON 413, and the token secret's rotation window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_testkit::{split, TestApp, ADMIN_KEY, TOKEN_SECRET};
use serde_json::{json, Value};

fn token_for(user: i64, secret: &str) -> String {
    commerce_accounts::token::TokenSigner::new(secret.as_bytes(), 3600)
        .issue(commerce_domain::UserId::from_db(user))
        .unwrap()
}

async fn coupon(app: &TestApp, quantity: i64) -> i64 {
    let (status, body) = app
        .admin_post(
            "/admin/coupons",
            &json!({"name": "c", "discount_amount": 100, "quantity": quantity,
                    "opens_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().unwrap()
}

async fn product(app: &TestApp, stock: i64) -> i64 {
    let (status, body) = app
        .admin_post(
            "/admin/products",
            &json!({"name": "p", "price": 1000, "stock": stock}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().unwrap()
}

async fn redis_keys(app: &TestApp, pattern: &str) -> Vec<String> {
    let mut c = app.redis().await;
    redis::cmd("KEYS")
        .arg(format!("{}{pattern}", app.redis_prefix))
        .query_async(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_on_a_known_path_is_405_with_allow() {
    let app = TestApp::spawn().await;
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/api/v1/products", "GET"),
        (reqwest::Method::GET, "/api/v1/orders", "POST"),
        (reqwest::Method::PUT, "/api/v1/orders/5", "GET"),
        (reqwest::Method::GET, "/api/v1/orders/5/payment", "POST"),
        (reqwest::Method::POST, "/api/v1/products/popular", "GET"),
        (reqwest::Method::GET, "/admin/products/3", "PATCH"),
        (reqwest::Method::POST, "/openapi.json", "GET"),
    ] {
        let res = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        let got = res
            .headers()
            .get("allow")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(got, allow, "{method} {path}");
        let (_, body) = split(res).await;
        assert_eq!(body["code"], "method_not_allowed");
    }
    let (status, body) = app.get_json("/api/v1/nowhere", None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_in_every_text_field() {
    let app = TestApp::spawn().await;
    let pid = product(&app, 5).await;
    for bad in ["a\u{0}b", "tab\there", "bell\u{7}", "del\u{7f}"] {
        let (s, b) = app
            .post_json("/api/v1/users", None, None, &json!({ "name": bad }))
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (422, Some("invalid_name")),
            "{bad:?}"
        );
        let (s, b) = app
            .admin_post(
                "/admin/coupons",
                &json!({"name": bad, "discount_amount": 1, "quantity": 1,
                        "opens_at": "2020-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (422, Some("invalid_name")),
            "{bad:?}"
        );
        let (s, b) = app
            .admin_post(
                "/admin/products",
                &json!({"name": bad, "price": 1, "stock": 1}),
            )
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (422, Some("invalid_name")),
            "{bad:?}"
        );
        let res = app
            .client
            .patch(app.url(&format!("/admin/products/{pid}")))
            .header("X-Admin-Key", ADMIN_KEY)
            .json(&json!({ "name": bad }))
            .send()
            .await
            .unwrap();
        assert_eq!(split(res).await.0, 422, "{bad:?}");
    }
    // Descriptions allow line breaks and tabs, nothing else.
    let (s, b) = app
        .admin_post(
            "/admin/products",
            &json!({"name": "p", "price": 1, "stock": 1, "description": "x\u{0}y"}),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (422, Some("invalid_description")));
    // Nothing was written.
    let (_, page) = app.get_json("/api/v1/products", None).await;
    assert_eq!(page["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_a_user_that_does_not_exist_is_401() {
    let app = TestApp::spawn().await;
    let cid = coupon(&app, 10).await;
    let pid = product(&app, 10).await;
    let ghost = token_for(987_654, TOKEN_SECRET);
    let t = Some(ghost.as_str());
    let answers = [
        app.post_json(
            "/api/v1/me/balance/charge",
            t,
            Some("k1"),
            &json!({"amount": 100}),
        )
        .await,
        app.post_json(
            "/api/v1/orders",
            t,
            Some("k2"),
            &json!({"items": [{"product_id": pid, "quantity": 1}]}),
        )
        .await,
        app.post_empty(&format!("/api/v1/coupons/{cid}/issue"), &ghost)
            .await,
        app.post_empty("/api/v1/orders/1/payment", &ghost).await,
        app.post_empty("/api/v1/orders/1/cancel", &ghost).await,
        app.post_empty("/api/v1/queue/tokens", &ghost).await,
        app.get_json("/api/v1/me/balance", t).await,
        app.get_json("/api/v1/me/coupons", t).await,
        app.get_json("/api/v1/orders/1", t).await,
    ];
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(
            (*status, body["code"].as_str()),
            (401, Some("unknown_user")),
            "call {i}: {body}"
        );
    }
    // Nothing was taken: the coupon and the stock are whole.
    let real = app.create_user("real").await;
    let (s, _) = app
        .post_empty(&format!("/api/v1/coupons/{cid}/issue"), &real.token)
        .await;
    assert_eq!(s, 201);
    let (_, p) = app.get_json(&format!("/api/v1/products/{pid}"), None).await;
    assert_eq!(p["stock"], 10);
    // A real user's token still works (and is remembered).
    let (s, _) = app.get_json("/api/v1/me/balance", Some(&real.token)).await;
    assert_eq!(s, 200);
}

/// First-sight lookups go in batches: a crowd of users the instance has
/// never seen, mixed with tokens of users that do not exist, each gets its
/// own answer (a batch's answer is per user, not per batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_new_and_ghost_users_each_get_their_own_answer() {
    let app = TestApp::spawn().await;
    let users = app.seed_users(120).await;
    let ghosts: Vec<String> = (0..80)
        .map(|i| token_for(900_000 + i, TOKEN_SECRET))
        .collect();
    let calls = users
        .iter()
        .map(|u| (u.token.clone(), 200))
        .chain(ghosts.iter().map(|g| (g.clone(), 401)));
    let answers = futures::future::join_all(calls.map(|(token, want)| {
        let app = &app;
        async move {
            let (s, b) = app.get_json("/api/v1/me/balance", Some(&token)).await;
            (s, want, b)
        }
    }))
    .await;
    for (got, want, body) in &answers {
        assert_eq!(got, want, "{body}");
        if *want == 401 {
            assert_eq!(body["code"], "unknown_user");
        }
    }
    // Several looked up together.
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("write_batch_size") && metrics.contains("kind=\"user_lookup\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_open_only_for_coupons_and_sales_that_exist() {
    let app = TestApp::spawn().await;
    let user = app.create_user("q").await;
    let cid = coupon(&app, 10).await;
    let pid = product(&app, 10).await;
    for (target, status, code) in [
        ("coupon:999999", 404, Some("coupon_not_found")),
        ("sale:999999", 404, Some("sale_not_found")),
    ] {
        let (s, b) = app
            .post_json(
                "/api/v1/queue/tokens",
                Some(&user.token),
                None,
                &json!({"target": target}),
            )
            .await;
        assert_eq!((s, b["code"].as_str()), (status, code), "{target}: {b}");
    }
    assert!(redis_keys(&app, "*999999*").await.is_empty());
    for target in [format!("coupon:{cid}"), format!("sale:{pid}")] {
        let (s, b) = app
            .post_json(
                "/api/v1/queue/tokens",
                Some(&user.token),
                None,
                &json!({"target": target}),
            )
            .await;
        assert_eq!(s, 201, "{target}: {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_body_null_is_the_store_and_an_array_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.create_user("q").await;
    let send = |body: &'static str| {
        app.client
            .post(app.url("/api/v1/queue/tokens"))
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (s, b) = split(send("null").await.unwrap()).await;
    assert_eq!((s, b["target"].as_str()), (201, Some("store")), "{b}");
    for bad in ["[null]", "[]", "1", "\"store\""] {
        let (s, b) = split(send(bad).await.unwrap()).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (422, Some("invalid_body")),
            "{bad}: {b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_of_an_order_not_yours_takes_no_lock_and_leaves_no_key() {
    let app = TestApp::spawn().await;
    let owner = app.create_user("owner").await;
    let other = app.create_user("other").await;
    let pid = product(&app, 10).await;
    let (s, order) = app
        .post_json(
            "/api/v1/orders",
            Some(&owner.token),
            None,
            &json!({"items": [{"product_id": pid, "quantity": 1}]}),
        )
        .await;
    assert_eq!(s, 201, "{order}");
    let oid = order["id"].as_i64().unwrap();
    for id in [oid, 777_001, 777_002, 777_003] {
        let (s, b) = app
            .post_json(
                &format!("/api/v1/orders/{id}/payment"),
                Some(&other.token),
                Some(&format!("pay-{id}")),
                &json!(null),
            )
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (404, Some("order_not_found")),
            "{id}: {b}"
        );
    }
    assert!(
        redis_keys(&app, "*order-pay*").await.is_empty(),
        "a refused payment left lock keys"
    );
    // The owner pays; the lock's fence key lives about as long as the lease.
    app.post_json(
        "/api/v1/me/balance/charge",
        Some(&owner.token),
        None,
        &json!({"amount": 5000}),
    )
    .await;
    let (s, b) = app
        .post_empty(&format!("/api/v1/orders/{oid}/payment"), &owner.token)
        .await;
    assert_eq!(s, 200, "{b}");
    let mut c = app.redis().await;
    let kept = redis_keys(&app, "*order-pay*").await;
    assert!(
        !kept.is_empty(),
        "the paying owner's lock left its fence counter"
    );
    for key in kept {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!((0..=120_000).contains(&ttl), "{key} kept {ttl} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_rate_limits_answer_429_with_retry_after() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.window_secs = 30;
        s.rate_limit.money = 3;
        s.rate_limit.queue = 2;
    })
    .await;
    let a = app.create_user("a").await;
    let b = app.create_user("b").await;
    let charge = |t: String| {
        let app = &app;
        async move {
            let res = app
                .client
                .post(app.url("/api/v1/me/balance/charge"))
                .bearer_auth(t)
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(&json!({"amount": 10}))
                .send()
                .await
                .unwrap();
            let retry = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let (s, body) = split(res).await;
            (s, body, retry)
        }
    };
    for _ in 0..3 {
        assert_eq!(charge(a.token.clone()).await.0, 200);
    }
    let (s, body, retry) = charge(a.token.clone()).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    assert!(retry.is_some_and(|r| (1..=30).contains(&r)), "{retry:?}");
    // Per user: another user is not held back; the refused charge changed nothing.
    assert_eq!(charge(b.token.clone()).await.0, 200);
    let (_, bal) = app.get_json("/api/v1/me/balance", Some(&a.token)).await;
    assert_eq!(bal["balance"], 30);
    for expect in [201, 200, 429] {
        let (s, _) = app.post_empty("/api/v1/queue/tokens", &a.token).await;
        assert_eq!(s, expect);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_open_every_room() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.rooms = 3;
        s.queue.max_rooms = 10;
    })
    .await;
    let hog = app.create_user("hog").await;
    let mut products = Vec::new();
    for _ in 0..5 {
        products.push(product(&app, 5).await);
    }
    let mut got = Vec::new();
    for p in &products {
        let (s, _) = app
            .post_json(
                "/api/v1/queue/tokens",
                Some(&hog.token),
                None,
                &json!({"target": format!("sale:{p}")}),
            )
            .await;
        got.push(s);
    }
    assert_eq!(got, [201, 201, 201, 429, 429]);
    // Another user still gets a room of their own.
    let other = app.create_user("other").await;
    let (s, b) = app
        .post_json(
            "/api/v1/queue/tokens",
            Some(&other.token),
            None,
            &json!({"target": format!("sale:{}", products[4])}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_per_instance_while_redis_is_out() {
    let app = TestApp::spawn_with(|s| {
        s.redis.url = "redis://127.0.0.1:1".into();
        s.rate_limit.enabled = true;
        s.rate_limit.window_secs = 30;
        s.rate_limit.money = 2;
    })
    .await;
    let a = app.create_user("a").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let (s, _) = app
            .post_json(
                "/api/v1/me/balance/charge",
                Some(&a.token),
                None,
                &json!({"amount": 10}),
            )
            .await;
        got.push(s);
    }
    assert_eq!(got, [200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_with_a_json_body() {
    let app = TestApp::spawn().await;
    let user = app.create_user("big").await;
    let big = "x".repeat(200 * 1024);
    for path in [
        "/api/v1/queue/tokens",
        "/api/v1/users",
        "/api/v1/me/balance/charge",
    ] {
        let res = app
            .client
            .post(app.url(path))
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(format!("{{\"name\":\"{big}\"}}"))
            .send()
            .await
            .unwrap();
        let (s, b): (u16, Value) = split(res).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (413, Some("payload_too_large")),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_token_secret_is_accepted_during_its_window_only() {
    let old = "the-previous-token-secret";
    let within = TestApp::spawn_with(|s| {
        s.auth.previous_token_secret = Some(old.to_owned().into());
        s.auth.previous_token_secret_until =
            Some((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    })
    .await;
    let user = within.create_user("r").await;
    let (s, _) = within
        .get_json("/api/v1/me/balance", Some(&token_for(user.id, old)))
        .await;
    assert_eq!(s, 200);
    let (s, _) = within
        .get_json(
            "/api/v1/me/balance",
            Some(&token_for(user.id, "another-secret")),
        )
        .await;
    assert_eq!(s, 401);
    let after = within
        .sibling(|s| {
            s.auth.previous_token_secret = Some(old.to_owned().into());
            s.auth.previous_token_secret_until =
                Some((chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339());
        })
        .await;
    let (s, b) = after
        .get_json("/api/v1/me/balance", Some(&token_for(user.id, old)))
        .await;
    assert_eq!((s, b["code"].as_str()), (401, Some("invalid_token")));
    // The wrong admin key is a 401 too.
    let res = within
        .client
        .post(within.url("/admin/products"))
        .header("X-Admin-Key", "test-admin-kez")
        .json(&json!({"name": "p", "price": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(split(res).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_description_is_valid_openapi_3_1() {
    let have_validator = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_validator {
        // CI installs it (scripts/api-contract.sh runs before the tests).
        eprintln!("SKIPPED: pip install openapi-spec-validator to run this test");
        return;
    }
    let app = TestApp::spawn().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/contract/validate_spec.py");
    let url = app.url("/openapi.json");
    let run = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the validator finishes within a minute")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("0 errors"), "{text}");
}
