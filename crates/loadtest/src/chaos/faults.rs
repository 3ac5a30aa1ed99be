//! The faults: what each one does to the run's own deployment, and when the
//! dependency counts as back (it accepts connections, answers, or listens).

use super::deploy::Deployment;
use super::monitor::{Clock, RUNNER_APP_NAME};
use super::plan::{Fault, Timing};
use super::stub::Mode;
use anyhow::{anyhow, Result};
use std::time::Duration;

/// When the fault was in force and when its dependency came back.
#[derive(Debug, Clone, Default)]
pub struct FaultWindow {
    /// Run clock, ms.
    pub start_ms: f64,
    pub end_ms: f64,
    /// When the dependency accepted connections again (ms).
    pub returned_ms: f64,
    /// What was done, in order, for the report.
    pub steps: Vec<(f64, String)>,
}

impl FaultWindow {
    /// What was just done, for the report, at the run clock's now.
    fn step(&mut self, clock: &Clock, text: String) {
        self.steps.push((clock.now_ms(), text));
    }
}

/// Injects `fault` now, holds it for `timing.fault_for_s`, heals it, and
/// waits until the dependency is back.
pub async fn inject(
    fault: Fault,
    dep: &mut Deployment,
    clock: &Clock,
    timing: &Timing,
) -> Result<FaultWindow> {
    let hold = Duration::from_secs_f64(timing.fault_for_s);
    let mut w = FaultWindow {
        start_ms: clock.now_ms(),
        ..FaultWindow::default()
    };
    match fault {
        Fault::RedisKill => redis_kill(dep, clock, hold, &mut w).await?,
        Fault::RedisStall => redis_stall(dep, clock, hold, &mut w).await?,
        Fault::RedisFlush => redis_flush(dep, clock, &mut w).await?,
        Fault::RedisSlow | Fault::PgSlow => slow(fault, dep, clock, hold, &mut w).await?,
        Fault::PgRestart => pg_restart(dep, clock, &mut w).await?,
        Fault::PgConnections => pg_connections(dep, clock, hold, &mut w).await?,
        Fault::DataPlatformDown | Fault::DataPlatformSlow => {
            data_platform(fault, dep, clock, hold, &mut w).await?
        }
        Fault::InstanceKill => instance_kill(dep, clock, hold, &mut w).await?,
        Fault::LockHolderStall => lock_holder_stall(dep, clock, hold, &mut w).await?,
        Fault::BrokerDown => broker_down(dep, clock, hold, &mut w).await?,
        Fault::BrokerStall => broker_stall(dep, clock, hold, &mut w).await?,
    }
    Ok(w)
}

/// Redis SIGKILLed, started again on the same port, empty.
async fn redis_kill(
    dep: &mut Deployment,
    clock: &Clock,
    hold: Duration,
    w: &mut FaultWindow,
) -> Result<()> {
    let pid = dep.redis.pid();
    dep.redis.kill().await;
    w.step(
        clock,
        format!("Redis (pid {}) killed with SIGKILL", pid_text(pid)),
    );
    tokio::time::sleep(hold).await;
    w.end_ms = clock.now_ms();
    let back = dep.redis.spawn().await?;
    w.returned_ms = clock.at_ms(back);
    w.step(
        clock,
        format!(
            "Redis started again, empty, pid {}, answering PING",
            pid_text(dep.redis.pid())
        ),
    );
    Ok(())
}

/// Redis frozen (SIGSTOP), then resumed (SIGCONT).
async fn redis_stall(
    dep: &mut Deployment,
    clock: &Clock,
    hold: Duration,
    w: &mut FaultWindow,
) -> Result<()> {
    dep.redis.signal(libc::SIGSTOP);
    w.step(clock, "Redis frozen (SIGSTOP)".into());
    tokio::time::sleep(hold).await;
    w.end_ms = clock.now_ms();
    dep.redis.signal(libc::SIGCONT);
    w.step(clock, "Redis resumed (SIGCONT)".into());
    let back = dep.redis.wait_ping(Duration::from_secs(10)).await?;
    w.returned_ms = clock.at_ms(back);
    Ok(())
}

