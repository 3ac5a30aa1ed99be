//! Distributed locks against real Redis and PostgreSQL: mutual exclusion
//! across two independent clients, the advisory-lock fallback while Redis is
//! cut, and fencing tokens rejecting a holder whose lease expired.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use commerce_resilience::{BreakerState, LockBackend, LockConfig, LockError, LockManager};
use commerce_storage::DbPool;
use common::chaos::ChaosProxy;
use common::{
    breaker_config, cleanup_redis, client, redis_upstream, unique_prefix, wait_for_raw_connection,
    TestDb,
};
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lock_fencing (name text PRIMARY KEY, token bigint NOT NULL);
CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO counter VALUES (1, 0);
CREATE TABLE fenced (id int PRIMARY KEY, last_token bigint NOT NULL, value text NOT NULL);
INSERT INTO fenced VALUES (1, 0, 'initial');
";

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The racy read-modify-write a lock must protect: read, yield, write back.
async fn unsafe_increment(pool: &DbPool) {
    let mut conn = pool.get().await.unwrap();
    let row: N = diesel::sql_query("SELECT n FROM counter WHERE id = 1")
        .get_result(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    diesel::sql_query("UPDATE counter SET n = $1 WHERE id = 1")
        .bind::<BigInt, _>(row.n + 1)
        .execute(&mut conn)
        .await
        .unwrap();
}

/// A write that storage accepts only from the newest holder.
async fn fenced_write(pool: &DbPool, token: i64, value: &str) -> usize {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(
        "UPDATE fenced SET last_token = $1, value = $2 WHERE id = 1 AND last_token < $1",
    )
    .bind::<BigInt, _>(token)
    .bind::<diesel::sql_types::Text, _>(value)
    .execute(&mut conn)
    .await
    .unwrap()
}

struct Setup {
    db: TestDb,
    prefix: String,
    proxy: ChaosProxy,
    /// Two lock clients, each with its own Redis connection, breaker and pool.
    managers: [LockManager; 2],
    work: DbPool,
}

async fn setup() -> Setup {
    let db = TestDb::create().await;
    db.batch(SCHEMA).await;
    let prefix = unique_prefix();
    let proxy = ChaosProxy::start(redis_upstream()).await.unwrap();
    let make = || {
        let redis = client(
            proxy.addr(),
            &prefix,
            breaker_config(3, Duration::from_secs(30), 1, Duration::from_millis(300)),
        );
        LockManager::new(redis, db.pool(8), LockConfig::default())
    };
    let managers = [make(), make()];
    managers[0].ensure_schema().await.unwrap();
    let work = db.pool(8);
    Setup {
        db,
        prefix,
        proxy,
        managers,
        work,
    }
}

impl Setup {
    async fn counter(&self) -> i64 {
        self.db
            .scalar("SELECT n AS v FROM counter WHERE id = 1")
            .await
    }

    async fn finish(self) {
        cleanup_redis(&self.prefix).await;
        drop(self.managers);
        drop(self.work);
        self.db.drop_db().await;
    }
}

/// 50 contenders, alternating between the two clients, each doing the racy
/// increment under the lock. Returns the backends and tokens in lock order.
async fn contend(s: &Setup, name: &str) -> Vec<(LockBackend, i64)> {
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let locks = s.managers[i % 2].clone();
            let work = s.work.clone();
            let order = order.clone();
            let name = name.to_owned();
            tokio::spawn(async move {
                locks
                    .with_lock(
                        &name,
                        Duration::from_secs(5),
                        Duration::from_secs(30),
                        async |guard| {
                            order
                                .lock()
                                .unwrap()
                                .push((guard.backend(), guard.fencing_token()));
                            unsafe_increment(&work).await;
                        },
                    )
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let order = order.lock().unwrap().clone();
    order
}

fn assert_tokens_increase(order: &[(LockBackend, i64)]) {
    assert_eq!(order.len(), 50);
    for w in order.windows(2) {
        assert!(w[0].1 < w[1].1, "fencing tokens must increase: {:?}", w);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_contenders_on_two_clients_lose_no_update() {
    let s = setup().await;
    // Control: without the lock the same increments lose updates, so the
    // assertion below can fail.
    let racers: Vec<_> = (0..50)
        .map(|_| {
            let work = s.work.clone();
            tokio::spawn(async move { unsafe_increment(&work).await })
        })
        .collect();
    for r in racers {
        r.await.unwrap();
    }
    assert!(
        s.counter().await < 50,
        "the unlocked control run should lose updates"
    );
    s.db.batch("UPDATE counter SET n = 0").await;

    let order = contend(&s, "counter").await;
    assert_eq!(s.counter().await, 50);
    assert!(order.iter().all(|(b, _)| *b == LockBackend::Redis));
    assert_tokens_increase(&order);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_cut_the_advisory_lock_fallback_still_excludes() {
    let s = setup().await;
    s.proxy.cut();
    let order = contend(&s, "counter").await;
    assert_eq!(s.counter().await, 50);
    assert!(
        order.iter().all(|(b, _)| *b == LockBackend::Postgres),
        "{order:?}"
    );
    assert_tokens_increase(&order);
    for m in &s.managers {
        // The redis breakers opened: later attempts went straight to PostgreSQL.
        let snap = m.redis().breaker().snapshot();
        assert_eq!(snap.state, BreakerState::Open);
        assert!(snap.failures >= 3);
        assert!(snap.rejected > 0);
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_with_expired_lease_is_fenced_off() {
    let s = setup().await;
    let [a_locks, b_locks] = &s.managers;
    let a = a_locks
        .acquire("job", Duration::from_millis(200), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(a.backend(), LockBackend::Redis);
    // B cannot take it while A's lease runs.
    assert!(matches!(
        b_locks
            .acquire("job", Duration::from_secs(5), Duration::from_millis(50))
            .await,
        Err(LockError::Busy { .. })
    ));
    // A stalls (a GC pause, a slow call) past its lease.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = b_locks
        .acquire("job", Duration::from_secs(5), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(b.fencing_token() > a.fencing_token());
    assert_eq!(fenced_write(&s.work, b.fencing_token(), "B").await, 1);
    // A wakes up and writes: storage rejects the stale token.
    assert_eq!(fenced_write(&s.work, a.fencing_token(), "A").await, 0);
    assert!(matches!(
        a.extend(Duration::from_secs(5)).await,
        Err(LockError::Lost { .. })
    ));
    assert!(matches!(a.release().await, Err(LockError::Lost { .. })));
    // A's failed release did not free B's lock.
    assert!(a_locks
        .try_acquire("job", Duration::from_secs(1))
        .await
        .unwrap()
        .is_none());
    let b_token = b.fencing_token();
    b.release().await.unwrap();
    assert_eq!(
        s.db.scalar("SELECT last_token AS v FROM fenced").await,
        b_token
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_keeps_a_long_holder() {
    let s = setup().await;
    let [a_locks, b_locks] = &s.managers;
    let a = a_locks
        .acquire("long", Duration::from_millis(600), Duration::from_secs(1))
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.extend(Duration::from_millis(600)).await.unwrap();
    }
    assert!(b_locks
        .try_acquire("long", Duration::from_secs(1))
        .await
        .unwrap()
        .is_none());
    a.release().await.unwrap();
    assert!(b_locks
        .try_acquire("long", Duration::from_secs(1))
        .await
        .unwrap()
        .is_some());
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_expires_and_is_fenced_off() {
    let s = setup().await;
    s.proxy.cut();
    let [a_locks, b_locks] = &s.managers;
    let a = a_locks
        .acquire("pg", Duration::from_millis(500), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(a.backend(), LockBackend::Postgres);
    assert!(b_locks
        .try_acquire("pg", Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    // Extending keeps it past the first lease.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.extend(Duration::from_millis(500)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b_locks
        .try_acquire("pg", Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    // Then A goes quiet: PostgreSQL ends its session and the lock with it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let b = b_locks
        .acquire("pg", Duration::from_secs(5), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(b.backend(), LockBackend::Postgres);
    assert!(b.fencing_token() > a.fencing_token());
    assert_eq!(fenced_write(&s.work, b.fencing_token(), "B").await, 1);
    assert_eq!(fenced_write(&s.work, a.fencing_token(), "A").await, 0);
    assert!(matches!(a.release().await, Err(LockError::Lost { .. })));
    b.release().await.unwrap();
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_guards_release_on_both_backends() {
    let s = setup().await;
    let [a_locks, b_locks] = &s.managers;
    for cut in [false, true] {
        if cut {
            s.proxy.cut();
        }
        let guard = a_locks
            .acquire("drop", Duration::from_secs(30), Duration::from_secs(5))
            .await
            .unwrap();
        let backend = guard.backend();
        assert_eq!(
            backend,
            if cut {
                LockBackend::Postgres
            } else {
                LockBackend::Redis
            }
        );
        // A holder whose task is cancelled mid-work.
        let held = tokio::spawn(async move {
            let _g = guard;
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        held.abort();
        let started = Instant::now();
        let again = b_locks
            .acquire("drop", Duration::from_secs(5), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{backend:?} lock not freed on drop"
        );
        again.release().await.unwrap();
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_keep_increasing_across_backend_switches() {
    let s = setup().await;
    let locks = &s.managers[0];
    let take = |expect: LockBackend| async move {
        let g = locks
            .acquire("switch", Duration::from_secs(5), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(g.backend(), expect);
        let t = g.fencing_token();
        g.release().await.unwrap();
        t
    };
    let t1 = take(LockBackend::Redis).await;
    let t2 = take(LockBackend::Redis).await;
    s.proxy.cut();
    let t3 = take(LockBackend::Postgres).await;
    let t4 = take(LockBackend::Postgres).await;
    s.proxy.restore();
    // Bring the redis path back: reconnect, then an operator resets the breaker.
    wait_for_raw_connection(locks.redis()).await;
    locks.redis().breaker().reset();
    let deadline = Instant::now() + Duration::from_secs(10);
    let t5 = loop {
        let g = locks
            .acquire("switch", Duration::from_secs(5), Duration::from_secs(5))
            .await
            .unwrap();
        let (b, t) = (g.backend(), g.fencing_token());
        g.release().await.unwrap();
        if b == LockBackend::Redis {
            break t;
        }
        assert!(Instant::now() < deadline, "redis path never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        t1 < t2 && t2 < t3 && t3 < t4 && t4 < t5,
        "{t1} {t2} {t3} {t4} {t5}"
    );
    s.finish().await;
}
