//! Users, auth and balance over real HTTP against a real database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_testkit::{TestApp, TestDb};
use futures::future::join_all;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

async fn balance_of(app: &TestApp, token: &str) -> i64 {
    let (status, body) = app.get_json("/api/v1/me/balance", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["balance"].as_i64().unwrap()
}

async fn ledger_sum(app: &TestApp, user: i64) -> i64 {
    app.db
        .scalar(&format!("SELECT COALESCE(SUM(delta), 0)::BIGINT AS n FROM balance_ledger WHERE user_id = {user}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_charges_with_resent_keys_count_once() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kim").await;
    // 150 distinct charges, then 50 of their keys sent again, all at once.
    let mut plan: Vec<(String, i64)> = (0..150).map(|i| (format!("k-{i}"), i as i64 + 1)).collect();
    plan.extend((0..50).map(|i| (format!("k-{i}"), i as i64 + 1)));
    let expected: i64 = (1..=150).sum();
    let results = join_all(plan.iter().map(|(key, amount)| {
        let (app, user) = (&app, &user);
        async move {
            app.post_json(
                "/api/v1/me/balance/charge",
                Some(&user.token),
                Some(key),
                &json!({ "amount": amount }),
            )
            .await
        }
    }))
    .await;
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for (status, body) in &results {
        *by_status.entry(*status).or_default() += 1;
        assert!(
            *status == 200 || (*status == 409 && body["code"] == "request_in_progress"),
            "{status} {body}"
        );
    }
    assert!(by_status[&200] >= 150, "{by_status:?}");
    // A 409 means "still running"; a retry then gets the replay.
    for ((key, amount), (status, _)) in plan.iter().zip(&results) {
        if *status == 409 {
            let (s, body) = app
                .post_json(
                    "/api/v1/me/balance/charge",
                    Some(&user.token),
                    Some(key),
                    &json!({ "amount": amount }),
                )
                .await;
            assert_eq!(s, 200, "{body}");
        }
    }
    assert_eq!(balance_of(&app, &user.token).await, expected);
    assert_eq!(ledger_sum(&app, user.id).await, expected);
    let rows = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) AS n FROM balance_ledger WHERE user_id = {}",
            user.id
        ))
        .await;
    assert_eq!(rows, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_replays_refuses_mismatch_and_overlap() {
    let app = TestApp::spawn().await;
    let user = app.create_user("lee").await;
    let path = "/api/v1/me/balance/charge";
    let (s1, b1) = app
        .post_json(
            path,
            Some(&user.token),
            Some("once"),
            &json!({"amount": 500}),
        )
        .await;
    assert_eq!(s1, 200);
    // Same key, same body (formatted differently): the first answer again.
    let res = app
        .client
        .post(app.url(path))
        .bearer_auth(&user.token)
        .header("Idempotency-Key", "once")
        .header("Content-Type", "application/json")
        .body("{ \"amount\" : 500 }")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("idempotent-replayed").unwrap(), "true");
    let (s2, b2) = commerce_testkit::split(res).await;
    assert_eq!((s2, &b2), (200, &b1));
    // Same key, different body: 422 and nothing changes.
    let (s3, b3) = app
        .post_json(
            path,
            Some(&user.token),
            Some("once"),
            &json!({"amount": 999}),
        )
        .await;
    assert_eq!(s3, 422);
    assert_eq!(b3["code"], "idempotency_key_mismatch");
    assert_eq!(balance_of(&app, &user.token).await, 500);

    // 20 concurrent requests with one new key: one charge; the rest replay or 409.
    let results = join_all((0..20).map(|_| async {
        app.post_json(
            path,
            Some(&user.token),
            Some("burst"),
            &json!({"amount": 7}),
        )
        .await
    }))
    .await;
    for (status, body) in &results {
        assert!(
            *status == 200 || (*status == 409 && body["code"] == "request_in_progress"),
            "{status} {body}"
        );
    }
    assert_eq!(balance_of(&app, &user.token).await, 507);
    assert_eq!(ledger_sum(&app, user.id).await, 507);

    // Keys are per user: another user's identical key is independent.
    let other = app.create_user("park").await;
    let (s4, b4) = app
        .post_json(
            path,
            Some(&other.token),
            Some("once"),
            &json!({"amount": 500}),
        )
        .await;
    assert_eq!(s4, 200, "{b4}");
    assert_eq!(b4["user_id"], other.id);
    assert_eq!(balance_of(&app, &user.token).await, 507);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_charges_are_4xx_and_change_nothing() {
    let app = TestApp::spawn().await;
    let user = app.create_user("choi").await;
    let path = "/api/v1/me/balance/charge";
    app.post_json(path, Some(&user.token), None, &json!({"amount": 100}))
        .await;

    let bodies: Vec<(&str, &str, &str)> = vec![
        ("application/json", r#"{"amount": 0}"#, "invalid_amount"),
        ("application/json", r#"{"amount": -5}"#, "invalid_amount"),
        ("application/json", r#"{"amount": 10.5}"#, "invalid_amount"),
        ("application/json", r#"{"amount": "100"}"#, "invalid_amount"),
        ("application/json", r#"{"amount": 1e30}"#, "invalid_amount"),
        (
            "application/json",
            r#"{"amount": 99999999999999999999999}"#,
            "invalid_amount",
        ),
        (
            "application/json",
            r#"{"amount": 9223372036854775807}"#,
            "invalid_amount",
        ),
        ("application/json", r#"{"amount": null}"#, "invalid_amount"),
        ("application/json", "", "malformed_json"),
        ("application/json", "{}", "invalid_body"),
        (
            "application/json",
            r#"{"amount": 5, "extra": 1}"#,
            "invalid_body",
        ),
        ("application/json", r#"{"amount": 5"#, "malformed_json"),
        ("application/json", r#""text""#, "invalid_body"),
        ("text/plain", r#"{"amount": 5}"#, "unsupported_media_type"),
    ];
    for (ctype, body, code) in bodies {
        let res = app
            .client
            .post(app.url(path))
            .bearer_auth(&user.token)
            .header("Content-Type", ctype)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let (status, json) = commerce_testkit::split(res).await;
        assert!((400..500).contains(&status), "{body}: {status} {json}");
        assert_eq!(json["code"], code, "{body}: {json}");
        assert!(json["message"].is_string());
    }
    // No key: a naive retry would charge twice, so the charge is refused
    // and the balance stays.
    for _ in 0..2 {
        let res = app
            .client
            .post(app.url(path))
            .bearer_auth(&user.token)
            .json(&json!({"amount": 5}))
            .send()
            .await
            .unwrap();
        let (status, json) = commerce_testkit::split(res).await;
        assert_eq!(
            (status, json["code"].as_str()),
            (400, Some("idempotency_key_required")),
            "{json}"
        );
        assert!(json["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"));
    }
    assert_eq!(balance_of(&app, &user.token).await, 100);
    // Bad idempotency keys.
    let long = "k".repeat(300);
    for key in ["has space", long.as_str()] {
        let (status, json) = app
            .post_json(path, Some(&user.token), Some(key), &json!({"amount": 5}))
            .await;
        assert_eq!(status, 400, "{json}");
        assert_eq!(json["code"], "invalid_idempotency_key");
    }
    // The balance cap: a charge that would pass it is refused. Bring the
    // balance near the cap directly (with its ledger row) to get there fast.
    let near = commerce_domain::MAX_BALANCE - 100;
    let mut c = app.db.conn().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "WITH u AS (UPDATE users SET balance = {near} WHERE id = {id} RETURNING balance) \
             INSERT INTO balance_ledger (user_id, delta, balance_after, kind) SELECT {id}, {near} - 100, balance, 'charge' FROM u",
            id = user.id
        )),
        &mut c,
    )
    .await
    .unwrap();
    let (status, json) = app
        .post_json(path, Some(&user.token), None, &json!({"amount": 101}))
        .await;
    assert_eq!(
        (status, json["code"].as_str()),
        (422, Some("balance_limit_exceeded")),
        "{json}"
    );
    let (status, _) = app
        .post_json(path, Some(&user.token), None, &json!({"amount": 100}))
        .await;
    assert_eq!(status, 200);
    let balance = balance_of(&app, &user.token).await;
    assert!(balance <= commerce_domain::MAX_BALANCE);
    assert_eq!(ledger_sum(&app, user.id).await, balance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_users_see_only_their_own_balance() {
    let app = TestApp::spawn().await;
    let a = app.create_user("a").await;
    let b = app.create_user("b").await;
    app.post_json(
        "/api/v1/me/balance/charge",
        Some(&a.token),
        None,
        &json!({"amount": 300}),
    )
    .await;
    // B's token reads and charges B only.
    let (s, body) = app.get_json("/api/v1/me/balance", Some(&b.token)).await;
    assert_eq!(
        (s, body["user_id"].as_i64(), body["balance"].as_i64()),
        (200, Some(b.id), Some(0))
    );
    app.post_json(
        "/api/v1/me/balance/charge",
        Some(&b.token),
        None,
        &json!({"amount": 5}),
    )
    .await;
    assert_eq!(balance_of(&app, &a.token).await, 300);

    // Missing, malformed, forged and expired tokens: 401 with a code.
    let (s, body) = app.get_json("/api/v1/me/balance", None).await;
    assert_eq!((s, body["code"].as_str()), (401, Some("missing_token")));
    let (s, _) = app
        .get_json("/api/v1/me/balance", Some("not-a-token"))
        .await;
    assert_eq!(s, 401);
    let forged = commerce_accounts_token(b"another-secret", a.id, 60);
    let (s, body) = app.get_json("/api/v1/me/balance", Some(&forged)).await;
    assert_eq!((s, body["code"].as_str()), (401, Some("invalid_token")));
    let expired = commerce_accounts_token(commerce_testkit::TOKEN_SECRET.as_bytes(), a.id, -5);
    let (s, body) = app.get_json("/api/v1/me/balance", Some(&expired)).await;
    assert_eq!((s, body["code"].as_str()), (401, Some("token_expired")));

    // Admin minting: needs the key; unknown users are 404.
    let (s, _) = app
        .post_json("/api/v1/auth/token", None, None, &json!({"user_id": a.id}))
        .await;
    assert_eq!(s, 401);
    let (s, body) = app
        .admin_post("/api/v1/auth/token", &json!({"user_id": a.id}))
        .await;
    assert_eq!(s, 200);
    let minted = body["token"].as_str().unwrap();
    assert_eq!(balance_of(&app, minted).await, 300);
    let (s, body) = app
        .admin_post("/api/v1/auth/token", &json!({"user_id": 987654}))
        .await;
    assert_eq!((s, body["code"].as_str()), (404, Some("user_not_found")));
    let (s, _) = app
        .admin_post("/api/v1/auth/token", &json!({"user_id": -1}))
        .await;
    assert_eq!(s, 422);
}

fn commerce_accounts_token(secret: &[u8], user: i64, ttl: i64) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let now = chrono::Utc::now().timestamp();
    encode(
        &Header::default(),
        &json!({"sub": user.to_string(), "iat": now, "exp": now + ttl}),
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_validates_names() {
    let app = TestApp::spawn().await;
    for body in [
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "x".repeat(65)}),
        json!({}),
    ] {
        let (s, b) = app.post_json("/api/v1/users", None, None, &body).await;
        assert_eq!(s, 422, "{body}: {b}");
        assert!(b["code"].is_string());
    }
    let (s, b) = app
        .post_json("/api/v1/users", None, None, &json!({"name": " 김철수 "}))
        .await;
    assert_eq!(s, 201);
    assert_eq!(b["name"], "김철수");
    assert_eq!(app.db.scalar("SELECT COUNT(*) AS n FROM users").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_answers_503_then_recovers() {
    let app = TestApp::spawn_with(|s| {
        s.database.pool_size = 1;
        s.database.pool_wait_ms = 300;
    })
    .await;
    let user = app.create_user("pool").await;
    // Hold the only connection with a long statement.
    let pool = app.state.db.clone();
    let holder = tokio::spawn(async move {
        let mut c = pool.get().await.unwrap();
        diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT pg_sleep(2)"), &mut c)
            .await
            .unwrap();
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let res = app
        .client
        .get(app.url("/api/v1/me/balance"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("retry-after").is_some());
    let (_, body) = commerce_testkit::split(res).await;
    assert_eq!(body["code"], "db_busy");
    // Bounded by the pool wait, far from the 2 s hold.
    assert!(
        waited < std::time::Duration::from_millis(1500),
        "{waited:?}"
    );
    holder.await.unwrap();
    assert_eq!(balance_of(&app, &user.token).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_migrates_an_empty_database_once() {
    // A database that does not exist yet: the server creates and migrates it.
    let name = format!("empty_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", commerce_testkit::db::server_url());
    let settings = commerce_testkit::test_settings(&url, "x:");
    let first = commerce_server::app::migrate(&settings).await.unwrap();
    assert!(!first.is_empty());
    let second = commerce_server::app::migrate(&settings).await.unwrap();
    assert!(second.is_empty(), "{second:?}");
    let db = Arc::new(TestDb { name, url });
    let app = TestApp::spawn_on(db, "x:", |_| {}).await;
    let (s, _) = app.get_json("/health/ready", None).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints_and_request_ids() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-request-id").is_some());
    let (s, body) = app.get_json("/health/ready", None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "up");
    let (s, body) = app.get_json("/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(body["paths"]["/api/v1/me/balance/charge"]["post"].is_object());
    let (s, body) = app.get_json("/no/such/route", None).await;
    assert_eq!((s, body["code"].as_str()), (404, Some("not_found")));
    let text = app.metrics_text().await;
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(text.contains("db_pool_connections"));
    // Help text (promtool check metrics wants it) and the scrape-time gauges
    // the alert rules read (docker/prometheus/alerts.yml).
    assert!(text.contains("# HELP http_requests_total "), "{text}");
    assert!(text.contains("outbox_oldest_age_seconds "), "{text}");
    assert!(text.contains("events_dead_letters{"), "{text}");
}

/// Sends `GET /health/live` on `stream` and reads one whole response; None
/// when the server has closed the connection.
async fn live_on(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + length {
                return Some(text);
            }
        }
    }
}

/// A balancer keeps idle upstream connections for up to 60 s (nginx in
/// docker/ and the load tests): the server must not close one sooner, or the
/// balancer can send a request down a connection being closed (a 502, or a
/// reset POST). Actix's own default closes after 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_outlive_the_balancers_idle_timeout_floor() {
    let app = TestApp::spawn().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let first = live_on(&mut stream).await.expect("first response");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let second = live_on(&mut stream)
        .await
        .expect("the server closed a connection idle for 7 s");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

/// In a flash sale thousands of connections open in the same second and
/// the server reads them in turn: a connection whose request head comes
/// later than actix's 5 s default must still get its answer, not a 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_slow_to_send_its_request_still_gets_an_answer() {
    let app = TestApp::spawn().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let answer = live_on(&mut stream)
        .await
        .expect("the server closed a new connection after 7 s without a request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
