//! The real `commerce-server` binary as a child process, for the tests that
//! must kill or signal it (the in-process `TestApp` cannot be SIGKILLed).
#![allow(dead_code)]

use commerce_testkit::broker::Broker;
use commerce_testkit::TestDb;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ServerProcess {
    pub name: &'static str,
    pub child: Child,
    pub log: std::path::PathBuf,
    pub port: u16,
}

impl ServerProcess {
    /// Starts one instance in Kafka mode on a free port, against `db` and
    /// `broker`, topics and groups under `prefix`, with `extra` settings
    /// (`COMMERCE__…` pairs) on top. Its output goes to a log file, printed
    /// if the test fails.
    pub fn start(
        name: &'static str,
        db: &TestDb,
        broker: &Broker,
        prefix: &str,
        extra: &[(&str, String)],
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let log = std::env::temp_dir().join(format!("commerce-{name}-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_commerce-server"));
        command
            .env("COMMERCE__HTTP__ADDR", format!("127.0.0.1:{port}"))
            .env("COMMERCE__HTTP__WORKERS", "2")
            .env("COMMERCE__DATABASE__URL", &db.url)
            .env("COMMERCE__DATABASE__POOL_SIZE", "8")
            .env("COMMERCE__REDIS__KEY_PREFIX", format!("test:{prefix}"))
            .env("COMMERCE__KAFKA__BROKERS", broker.address())
            .env("COMMERCE__KAFKA__TOPIC_PREFIX", prefix)
            .env("COMMERCE__KAFKA__GROUP_PREFIX", prefix)
            .env("COMMERCE__AUTH__ADMIN_KEY", commerce_testkit::ADMIN_KEY)
            .env(
                "COMMERCE__AUTH__TOKEN_SECRET",
                commerce_testkit::TOKEN_SECRET,
            )
            .env("COMMERCE__LOG__LEVEL", "info");
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start commerce-server");
        Self {
            name,
            child,
            log,
            port,
        }
    }

    /// Waits (at most a minute) for `/health/live`; fails if it exits.
    pub async fn wait_live(&mut self, client: &reqwest::Client) {
        let url = format!("http://127.0.0.1:{}/health/live", self.port);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(client.get(&url).send().await, Ok(r) if r.status() == 200) {
            assert!(Instant::now() < deadline, "{} did not start", self.name);
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "{} exited at start",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("{}'s last log lines:", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
        }
    }
}
