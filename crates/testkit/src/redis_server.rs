//! A disposable `redis-server` for tests that kill, restart or flush Redis:
//! a child process on a free loopback port with no persistence, so a restart
//! comes back empty, and the machine's shared Redis is never touched.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

/// `REDIS_SERVER_BIN`, else `redis-server` on PATH.
fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl RedisServer {
    /// Starts on a free port and waits until it answers PING.
    pub fn start() -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
        };
        s.spawn();
        s.wait_ready(Duration::from_secs(10));
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) {
        let child = Command::new(redis_server_bin())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .args(["--dbfilename", &format!("disposable-{}.rdb", self.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (is it installed?)");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would: no shutdown, connections reset.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port, empty (nothing was persisted).
    /// Returns once it accepts connections and answers PING.
    pub fn restart(&mut self) -> Instant {
        self.kill();
        self.spawn();
        self.wait_ready(Duration::from_secs(10))
    }

    /// Waits until PING answers PONG; returns when it did.
    pub fn wait_ready(&self, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if ping(self.addr()) {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A raw RESP PING, so readiness does not depend on any client library.
fn ping(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
