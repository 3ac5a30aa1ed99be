//! Cost of the breaker on the hot path: a Redis GET through the `redis`
//! breaker (admission, timeout, outcome recording) against a bare GET on the
//! same ConnectionManager. Needs Redis at 127.0.0.1:6379.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use commerce_resilience::{AlertSink, Breaker, BreakerConfig, RedisClient, RedisConfig};
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let prefix = format!("res_bench:{}:", std::process::id());
    let redis = rt.block_on(async {
        let breaker = Breaker::new(
            "redis",
            BreakerConfig::for_dependency("redis"),
            AlertSink::log_only(),
        );
        let client = RedisClient::new(
            &RedisConfig::with_url("redis://127.0.0.1:6379").key_prefix(&prefix),
            breaker,
        )
        .unwrap();
        let key = client.key("k");
        client
            .set_ex(&key, "value", Duration::from_secs(300))
            .await
            .unwrap();
        client
    });
    let key = redis.key("k");

    let mut group = c.benchmark_group("redis_get");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = redis.connection();
            let key = key.clone();
            async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut conn)
                    .await
                    .unwrap()
            }
        })
    });
    group.bench_function("through_breaker", |b| {
        b.to_async(&rt).iter(|| {
            let redis = redis.clone();
            let key = key.clone();
            async move { redis.get::<String>(&key).await.unwrap() }
        })
    });
    group.finish();
    rt.block_on(async {
        let _ = redis.del(&[&key]).await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
