//! The disposable dependencies of a chaos run: a PostgreSQL cluster of its
//! own (initdb + pg_ctl in a temporary folder, on a free loopback port), a
//! Redis of its own (redis-server on a free port, no persistence) and, in
//! Kafka mode, a Kafka-compatible broker of its own (tansu on a free port,
//! SQLite storage in the run's folder), so a fault never touches the
//! machine's shared services. All go away with the run.

use crate::procs::{self, Managed};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The PostgreSQL binaries of the newest installed major version.
fn pg_bin_dir() -> Result<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (/usr/lib/postgresql missing)")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, p)| p)
        .ok_or_else(|| anyhow!("no /usr/lib/postgresql/*/bin/initdb"))
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// PostgreSQL refuses to run as root: as root, its tools run as `postgres`.
fn pg_command(bin: &Path, tool: &str) -> Command {
    let path = bin.join(tool);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.arg("-u").arg("postgres").arg("--").arg(path);
        // The caller's folder may be closed to the postgres user (a clone
        // in a private temporary folder).
        cmd.current_dir("/");
        cmd
    } else {
        Command::new(path)
    }
}

async fn run_tool(mut cmd: Command, what: &str, limit: Duration) -> Result<String> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| anyhow!("{what} did not finish within {limit:?}"))?
        .with_context(|| format!("running {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{what} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// A PostgreSQL cluster in a temporary folder; stopped (immediate) and
/// removed on drop.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    pub version: String,
    /// The server's log (pg_ctl start and restart send it there), in the
    /// cluster's own folder: the postgres user may not write the run's.
    pub log: PathBuf,
    /// Where the log is copied when the cluster goes (the run's folder).
    keep_log: PathBuf,
}

impl Postgres {
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `postgres://postgres@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub async fn start(run_dir: &Path) -> Result<Self> {
        let bin = pg_bin_dir()?;
        let port = procs::free_port()?;
        let dir =
            std::env::temp_dir().join(format!("loadtest-chaos-pg-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pg = Self {
            bin,
            port,
            version: String::new(),
            log: dir.join("postgres.log"),
            keep_log: run_dir.join("postgres.log"),
            dir,
        };
        if is_root() {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:postgres").arg(&pg.dir);
            run_tool(chown, "chown postgres", Duration::from_secs(10)).await?;
        }
        let mut initdb = pg_command(&pg.bin, "initdb");
        initdb
            .arg("-D")
            .arg(pg.data())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .arg("--locale=C.UTF-8");
        run_tool(initdb, "initdb", Duration::from_secs(120)).await?;
        // Settings: loopback only, sockets in the cluster's folder, room for
        // two instances' pools and the runner, and a log the report links.
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 300\nshared_buffers = 128MB\nlogging_collector = off\n\
             log_min_messages = warning\n",
            pg.dir.display()
        );
        let conf_path = pg.data().join("postgresql.auto.conf");
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("writing {}", conf_path.display()))?;
        if is_root() {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(&conf_path);
            run_tool(chown, "chown postgres", Duration::from_secs(10)).await?;
        }
        let log = pg.log.clone();
        // The log is written by the postgres user.
        std::fs::write(&log, "").ok();
        if is_root() {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(&log);
            run_tool(chown, "chown postgres", Duration::from_secs(10)).await?;
        }
        let mut pg = pg;
        pg.ctl(&["start", "-w", "-t", "60", "-l"], Some(&log))
            .await
            .with_context(|| format!("starting PostgreSQL:\n{}", procs::tail(&log, 20)))?;
        pg.version = pg
            .bin
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .map(|v| format!("PostgreSQL {v}"))
            .unwrap_or_default();
        Ok(pg)
    }

    /// `pg_ctl -D data <args> [log]`.
    pub async fn ctl(&self, args: &[&str], log: Option<&Path>) -> Result<String> {
        let mut cmd = pg_command(&self.bin, "pg_ctl");
        cmd.arg("-D").arg(self.data()).args(args);
        if let Some(l) = log {
            cmd.arg(l);
        }
        run_tool(
            cmd,
            &format!("pg_ctl {}", args.join(" ")),
            Duration::from_secs(90),
        )
        .await
    }

    /// Waits until a new connection answers `SELECT 1`; when it did.
    pub async fn wait_accepting(&self, limit: Duration) -> Result<Instant> {
        let deadline = Instant::now() + limit;
        let url = self.url("postgres");
        loop {
            if let Ok(Ok((client, conn))) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio_postgres::connect(&url, tokio_postgres::NoTls),
            )
            .await
            {
                let task = tokio::spawn(conn);
                let ok =
                    tokio::time::timeout(Duration::from_secs(2), client.simple_query("SELECT 1"))
                        .await
                        .is_ok_and(|r| r.is_ok());
                drop(client);
                task.abort();
                if ok {
                    return Ok(Instant::now());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "PostgreSQL on port {} did not accept connections within {limit:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Postgres {
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .status();
        let _ = std::fs::copy(&self.log, &self.keep_log);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis of the run's own: `redis-server` on a free loopback port, no
/// persistence (a restart comes back empty, as after a crash).
pub struct Redis {
    pub port: u16,
    bin: PathBuf,
    log: PathBuf,
    pub process: Option<Managed>,
    starts: usize,
}

impl Redis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn start(run_dir: &Path) -> Result<Self> {
        let bin = crate::k6::which("redis-server")
            .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
            .ok_or_else(|| {
                anyhow!("redis-server is not installed (apt-get install redis-server)")
            })?;
        let mut r = Self {
            port: procs::free_port()?,
            bin,
            log: run_dir.join("redis.log"),
            process: None,
            starts: 0,
        };
        r.spawn().await?;
        Ok(r)
    }

    /// Starts redis-server (again) on the same port; when it answered PING.
    pub async fn spawn(&mut self) -> Result<Instant> {
        self.starts += 1;
        let log = self
            .log
            .with_file_name(format!("redis-{}.log", self.starts));
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--maxclients",
            "10000",
        ]);
        self.process = Some(Managed::spawn(
            "redis-server",
            &mut cmd,
            &log,
            libc::SIGTERM,
        )?);
        self.wait_ping(Duration::from_secs(20)).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Managed::pid)
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            if let Some(pid) = p.pid() {
                procs::signal(pid, libc::SIGKILL);
            }
            p.stop(Duration::from_secs(5)).await;
        }
    }

    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            procs::signal(pid, sig);
        }
    }

    pub async fn wait_ping(&self, limit: Duration) -> Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if self.ping().await.is_ok() {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "Redis on port {} did not answer PING within {limit:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn ping(&self) -> Result<()> {
        self.command(&["PING"]).await.map(|_| ())
    }

    /// One command on a fresh connection, bounded.
    pub async fn command(&self, args: &[&str]) -> Result<redis::Value> {
        let client = redis::Client::open(self.url())?;
        tokio::time::timeout(Duration::from_secs(2), async {
            let mut con = client.get_multiplexed_async_connection().await?;
            let mut cmd = redis::cmd(args.first().copied().unwrap_or("PING"));
            for a in args.iter().skip(1) {
                cmd.arg(*a);
            }
            cmd.query_async::<redis::Value>(&mut con).await
        })
        .await
        .map_err(|_| anyhow!("Redis did not answer within 2 s"))?
        .map_err(Into::into)
    }

    pub async fn stop(&mut self) {
        // A stopped (SIGSTOP) Redis would ignore SIGTERM.
        self.signal(libc::SIGCONT);
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5)).await;
        }
    }
}

/// `TANSU_BIN`, else `tansu` on PATH, else `~/.cargo/bin/tansu` (where
/// `scripts/test.sh` installs it).
fn tansu_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = crate::k6::which("tansu") {
        return Ok(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let p = home.join(".cargo/bin/tansu");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "Kafka mode needs the tansu broker: cargo install --locked tansu --version 0.6.0 \
         --no-default-features --features libsql (or set TANSU_BIN)"
    )
}

/// A Kafka-compatible broker of the run's own: `tansu broker` on a free
/// loopback port, its SQLite storage in the run's folder, so a restart on
/// the same port comes back with its topics, messages and committed
/// offsets, as a real broker restarted on its disk would. tansu creates no
/// topic on its own: the instances create theirs at start-up.
pub struct Broker {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    pub process: Option<Managed>,
    starts: usize,
}

impl Broker {
    /// `127.0.0.1:PORT`, as `kafka.brokers` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn start(run_dir: &Path) -> Result<Self> {
        let dir = run_dir.join("tansu");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut b = Self {
            port: procs::free_port()?,
            bin: tansu_bin()?,
            dir,
            process: None,
            starts: 0,
        };
        b.spawn().await?;
        Ok(b)
    }

    /// Starts the broker (again) on the same port and storage; when it
    /// accepted a connection.
    pub async fn spawn(&mut self) -> Result<Instant> {
        self.starts += 1;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"]);
        let log = self.dir.join(format!("tansu-{}.log", self.starts));
        self.process = Some(Managed::spawn("tansu", &mut cmd, &log, libc::SIGTERM)?);
        self.wait_accepting(Duration::from_secs(30))
            .await
            .with_context(|| format!("tansu did not start:\n{}", procs::tail(&log, 20)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Managed::pid)
    }

    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            procs::signal(pid, sig);
        }
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            if let Some(pid) = p.pid() {
                procs::signal(pid, libc::SIGKILL);
            }
            p.stop(Duration::from_secs(5)).await;
        }
    }

    /// Waits until a TCP connection to the broker's port is accepted.
    pub async fn wait_accepting(&mut self, limit: Duration) -> Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.process.as_mut().and_then(Managed::exited) {
                bail!("tansu exited ({status})");
            }
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", self.port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), connect).await {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "tansu on port {} did not accept connections within {limit:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&mut self) {
        // A stopped (SIGSTOP) broker would ignore SIGTERM.
        self.signal(libc::SIGCONT);
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5)).await;
        }
    }
}
