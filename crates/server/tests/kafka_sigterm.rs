//! SIGTERM stops the real `commerce-server` process within its configured
//! shutdown timeout while the broker is stalled (SIGSTOP: connections
//! open, nothing answered), with events in flight (issue 25). Prints the
//! time from SIGTERM to exit: `cargo nextest run -p commerce-server --test
//! kafka_sigterm --no-capture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_testkit::broker::Broker;
use commerce_testkit::TestDb;
use diesel_async::RunQueryDsl;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("commerce-server's last log lines:");
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
        }
    }
}

async fn insert_events(db: &TestDb, n: i64) {
    let mut c = db.conn().await;
    diesel::sql_query(format!(
        "INSERT INTO outbox (id, event_type, aggregate_key, payload) \
         SELECT gen_random_uuid(), 'order_paid', g::text, jsonb_build_object('order_id', g, 'user_id', 1, 'amount', 10, \
           'paid_at', now(), 'items', jsonb_build_array()) \
         FROM generate_series(1, {n}) g"
    ))
    .execute(&mut c)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sigterm_with_the_broker_stalled_exits_within_the_shutdown_timeout() {
    sigterm_with_the_broker_stalled(5).await;
}

/// A shutdown timeout shorter than the producer's flush bound still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sigterm_with_the_broker_stalled_and_a_one_second_timeout() {
    sigterm_with_the_broker_stalled(1).await;
}

/// Starts the binary with `http.shutdown_timeout_secs = shutdown_secs`,
/// stalls the broker with events in flight, sends SIGTERM and checks the
/// process is gone within the timeout (plus process teardown).
async fn sigterm_with_the_broker_stalled(shutdown_secs: u64) {
    let broker = Broker::start();
    let db = TestDb::create().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
    let log = std::env::temp_dir().join(format!("commerce-sigterm-{}.log", port));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_commerce-server"))
        .env("COMMERCE__HTTP__ADDR", format!("127.0.0.1:{port}"))
        .env("COMMERCE__HTTP__WORKERS", "2")
        .env(
            "COMMERCE__HTTP__SHUTDOWN_TIMEOUT_SECS",
            shutdown_secs.to_string(),
        )
        .env("COMMERCE__DATABASE__URL", &db.url)
        .env("COMMERCE__DATABASE__POOL_SIZE", "8")
        .env("COMMERCE__REDIS__KEY_PREFIX", format!("test:{prefix}"))
        .env("COMMERCE__KAFKA__BROKERS", broker.address())
        .env("COMMERCE__KAFKA__TOPIC_PREFIX", &prefix)
        .env("COMMERCE__KAFKA__GROUP_PREFIX", &prefix)
        // Long enough that a publish to the stalled broker is still in
        // flight when SIGTERM comes.
        .env("COMMERCE__KAFKA__DELIVERY_TIMEOUT_MS", "30000")
        .env("COMMERCE__AUTH__ADMIN_KEY", "test-admin-key")
        .env("COMMERCE__AUTH__TOKEN_SECRET", "test-token-secret")
        .env("COMMERCE__LOG__LEVEL", "info")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start commerce-server");
    let mut server = Server { child, log };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/health/live");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(client.get(&url).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "server did not start");
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "server exited at start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Events flow through the broker first (topics made, producer and
    // consumers connected).
    insert_events(&db, 50).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while db
        .scalar("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NOT NULL")
        .await
        < 50
    {
        assert!(
            Instant::now() < deadline,
            "events were not published before the stall"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.stall();
    insert_events(&db, 200).await;
    // The relay claims them and waits on the broker's answer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let in_flight = db
        .scalar("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL AND claimed_until IS NOT NULL")
        .await;
    let pid = server.child.id();
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = signalled + Duration::from_secs(shutdown_secs * 4 + 5);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running {:?} after SIGTERM with the broker stalled",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    eprintln!(
        "FIGURE sigterm with the broker stalled: exited ({exit}) {} ms after SIGTERM \
         (shutdown timeout {shutdown_secs} s; {in_flight} events claimed and in flight)",
        took.as_millis()
    );
    assert!(
        took <= Duration::from_secs(shutdown_secs) + Duration::from_millis(1500),
        "exit took {took:?}, over the {shutdown_secs} s shutdown timeout"
    );
    // What the stalled broker never acknowledged is still in the outbox.
    assert!(
        db.scalar("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
            .await
            > 0
    );
    broker.thaw();
    drop(server);
    drop(broker);
}
