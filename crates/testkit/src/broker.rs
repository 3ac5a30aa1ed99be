//! A real Kafka-compatible broker for tests: `tansu`, started as a child
//! process on a free loopback port with SQLite storage of its own; it can be
//! stopped and started again on the same port and storage.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// `TANSU_BIN`, else `tansu` on PATH, else `~/.cargo/bin/tansu`.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    if let Some(Some(p)) = on_path {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cargo/bin/tansu")
}

/// A prefix of a test's own for topics and consumer groups, so tests that
/// share a broker never read each other's events.
pub fn kafka_prefix() -> String {
    format!("t{}.", uuid::Uuid::new_v4().simple())
}

/// Points an instance at the broker at `address`, its topics and consumer
/// groups under `prefix` (the same for every instance of one test).
pub fn kafka_mode_with(s: &mut commerce_server::Settings, address: &str, prefix: &str) {
    s.kafka.brokers = Some(address.to_owned());
    s.kafka.topic_prefix = prefix.to_owned();
    s.kafka.group_prefix = prefix.to_owned();
}

impl Broker {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = std::env::temp_dir().join(format!("tansu-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.resume();
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and storage; waits until it listens.
    pub fn resume(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // The broker's own output, shown when a test fails (see Drop).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"));
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
            Err(_) => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(tansu_bin())
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start tansu (install it: cargo install tansu --no-default-features --features libsql)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is
    /// answered, as a broker stuck in a long pause.
    pub fn stall(&self) {
        self.signal("-STOP");
    }

    /// Thaws a stalled broker (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args([which, &pid.to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill {which} {pid} failed");
        }
    }

    /// Kills the broker (as a crash would).
    pub fn stop(&mut self) {
        // A stalled broker is thawed first, so it can be reaped.
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        self.stop();
        if std::thread::panicking() {
            // A failed test: say whether the broker itself died, and what it
            // printed last.
            let log = std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default();
            // The whole log outlives the broker's folder, for a post-mortem.
            let kept = std::env::temp_dir().join(format!("tansu-{}.log", self.port));
            if std::fs::write(&kept, &log).is_ok() {
                eprintln!("tansu's whole log: {}", kept.display());
            }
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "tansu on port {}: {}; last lines of its log:",
                self.port,
                match exited {
                    Some(status) => format!("had exited by itself ({status})"),
                    None => "still running".into(),
                }
            );
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
