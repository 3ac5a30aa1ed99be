//! The `redis` breaker against a real Redis with faults injected by the
//! chaos proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use commerce_resilience::{BreakerState, CallError, Fallback, RedisClient};
use common::chaos::ChaosProxy;
use common::{
    breaker_config, cleanup_redis, client, redis_upstream, unique_prefix, wait_for_raw_connection,
};

async fn incr(client: &RedisClient, key: &str) -> Result<i64, CallError<redis::RedisError>> {
    let key = key.to_owned();
    client
        .run(|mut c| async move { redis::cmd("INCR").arg(key).query_async::<i64>(&mut c).await })
        .await
}

/// Reads a key straight from Redis, bypassing proxy and breaker.
async fn direct_get(key: &str) -> Option<i64> {
    let c = redis::Client::open(format!("redis://{}", common::REDIS_ADDR)).unwrap();
    let mut c = c.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_opens_after_threshold_then_fails_fast_with_fallback() {
    let proxy = ChaosProxy::start(redis_upstream()).await.unwrap();
    let prefix = unique_prefix();
    let cfg = breaker_config(4, Duration::from_secs(30), 1, Duration::from_millis(300));
    let redis = client(proxy.addr(), &prefix, cfg);
    redis
        .set_ex(&redis.key("k"), 7, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(redis.get::<i64>(&redis.key("k")).await.unwrap(), Some(7));

    proxy.cut();
    // Each failure is fast (connection reset), and exactly the threshold opens it.
    for i in 1..=4 {
        let started = Instant::now();
        let r = redis.get::<i64>(&redis.key("k")).await;
        assert!(
            matches!(r, Err(CallError::Inner(_)) | Err(CallError::Timeout { .. })),
            "{r:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(400));
        let expected = if i < 4 {
            BreakerState::Closed
        } else {
            BreakerState::Open
        };
        assert_eq!(redis.breaker().state(), expected, "after {i} failures");
    }

    // While open: 1000 calls, each answered by the fallback; count the slow ones.
    let mut slow = 0;
    let mut fallbacks = 0;
    for _ in 0..1000 {
        let started = Instant::now();
        let key = redis.key("k");
        let v = redis
            .breaker()
            .call_or(
                None,
                async {
                    let mut c = redis.connection();
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<i64>>(&mut c)
                        .await
                },
                |e| {
                    assert!(e.is_rejected());
                    fallbacks += 1;
                    Some(-1)
                },
            )
            .await;
        assert_eq!(v, Some(-1));
        if started.elapsed() > Duration::from_millis(10) {
            slow += 1;
        }
    }
    assert_eq!(fallbacks, 1000);
    assert!(
        slow <= 10,
        "p99 over 10 ms: {slow} of 1000 calls were slower"
    );
    let snap = redis.breaker().snapshot();
    assert_eq!(snap.failures, 4);
    assert_eq!(snap.rejected, 1000);
    let err = redis.ping().await.unwrap_err();
    assert!(
        err.retry_after_secs() >= 20,
        "retry-after follows open_until: {}",
        err.retry_after_secs()
    );
    cleanup_redis(&prefix).await;
}

/// After a cut and restore, the half-open breaker lets exactly `probes`
/// concurrent calls reach Redis and closes once they succeed.
async fn half_open_admits(probes: usize) {
    let proxy = ChaosProxy::start(redis_upstream()).await.unwrap();
    let prefix = unique_prefix();
    let open_for = Duration::from_millis(300);
    let redis = client(
        proxy.addr(),
        &prefix,
        breaker_config(2, open_for, probes, Duration::from_millis(1000)),
    );
    redis.ping().await.unwrap();
    proxy.cut();
    // Opened through the breaker alone: a failed RedisClient call would
    // start the recovery watch, which closes the breaker as soon as Redis
    // answers, before any probe (see `restored_redis_closes_...` below).
    while redis.breaker().state() != BreakerState::Open {
        let down = async { Err::<(), _>(std::io::Error::other("cut")) };
        redis.breaker().call(None, down).await.unwrap_err();
    }
    proxy.restore();
    wait_for_raw_connection(&redis).await;
    tokio::time::sleep(open_for + Duration::from_millis(50)).await;
    assert_eq!(redis.breaker().state(), BreakerState::Open);

    let key = redis.key("reached");
    let barrier = Arc::new(tokio::sync::Barrier::new(40));
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let redis = redis.clone();
            let key = key.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                redis
                    .run(|mut c| async move {
                        let n: i64 = redis::cmd("INCR").arg(&key).query_async(&mut c).await?;
                        // Keep the probe in flight while the others arrive.
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        Ok(n)
                    })
                    .await
            })
        })
        .collect();
    let mut admitted = 0;
    let mut rejected = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(CallError::Rejected { .. }) => rejected += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(admitted, probes);
    assert_eq!(rejected, 40 - probes);
    assert_eq!(
        direct_get(&key).await,
        Some(probes as i64),
        "calls that reached Redis"
    );
    assert_eq!(redis.breaker().state(), BreakerState::Closed);
    assert_eq!(incr(&redis, &key).await.unwrap(), probes as i64 + 1);
    cleanup_redis(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_restore_half_open_admits_one_probe() {
    half_open_admits(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_restore_half_open_admits_three_probes() {
    half_open_admits(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_on_its_own_after_restore() {
    let proxy = ChaosProxy::start(redis_upstream()).await.unwrap();
    let prefix = unique_prefix();
    let redis = client(
        proxy.addr(),
        &prefix,
        breaker_config(3, Duration::from_millis(200), 1, Duration::from_millis(300)),
    );
    redis.ping().await.unwrap();
    proxy.cut();
    while redis.breaker().state() != BreakerState::Open {
        let _ = redis.ping().await;
    }
    proxy.restore();
    // Plain traffic, no help from the test: the breaker must close by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "breaker never closed: {:?}",
            redis.breaker().snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(redis.breaker().state(), BreakerState::Closed);
    cleanup_redis(&prefix).await;
}

/// A long open period (the backoff doubled during a long outage) does not
/// delay healing: the recovery watch closes the breaker within a few pings
/// of Redis answering again, with no call from the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_redis_closes_the_breaker_within_a_second_whatever_the_open_period() {
    let proxy = ChaosProxy::start(redis_upstream()).await.unwrap();
    let prefix = unique_prefix();
    let redis = client(
        proxy.addr(),
        &prefix,
        breaker_config(2, Duration::from_secs(60), 1, Duration::from_millis(300)),
    );
    redis.ping().await.unwrap();
    proxy.cut();
    while redis.breaker().state() != BreakerState::Open {
        let _ = redis.ping().await;
    }
    // Still open while Redis is away: the watch's pings fail.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(redis.breaker().state(), BreakerState::Open);
    proxy.restore();
    let restored = Instant::now();
    while redis.breaker().state() != BreakerState::Closed {
        assert!(
            restored.elapsed() < Duration::from_secs(1),
            "not closed 1 s after restore: {:?}",
            redis.breaker().snapshot()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the first call after it goes through a connection made since.
    assert_eq!(incr(&redis, &redis.key("after")).await.unwrap(), 1);
    cleanup_redis(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_times_out_counts_failures_and_opens() {
    let proxy = ChaosProxy::start(redis_upstream()).await.unwrap();
    let prefix = unique_prefix();
    let redis = client(
        proxy.addr(),
        &prefix,
        breaker_config(3, Duration::from_secs(30), 1, Duration::from_millis(100)),
    );
    redis.ping().await.unwrap();
    proxy.delay(Duration::from_millis(300));
    for _ in 0..3 {
        let started = Instant::now();
        let r = redis.get::<String>(&redis.key("x")).await;
        assert!(matches!(r, Err(CallError::Timeout { .. })), "{r:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(500),
            "{took:?}"
        );
    }
    let snap = redis.breaker().snapshot();
    assert_eq!(snap.state, BreakerState::Open);
    assert_eq!((snap.failures, snap.successes), (3, 1));
    let started = Instant::now();
    assert!(redis.ping().await.unwrap_err().is_rejected());
    assert!(started.elapsed() < Duration::from_millis(10));
    cleanup_redis(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_open_runs_fallback_force_close_and_reset_restore_calls() {
    let proxy = ChaosProxy::start(redis_upstream()).await.unwrap();
    let prefix = unique_prefix();
    let redis = client(
        proxy.addr(),
        &prefix,
        breaker_config(3, Duration::from_secs(30), 1, Duration::from_millis(200)),
    );
    let key = redis.key("n");
    assert_eq!(incr(&redis, &key).await.unwrap(), 1);

    // Forced open: the fallback answers and Redis is not touched.
    redis.breaker().force_open();
    for _ in 0..5 {
        let v = incr(&redis, &key).or_fallback(|e| {
            assert!(e.is_rejected());
            -1
        });
        assert_eq!(v.await, -1);
    }
    assert_eq!(direct_get(&key).await, Some(1));
    let snap = redis.breaker().snapshot();
    assert_eq!((snap.state, snap.open_until), (BreakerState::Open, None));

    // Reset: normal calls again.
    redis.breaker().reset();
    assert_eq!(incr(&redis, &key).await.unwrap(), 2);

    // Forced closed: every call goes to Redis even while it fails.
    redis.breaker().force_close();
    proxy.cut();
    for _ in 0..8 {
        let r = redis.ping().await;
        assert!(
            matches!(r, Err(CallError::Inner(_)) | Err(CallError::Timeout { .. })),
            "{r:?}"
        );
    }
    assert_eq!(redis.breaker().state(), BreakerState::Closed);

    // Reset: the breaker trips normally again.
    redis.breaker().reset();
    for _ in 0..3 {
        let _ = redis.ping().await;
    }
    assert_eq!(redis.breaker().state(), BreakerState::Open);
    proxy.restore();
    wait_for_raw_connection(&redis).await;
    redis.breaker().reset();
    assert_eq!(incr(&redis, &key).await.unwrap(), 3);
    cleanup_redis(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_builds_while_redis_is_down_and_fails_fast() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let prefix = unique_prefix();
    let redis = client(
        dead,
        &prefix,
        breaker_config(5, Duration::from_secs(30), 1, Duration::from_millis(500)),
    );
    for _ in 0..5 {
        let started = Instant::now();
        assert!(matches!(redis.ping().await, Err(CallError::Inner(_))));
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(redis.breaker().state(), BreakerState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_errors_leave_the_breaker_closed() {
    let prefix = unique_prefix();
    let redis = client(
        redis_upstream(),
        &prefix,
        breaker_config(2, Duration::from_secs(30), 1, Duration::from_millis(500)),
    );
    let key = redis.key("list");
    redis
        .run({
            let key = key.clone();
            |mut c| async move {
                redis::cmd("LPUSH")
                    .arg(key)
                    .arg("x")
                    .query_async::<i64>(&mut c)
                    .await
            }
        })
        .await
        .unwrap();
    for _ in 0..5 {
        // WRONGTYPE: Redis answered, our request was wrong.
        let r = incr(&redis, &key).await;
        assert!(matches!(r, Err(CallError::Inner(_))));
        assert!(!r.unwrap_err().is_unavailable());
    }
    assert_eq!(redis.breaker().state(), BreakerState::Closed);
    assert_eq!(redis.del(&[&key]).await.unwrap(), 1);
    cleanup_redis(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_and_reset_mid_stream() {
    let proxy = ChaosProxy::start(redis_upstream()).await.unwrap();
    let prefix = unique_prefix();
    let redis = client(
        proxy.addr(),
        &prefix,
        breaker_config(5, Duration::from_secs(30), 1, Duration::from_millis(500)),
    );
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let key = redis.key("s");
    let v: i64 = redis.invoke_script(script.key(&key).arg(5)).await.unwrap();
    assert_eq!(v, 5);
    assert_eq!(proxy.connections(), 1);
    proxy.reset_mid_stream();
    // The next call may see the reset; the one after reconnects.
    let _ = redis.invoke_script::<i64>(script.key(&key).arg(1)).await;
    wait_for_raw_connection(&redis).await;
    let v: i64 = redis.invoke_script(script.key(&key).arg(1)).await.unwrap();
    assert!(v >= 6);
    assert_eq!(redis.breaker().state(), BreakerState::Closed);
    cleanup_redis(&prefix).await;
}
