//! The server with a dependency down from the start: it starts, says it is
//! degraded but ready, and keeps answering from PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_testkit::TestApp;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_and_serves_degraded_with_redis_down() {
    // Nothing listens on port 1: every Redis call is refused.
    let app = TestApp::spawn_with(|s| s.redis.url = "redis://127.0.0.1:1".into()).await;
    let user = app.create_user("u").await;
    let (s, body) = app.get_json("/health/ready", None).await;
    assert_eq!(s, 200, "degraded is still ready: {body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert_eq!(body["checks"]["database"]["status"], "up");
    // PostgreSQL-backed routes answer as usual.
    app.charge(&user, 10).await;
    // Coupons fall back to the database path and stay exact.
    let now = chrono::Utc::now();
    let (s, coupon) = app
        .admin_post(
            "/admin/coupons",
            &json!({"name": "c", "discount_amount": 5, "quantity": 1, "opens_at": now - chrono::Duration::seconds(1)}),
        )
        .await;
    assert_eq!(s, 201, "{coupon}");
    let path = format!("/api/v1/coupons/{}/issue", coupon["id"]);
    let (s, body) = app.post_empty(&path, &user.token).await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = app.post_empty(&path, &user.token).await;
    assert_eq!((s, body["code"].as_str()), (409, Some("already_issued")));
    // The redis breaker is visible to operators.
    let (s, breakers) = app.get_json_admin("/admin/breakers").await;
    assert_eq!(s, 200);
    let redis = breakers["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "redis")
        .cloned()
        .unwrap();
    assert!(redis["failures"].as_u64().unwrap() > 0, "{redis}");
    for field in ["state", "successes", "rejected", "open_until"] {
        assert!(redis.get(field).is_some(), "{field} in {redis}");
    }
    let (s, _) = app
        .admin_post("/admin/breakers/nope/reset", &json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .admin_post("/admin/breakers/redis/explode", &json!({}))
        .await;
    assert!(s == 404 || s == 422);
}
