//! Local HTTP receivers of a chaos run: the alert webhook (records every
//! breaker alert the instances post, in order) and a stand-in for the data
//! platform (answers 200, or is down, or slow, as the fault asks). A small
//! HTTP/1.1 server on tokio alone: it reads one request at a time per
//! connection (keep-alive), records it and answers.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 at once.
    Ok = 0,
    /// Not listening: connections are refused.
    Down = 1,
    /// Answers after `slow` (longer than the service's HTTP timeout).
    Slow = 2,
}

/// One request received: when (since the run's clock started) and its body.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Duration,
    pub path: String,
    pub body: String,
}

struct Shared {
    started: Instant,
    mode: AtomicU8,
    slow_ms: AtomicU64,
    received: Mutex<Vec<Received>>,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Receiver {
    pub async fn start(started: Instant) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a local receiver")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            started,
            mode: AtomicU8::new(Mode::Ok as u8),
            slow_ms: AtomicU64::new(0),
            received: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            port,
            shared,
            accept: Mutex::new(Some(accept)),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Down closes the listening socket (connections refused); Ok or Slow
    /// opens it again on the same port.
    pub async fn set_mode(&self, mode: Mode, slow: Duration) -> Result<()> {
        self.shared
            .slow_ms
            .store(slow.as_millis() as u64, Ordering::SeqCst);
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        let running = self.accept.lock().map(|mut a| a.take()).ok().flatten();
        if let Some(task) = running {
            task.abort();
            let _ = task.await;
        }
        if mode != Mode::Down {
            let mut tries = 0;
            let listener = loop {
                match TcpListener::bind(("127.0.0.1", self.port)).await {
                    Ok(l) => break l,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e).context("listening again on the receiver's port"),
                }
            };
            let task = tokio::spawn(accept_loop(listener, self.shared.clone()));
            if let Ok(mut a) = self.accept.lock() {
                *a = Some(task);
            }
        }
        Ok(())
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Ok(mut a) = self.accept.lock() {
            if let Some(t) = a.take() {
                t.abort();
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connections live in a set owned by this task: aborting it (Down)
    // drops them all, as a crashed peer would.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve(stream, shared.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // Request line: `POST /path HTTP/1.1`.
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        // Headers.
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length.min(1 << 20)];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let at = shared.started.elapsed();
        if let Ok(mut r) = shared.received.lock() {
            r.push(Received {
                at,
                path,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        if shared.mode.load(Ordering::SeqCst) == Mode::Slow as u8 {
            let ms = shared.slow_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}
