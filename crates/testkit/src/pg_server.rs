//! A disposable PostgreSQL cluster for tests that stop, restart or replicate
//! PostgreSQL: `initdb` + `pg_ctl` in a temporary folder, on a free loopback
//! port, so the machine's shared server is never touched. A primary is
//! set up for streaming replication; [`PgServer::start_replica_of`] makes a
//! hot standby of it with `pg_basebackup -R`. Stopped (immediate) and
//! removed on drop.
//!
//! PostgreSQL refuses to run as root: as root, its tools run as `postgres`
//! (through `runuser`) in a folder that user owns.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
}

/// The binaries of the newest installed major version
/// (`/usr/lib/postgresql/<major>/bin`), or `PG_BIN_DIR`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (/usr/lib/postgresql)")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().expect("a /usr/lib/postgresql/*/bin/initdb").1
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn tool(bin: &Path, name: &str) -> Command {
    let path = bin.join(name);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(path);
        c
    } else {
        Command::new(path)
    };
    // The caller's folder may be closed to the postgres user.
    cmd.current_dir("/").stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Runs a tool to its end, within `limit`; panics with its output on failure.
async fn run(mut cmd: Command, what: &str, limit: Duration) {
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what} could not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A folder the postgres user owns.
async fn own_folder(port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "testkit-pg-{}-{port}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create the cluster's folder");
    if is_root() {
        let mut chown = Command::new("chown");
        chown.arg("postgres:postgres").arg(&dir);
        run(chown, "chown postgres", Duration::from_secs(10)).await;
    }
    dir
}

impl PgServer {
    /// A new cluster set up as a replication primary (`wal_level =
    /// replica`, WAL senders, replication connections from loopback
    /// trusted), started and accepting connections.
    pub async fn start_primary() -> Self {
        let port = free_port();
        let s = Self {
            bin: bin_dir(),
            dir: own_folder(port).await,
            port,
        };
        let mut initdb = tool(&s.bin, "initdb");
        initdb
            .arg("-D")
            .arg(s.data())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .arg("--locale=C.UTF-8");
        run(initdb, "initdb", Duration::from_secs(120)).await;
        // fsync off: a disposable cluster, and tests share two cores.
        s.append(
            "postgresql.auto.conf",
            "listen_addresses = '127.0.0.1'\nmax_connections = 100\nfsync = off\n\
             wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n\
             logging_collector = off\nlog_min_messages = warning\n",
        );
        s.append("pg_hba.conf", "host replication all 127.0.0.1/32 trust\n");
        s.start().await;
        s
    }

    /// A hot standby of `primary` (`pg_basebackup -R`: streaming from it,
    /// read-only), on a port of its own, started and accepting connections.
    pub async fn start_replica_of(primary: &PgServer) -> Self {
        let port = free_port();
        let s = Self {
            bin: primary.bin.clone(),
            dir: own_folder(port).await,
            port,
        };
        let mut backup = tool(&s.bin, "pg_basebackup");
        backup
            .arg("-D")
            .arg(s.data())
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", "postgres", "-R", "-X", "stream", "--checkpoint=fast"]);
        run(backup, "pg_basebackup", Duration::from_secs(120)).await;
        s.start().await;
        s
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Appends to a file of the data folder (kept owned by postgres).
    fn append(&self, file: &str, text: &str) {
        use std::io::Write;
        let path = self.data().join(file);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        f.write_all(text.as_bytes()).expect("append setting");
    }

    /// `postgres://postgres@127.0.0.1:PORT`, the server (no database).
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    pub fn url(&self, db: &str) -> String {
        format!("{}/{db}", self.server_url())
    }

    async fn ctl(&self, args: &[&str], what: &str) {
        let mut cmd = tool(&self.bin, "pg_ctl");
        cmd.arg("-D").arg(self.data()).args(args);
        run(cmd, what, Duration::from_secs(90)).await;
    }

    /// Starts (again) on its port and waits until it accepts connections.
    /// The port and socket folder are given on the command line: a standby
    /// copied the primary's settings.
    pub async fn start(&self) -> Instant {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let log = self.log().to_string_lossy().into_owned();
        self.ctl(
            &["start", "-w", "-t", "60", "-o", &options, "-l", &log],
            "pg_ctl start",
        )
        .await;
        self.wait_accepting(Duration::from_secs(30)).await
    }

    /// `pg_ctl stop -m immediate`: the server is gone at once, as in a crash.
    pub async fn stop_immediate(&self) {
        self.ctl(
            &["stop", "-m", "immediate", "-w", "-t", "30"],
            "pg_ctl stop",
        )
        .await;
    }

    /// Waits until a new connection answers `SELECT 1`; returns when it did.
    pub async fn wait_accepting(&self, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        let mut cfg = commerce_storage::DbConfig::with_url(self.url("postgres"));
        cfg.connect_timeout = Duration::from_secs(2);
        loop {
            if let Ok(mut c) = commerce_storage::connect(&cfg).await {
                use diesel_async::RunQueryDsl;
                if diesel::sql_query("SELECT 1").execute(&mut c).await.is_ok() {
                    return Instant::now();
                }
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL on port {} did not accept connections within {within:?}:\n{}",
                self.port,
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(path);
            c
        } else {
            std::process::Command::new(path)
        };
        let _ = cmd
            .arg("-D")
            .arg(self.data())
            .args(["stop", "-m", "immediate", "-w", "-t", "20"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
