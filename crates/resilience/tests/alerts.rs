//! Breaker alerts reach a Slack-compatible webhook from a background task.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use commerce_resilience::{AlertSink, Breaker, BreakerConfig, BreakerState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A webhook that answers after `delay` and hands each JSON body to the test.
async fn fake_webhook(delay: Duration) -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(split) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text[..split]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    let body = &buf[split + 4..];
                    if body.len() < len {
                        continue;
                    }
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(serde_json::from_slice(&body[..len]).unwrap());
                    let _ = sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    buf.clear();
                }
            });
        }
    });
    (url, rx)
}

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 2,
        open_for: Duration::from_millis(50),
        max_open_for: Duration::from_millis(50),
        half_open_max_probes: 1,
        call_timeout: Duration::from_millis(100),
    }
}

async fn fail(b: &Breaker) {
    let _ = b
        .call(None, async { Err::<(), _>(std::io::Error::other("down")) })
        .await;
}

#[tokio::test]
async fn webhook_gets_open_and_close_without_slowing_calls() {
    // The webhook takes 300 ms to answer; calls must not wait for it.
    let (url, mut bodies) = fake_webhook(Duration::from_millis(300)).await;
    let b = Breaker::new(
        "notification",
        config(),
        AlertSink::webhook(url, Duration::from_secs(2)),
    );
    let started = Instant::now();
    fail(&b).await;
    fail(&b).await;
    assert_eq!(b.state(), BreakerState::Open);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "alert sent on the request path"
    );

    let opened = tokio::time::timeout(Duration::from_secs(5), bodies.recv())
        .await
        .unwrap()
        .unwrap();
    let text = opened["text"].as_str().unwrap();
    assert!(text.contains("`notification` opened"), "{text}");
    assert_eq!(
        opened.as_object().unwrap().len(),
        1,
        "Slack body is just {{text}}"
    );

    tokio::time::sleep(Duration::from_millis(80)).await;
    b.call(None, async { Ok::<(), std::io::Error>(()) })
        .await
        .unwrap();
    assert_eq!(b.state(), BreakerState::Closed);
    let closed = tokio::time::timeout(Duration::from_secs(5), bodies.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(closed["text"]
        .as_str()
        .unwrap()
        .contains("`notification` closed"));
}

#[tokio::test]
async fn unreachable_webhook_never_blocks_and_no_url_only_logs() {
    // Nothing listens here: posts fail in the background, calls stay fast.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sink = AlertSink::webhook(format!("http://{dead}/hook"), Duration::from_millis(200));
    assert!(sink.is_webhook());
    let b = Breaker::new("kafka", config(), sink);
    let started = Instant::now();
    for _ in 0..200 {
        b.force_open();
        b.force_close();
    }
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(!AlertSink::from_url(None).is_webhook());
    assert!(!AlertSink::from_url(Some("  ")).is_webhook());
}
