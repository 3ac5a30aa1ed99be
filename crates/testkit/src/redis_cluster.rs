//! A disposable Redis Cluster for tests: three masters and three replicas,
//! each a `redis-server --cluster-enabled yes` child on free loopback ports
//! (client and bus port chosen apart, so no port above 55535 matters), made
//! a cluster by `redis-cli --cluster create`. Nothing is persisted but each
//! node's `nodes.conf`, so a killed node restarts as the member it was (an
//! empty one: after a failover it rejoins as a replica and resyncs).
//!
//! The node timeout is short (1 s) so a killed master's replica takes over
//! within a few seconds.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a master may be unreachable before its replica is elected.
pub const NODE_TIMEOUT_MS: u64 = 1000;

struct Node {
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Removed when the cluster drops.
    root: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

fn redis_cli_bin() -> String {
    std::env::var("REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".to_owned())
}

/// `redis-cli -p PORT args…`, its output (empty when it failed).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new(redis_cli_bin())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// Slot ranges served (masters only).
    pub slots: Vec<(u16, u16)>,
}

fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let addr = parts.get(1)?;
            let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = parts.get(2)?;
            let slots = parts
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|one| (one, one)),
                })
                .collect();
            Some(NodeInfo {
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                slots,
            })
        })
        .collect()
}

impl Node {
    fn spawn(&mut self) {
        let child = Command::new(redis_server_bin())
            .current_dir(&self.dir)
            .args(["--port", &self.port.to_string()])
            .args(["--cluster-port", &self.bus_port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // A replica may take over however stale it is: the test is
            // about the service surviving what a failover loses.
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (is it installed?)");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn answers(&self) -> bool {
        cli(self.port, &["PING"]).trim() == "PONG"
    }
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster (one replica per master) and
    /// waits until every slot is served and every replica is in sync.
    pub fn start() -> Self {
        let root =
            std::env::temp_dir().join(format!("redis-cluster-{}", uuid::Uuid::new_v4().simple()));
        // Twelve distinct ports (a port freed by one probe may be handed
        // out again by the next).
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 12 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut nodes: Vec<Node> = ports
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| {
                let dir = root.join(format!("node{i}"));
                std::fs::create_dir_all(&dir).expect("node dir");
                Node {
                    port: pair[0],
                    bus_port: pair[1],
                    dir,
                    child: None,
                }
            })
            .collect();
        for n in &mut nodes {
            n.spawn();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !nodes.iter().all(Node::answers) {
            assert!(Instant::now() < deadline, "cluster nodes did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new(redis_cli_bin())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, root };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// `host:port` of every node, for `COMMERCE__REDIS__CLUSTER_NODES`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `redis://` URL of one node (a plain client for inspection must follow
    /// MOVED itself; use [`RedisCluster::master_of`]).
    pub fn url(&self, port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some() && n.answers())
            .map(|n| n.port)
            .expect("a live node")
    }

    /// The cluster's view from a live node.
    pub fn topology(&self) -> Vec<NodeInfo> {
        parse_nodes(&cli(self.live_port(), &["CLUSTER", "NODES"]))
    }

    pub fn slot_of(&self, key: &str) -> u16 {
        cli(self.live_port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The port of the live master that serves `key` now.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let slot = self.slot_of(key);
        self.topology()
            .into_iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.port)
    }

    /// SIGKILLs the master serving `key`; returns its port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let port = self.master_of(key).expect("a master for the key");
        self.kill(port);
        port
    }

    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill();
        }
    }

    /// Starts a killed node again (empty; it rejoins from its nodes.conf).
    pub fn restart(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill();
            n.spawn();
        }
    }

    /// Waits until another master serves `key` (the failover); returns when.
    pub fn wait_failover(&self, key: &str, from: u16, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if matches!(self.master_of(key), Some(p) if p != from) && self.state_ok() {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "no failover within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn state_ok(&self) -> bool {
        cli(self.live_port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok")
    }

    /// Every live node says `cluster_state:ok`, every slot has a master,
    /// and every live replica's link to its master is up.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let live: Vec<&Node> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
            let ok = live
                .iter()
                .all(|n| cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            let synced = live.iter().all(|n| {
                let info = cli(n.port, &["INFO", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            });
            if ok && synced {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not healthy in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Keys per master (for a test to show the load spread over slots).
    pub fn keys_per_master(&self) -> HashMap<u16, u64> {
        self.topology()
            .into_iter()
            .filter(|n| n.master && !n.failed)
            .map(|n| {
                let size = cli(n.port, &["DBSIZE"]).trim().parse().unwrap_or(0);
                (n.port, size)
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
