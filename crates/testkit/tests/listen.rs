//! The listening socket holds a sale's opening: its accept queue is the
//! configured backlog, not std's 128. With 128, the connections beyond it
//! in the first second (a balancer opening its pool, or clients arriving
//! directly) lose their handshake and wait out a 1 s SYN retransmit: the
//! first flash-sale burst after a start took over a second at p95 here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_testkit::TestApp;

/// The listener's accept-queue bound as the kernel reports it (`ss`
/// prints it as Send-Q for a listening socket).
fn backlog_of(port: u16) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) lists listening sockets");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}: {text:?}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_queues_a_sale_opening_not_128_connections() {
    let app = TestApp::spawn().await;
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(4096);
    let expected = commerce_server::app::LISTEN_BACKLOG.min(somaxconn);
    assert_eq!(backlog_of(app.port), expected);
    assert!(expected > 128, "net.core.somaxconn is {somaxconn}");
}