/// Every Redis key wiped at once.
async fn redis_flush(dep: &mut Deployment, clock: &Clock, w: &mut FaultWindow) -> Result<()> {
    dep.redis.command(&["FLUSHALL"]).await?;
    w.end_ms = clock.now_ms();
    w.returned_ms = w.end_ms;
    w.step(clock, "FLUSHALL: every Redis key gone".into());
    Ok(())
}

/// A delay on every Redis or PostgreSQL read and write (the proxy in front of it).
async fn slow(
    fault: Fault,
    dep: &mut Deployment,
    clock: &Clock,
    hold: Duration,
    w: &mut FaultWindow,
) -> Result<()> {
    let (proxy, delay, what) = match fault {
        Fault::RedisSlow => (dep.redis_proxy.as_ref(), 250, "Redis"),
        _ => (dep.pg_proxy.as_ref(), 100, "PostgreSQL"),
    };
    let proxy = proxy.ok_or_else(|| anyhow!("no proxy in front of {what}"))?;
    proxy.delay(Duration::from_millis(delay));
    w.step(
        clock,
        format!("{delay} ms added to every {what} read and write"),
    );
    tokio::time::sleep(hold).await;
    proxy.restore();
    w.end_ms = clock.now_ms();
    w.returned_ms = w.end_ms;
    w.step(clock, format!("{what} proxy back to no delay"));
    Ok(())
}

/// PostgreSQL restarted (fast shutdown).
async fn pg_restart(dep: &mut Deployment, clock: &Clock, w: &mut FaultWindow) -> Result<()> {
    w.step(clock, "pg_ctl restart -m fast".into());
    // With its log: without `-l` the new postmaster would keep our
    // pipe open and pg_ctl's output would never end.
    let log = dep.pg.log.clone();
    dep.pg
        .ctl(
            &["restart", "-m", "fast", "-w", "-t", "60", "-l"],
            Some(&log),
        )
        .await?;
    w.end_ms = clock.now_ms();
    let back = dep.pg.wait_accepting(Duration::from_secs(30)).await?;
    w.returned_ms = clock.at_ms(back);
    w.step(clock, "PostgreSQL accepting connections again".into());
    Ok(())
}

