//! Cost of the breaker on the hot path: a Redis GET through the `redis`
//! breaker (admission, timeout, outcome recording) against a bare GET on the
//! same ConnectionManager, plus the breaker alone around a ready future.
//! Needs Redis at 127.0.0.1:6379.
//!
//! Two runtimes: current-thread, as in an actix-web worker, and a
//! multi-thread runtime driven from outside its workers, where the call's
//! timer has to wake the driver thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use commerce_resilience::{AlertSink, Breaker, BreakerConfig, RedisClient, RedisConfig};
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;

fn client(rt: &Runtime, prefix: &str) -> RedisClient {
    rt.block_on(async {
        let breaker = Breaker::new(
            "redis",
            BreakerConfig::for_dependency("redis"),
            AlertSink::log_only(),
        );
        let cfg = RedisConfig::with_url("redis://127.0.0.1:6379").key_prefix(prefix);
        let client = RedisClient::new(&cfg, breaker).unwrap();
        client
            .set_ex(&client.key("k"), "value", Duration::from_secs(300))
            .await
            .unwrap();
        client
    })
}

fn bench_runtime(c: &mut Criterion, label: &str, rt: &Runtime) {
    let prefix = format!("res_bench:{}:{label}:", std::process::id());
    let redis = client(rt, &prefix);
    let key = redis.key("k");

    let mut group = c.benchmark_group(format!("redis_get/{label}"));
    group.bench_function("bare", |b| {
        b.to_async(rt).iter(|| {
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
    group.bench_function("bare_with_timeout", |b| {
        b.to_async(rt).iter(|| {
            let mut conn = redis.connection();
            let key = key.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_millis(500),
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<String>>(&mut conn),
                )
                .await
                .unwrap()
                .unwrap()
            }
        })
    });
    group.bench_function("through_breaker", |b| {
        b.to_async(rt).iter(|| {
            let redis = redis.clone();
            let key = key.clone();
            async move { redis.get::<String>(&key).await.unwrap() }
        })
    });
    group.finish();

    // The breaker's own cost, without I/O: admission, timer, recording.
    let breaker = redis.breaker().clone();
    let mut group = c.benchmark_group(format!("noop/{label}"));
    group.bench_function("bare", |b| {
        b.to_async(rt)
            .iter(|| async { Ok::<u32, std::io::Error>(1) })
    });
    group.bench_function("through_breaker", |b| {
        b.to_async(rt).iter(|| {
            let breaker = breaker.clone();
            async move {
                breaker
                    .call(None, async { Ok::<u32, std::io::Error>(1) })
                    .await
            }
        })
    });
    group.finish();
    rt.block_on(async {
        let _ = redis.del(&[&key]).await;
    });
}

fn bench(c: &mut Criterion) {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    bench_runtime(c, "current_thread", &current);
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    bench_runtime(c, "multi_thread", &multi);
}

criterion_group!(benches, bench);
criterion_main!(benches);
