//! Redis killed (SIGKILL) and restarted empty in the middle of a coupon
//! trickle, against a disposable redis-server of the test's own: every
//! instance's `redis` breaker closes within seconds of Redis accepting
//! connections again, whichever of the instance's connections (the shared
//! one, each HTTP worker's) the probe goes through, and rule 1 holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_resilience::BreakerState;
use commerce_testkit::redis_server::RedisServer;
use commerce_testkit::{TestApp, TestUser};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// docs/architecture.md: a dependency is used again "within seconds" of its return; issue 26 asks ≤ 3 s.
const HEAL_WITHIN: Duration = Duration::from_secs(3);
const SMALL: i64 = 30;
const LARGE: i64 = 5_000;
/// Concurrent request streams per instance, each on its own HTTP client
/// (own TCP connection), so both HTTP workers of an instance serve some.
const STREAMS: usize = 4;

async fn create_coupon(app: &TestApp, quantity: i64) -> i64 {
    let now = chrono::Utc::now();
    let (s, body) = app
        .admin_post(
            "/admin/coupons",
            &json!({
                "name": "restart",
                "discount_amount": 100,
                "quantity": quantity,
                "opens_at": now - chrono::Duration::seconds(1),
            }),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    body["id"].as_i64().unwrap()
}

#[derive(Debug, Clone)]
struct Answer {
    at: Instant,
    coupon: i64,
    status: u16,
    code: String,
    retry_after: bool,
}

fn breaker_states(apps: &[&TestApp]) -> Vec<BreakerState> {
    apps.iter()
        .map(|a| a.state.breakers.redis().state())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty_heals_every_instance_within_seconds() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let a = TestApp::spawn_with(|s| s.redis.url = url.clone()).await;
    let b = a.sibling(|s| s.redis.url = url.clone()).await;
    let users = Arc::new(a.seed_users(6_000).await);
    let small = create_coupon(&a, SMALL).await;
    let large = create_coupon(&a, LARGE).await;

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let mut streams = Vec::new();
    for app in [&a, &b] {
        for _ in 0..STREAMS {
            let base = app.address.clone();
            let (stop, next, answers, users) =
                (stop.clone(), next.clone(), answers.clone(), users.clone());
            streams.push(tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::SeqCst) {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    // Every fifth request repeats an earlier user.
                    let user: &TestUser = if n % 5 == 4 {
                        &users[n / 2]
                    } else {
                        &users[n % users.len()]
                    };
                    for coupon in [small, large] {
                        let res = client
                            .post(format!("{base}/api/v1/coupons/{coupon}/issue"))
                            .bearer_auth(&user.token)
                            .send()
                            .await;
                        let Ok(res) = res else { continue };
                        let status = res.status().as_u16();
                        let retry_after = res.headers().contains_key("retry-after");
                        let body: serde_json::Value = res.json().await.unwrap_or_default();
                        answers.lock().unwrap().push(Answer {
                            at: Instant::now(),
                            coupon,
                            status,
                            code: body["code"].as_str().unwrap_or_default().to_owned(),
                            retry_after,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
    }

    // Warm: every connection in use, the small coupon sold out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(breaker_states(&[&a, &b]), [BreakerState::Closed; 2]);

    redis.kill();
    let killed = Instant::now();
    while breaker_states(&[&a, &b]) != [BreakerState::Open; 2] {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "both breakers open while Redis is down: {:?}",
            breaker_states(&[&a, &b])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Down a while, as in a real crash: the connections' reconnects give up.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ready = redis.restart();
    let mut healed = None;
    while ready.elapsed() < Duration::from_secs(40) {
        if breaker_states(&[&a, &b]) == [BreakerState::Closed; 2] {
            healed = Some(ready.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("redis breakers closed {healed:?} after Redis accepted connections again");
    // Issuing keeps working afterwards, and the breakers stay closed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for s in streams {
        s.await.unwrap();
    }
    let states = breaker_states(&[&a, &b]);
    let snapshots: Vec<_> = [&a, &b]
        .iter()
        .map(|x| x.state.breakers.redis().snapshot())
        .collect();
    let healed = healed.unwrap_or_else(|| panic!("not healed in 40 s: {snapshots:?}"));
    assert!(
        healed <= HEAL_WITHIN,
        "every instance's redis breaker closes within {HEAL_WITHIN:?} of Redis returning; took {healed:?}: {snapshots:?}"
    );
    assert_eq!(states, [BreakerState::Closed; 2], "{snapshots:?}");

    let answers = answers.lock().unwrap().clone();
    for x in &answers {
        assert!(
            matches!(
                (x.status, x.code.as_str()),
                (201, _) | (409, "sold_out" | "already_issued")
            ) || (x.status == 503 && x.retry_after),
            "an answer outside the contract: {x:?}"
        );
    }
    let healed_at = ready + healed;
    let after = answers
        .iter()
        .filter(|x| x.at > healed_at + Duration::from_millis(500) && x.coupon == large);
    // Working means decided: issued, or a user who already holds one (the
    // stream reuses its users). A 503 means the path is not back yet (CI
    // once counted 188 of 209 as 201 only).
    let (ok, all, refused) = after.fold((0, 0, Vec::new()), |(ok, all, mut refused), x| {
        let decided = x.status == 201 || (x.status == 409 && x.code == "already_issued");
        if !decided {
            refused.push((x.status, x.code.clone()));
        }
        (ok + u32::from(decided), all + 1, refused)
    });
    assert!(all > 20, "traffic after healing: {all}");
    assert!(
        ok * 10 >= all * 9,
        "issuing works again: {ok} of {all} decided; the others: {refused:?}"
    );

    // Rule 1, in PostgreSQL.
    for (coupon, quantity) in [(small, SMALL), (large, LARGE)] {
        let issued =
            a.db.scalar(&format!(
                "SELECT COUNT(*) AS n FROM user_coupons WHERE coupon_id = {coupon}"
            ))
            .await;
        let users =
            a.db.scalar(&format!(
                "SELECT COUNT(DISTINCT user_id) AS n FROM user_coupons WHERE coupon_id = {coupon}"
            ))
            .await;
        assert!(issued <= quantity, "coupon {coupon}: {issued} > {quantity}");
        assert_eq!(issued, users, "one per user");
        let told = answers
            .iter()
            .filter(|x| x.coupon == coupon && x.status == 201)
            .count();
        assert!(
            i64::try_from(told).unwrap() <= issued,
            "every 201 is in PostgreSQL: {told} told, {issued} issued"
        );
    }
    let sold_small =
        a.db.scalar(&format!(
            "SELECT COUNT(*) AS n FROM user_coupons WHERE coupon_id = {small}"
        ))
        .await;
    assert_eq!(sold_small, SMALL, "the small coupon sold out");
}