/// The service's PostgreSQL connections terminated, every 500 ms while the fault holds.
async fn pg_connections(
    dep: &mut Deployment,
    clock: &Clock,
    hold: Duration,
    w: &mut FaultWindow,
) -> Result<()> {
    let admin = super::monitor::connect(&dep.pg.url("postgres"))
        .await
        .ok_or_else(|| anyhow!("cannot connect to the run's PostgreSQL"))?;
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = 'commerce' AND pid <> pg_backend_pid()
           AND backend_type = 'client backend'
           AND application_name <> '{}'",
        RUNNER_APP_NAME
    );
    let until = tokio::time::Instant::now() + hold;
    let mut total = 0i64;
    let mut rounds = 0;
    while tokio::time::Instant::now() < until {
        if let Ok(row) = admin.query_one(sql.as_str(), &[]).await {
            total += row.try_get::<_, i64>(0).unwrap_or(0);
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    w.end_ms = clock.now_ms();
    w.returned_ms = w.end_ms;
    w.step(
        clock,
        format!("{total} service connections terminated in {rounds} rounds, 500 ms apart"),
    );
    Ok(())
}

/// The data platform's receiver down or slow.
async fn data_platform(
    fault: Fault,
    dep: &mut Deployment,
    clock: &Clock,
    hold: Duration,
    w: &mut FaultWindow,
) -> Result<()> {
    let (mode, text) = if fault == Fault::DataPlatformDown {
        (Mode::Down, "data platform receiver stopped listening")
    } else {
        (Mode::Slow, "data platform answers after 3 s")
    };
    dep.platform.set_mode(mode, Duration::from_secs(3)).await?;
    w.step(clock, text.into());
    tokio::time::sleep(hold).await;
    dep.platform.set_mode(Mode::Ok, Duration::ZERO).await?;
    w.end_ms = clock.now_ms();
    w.returned_ms = w.end_ms;
    w.step(clock, "data platform receiver back to 200 at once".into());
    Ok(())
}

/// Instance #1 SIGKILLed mid-payment, then started again.
async fn instance_kill(
    dep: &mut Deployment,
    clock: &Clock,
    hold: Duration,
    w: &mut FaultWindow,
) -> Result<()> {
    // Into the flash sale's payments (the bursts start 0.3 s after
    // the fault time), so the kill lands mid-payment.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let locks = count_keys(dep, "chaos:lock:*").await;
    let pid = dep.instances.pid(1);
    w.start_ms = clock.now_ms();
    dep.instances.kill(1).await;
    w.step(
        clock,
        format!("{locks} lock keys in Redis just before the kill"),
    );
    w.step(
        clock,
        format!("instance #1 (pid {}) killed with SIGKILL", pid_text(pid)),
    );
    tokio::time::sleep(hold).await;
    w.end_ms = clock.now_ms();
    w.step(clock, "instance #1 starting again".into());
    let back = dep.instances.start(1).await?;
    w.returned_ms = clock.at_ms(back);
    w.step(
        clock,
        format!(
            "instance #1 ready again (pid {})",
            pid_text(dep.instances.pid(1))
        ),
    );
    Ok(())
}

/// Instance #1 frozen while it holds payment locks, past their lease.
async fn lock_holder_stall(
    dep: &mut Deployment,
    clock: &Clock,
    hold: Duration,
    w: &mut FaultWindow,
) -> Result<()> {
    // Let the bursts' payments start, so the instance holds locks.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let locks = count_keys(dep, "chaos:lock:*").await;
    let pid = dep.instances.pid(1);
    if let Some(p) = pid {
        crate::procs::signal(p, libc::SIGSTOP);
    }
    w.start_ms = clock.now_ms();
    w.step(
        clock,
        format!(
            "instance #1 (pid {}) frozen (SIGSTOP); {locks} lock keys in Redis at that moment",
            pid_text(pid)
        ),
    );
    tokio::time::sleep(hold).await;
    if let Some(p) = pid {
        crate::procs::signal(p, libc::SIGCONT);
    }
    w.end_ms = clock.now_ms();
    w.returned_ms = w.end_ms;
    w.step(clock, "instance #1 resumed (SIGCONT)".into());
    Ok(())
}

/// The broker SIGKILLed, started again on the same port and storage.
async fn broker_down(
    dep: &mut Deployment,
    clock: &Clock,
    hold: Duration,
    w: &mut FaultWindow,
) -> Result<()> {
    let broker = dep
        .broker
        .as_mut()
        .ok_or_else(|| anyhow!("no broker in this run"))?;
    let pid = broker.pid();
    broker.kill().await;
    w.step(
        clock,
        format!("Kafka broker (pid {}) killed with SIGKILL", pid_text(pid)),
    );
    tokio::time::sleep(hold).await;
    w.end_ms = clock.now_ms();
    let back = broker.spawn().await?;
    w.returned_ms = clock.at_ms(back);
    w.step(
        clock,
        format!(
            "Kafka broker started again on the same port and storage, pid {}, accepting connections",
            pid_text(broker.pid())
        ),
    );
    Ok(())
}

/// The broker frozen (SIGSTOP), then resumed (SIGCONT).
async fn broker_stall(
    dep: &mut Deployment,
    clock: &Clock,
    hold: Duration,
    w: &mut FaultWindow,
) -> Result<()> {
    let broker = dep
        .broker
        .as_mut()
        .ok_or_else(|| anyhow!("no broker in this run"))?;
    broker.signal(libc::SIGSTOP);
    w.step(clock, "Kafka broker frozen (SIGSTOP)".into());
    tokio::time::sleep(hold).await;
    w.end_ms = clock.now_ms();
    broker.signal(libc::SIGCONT);
    // A frozen process's port still accepts (the kernel does): the
    // broker is back when it runs again.
    w.returned_ms = clock.now_ms();
    w.step(clock, "Kafka broker resumed (SIGCONT)".into());
    Ok(())
}

async fn count_keys(dep: &Deployment, pattern: &str) -> String {
    match dep.redis.command(&["KEYS", pattern]).await {
        Ok(redis::Value::Array(keys)) => keys.len().to_string(),
        Ok(_) => "?".to_owned(),
        Err(e) => format!("? ({e})"),
    }
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
}
