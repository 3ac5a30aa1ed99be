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
    let step = |w: &mut FaultWindow, text: String| w.steps.push((clock.now_ms(), text));
    match fault {
        Fault::RedisKill => {
            let pid = dep.redis.pid();
            dep.redis.kill().await;
            step(
                &mut w,
                format!("Redis (pid {}) killed with SIGKILL", pid_text(pid)),
            );
            tokio::time::sleep(hold).await;
            w.end_ms = clock.now_ms();
            let back = dep.redis.spawn().await?;
            w.returned_ms = clock.at_ms(back);
            step(
                &mut w,
                format!(
                    "Redis started again, empty, pid {}, answering PING",
                    pid_text(dep.redis.pid())
                ),
            );
        }
        Fault::RedisStall => {
            dep.redis.signal(libc::SIGSTOP);
            step(&mut w, "Redis frozen (SIGSTOP)".into());
            tokio::time::sleep(hold).await;
            w.end_ms = clock.now_ms();
            dep.redis.signal(libc::SIGCONT);
            step(&mut w, "Redis resumed (SIGCONT)".into());
            let back = dep.redis.wait_ping(Duration::from_secs(10)).await?;
            w.returned_ms = clock.at_ms(back);
        }
        Fault::RedisFlush => {
            dep.redis.command(&["FLUSHALL"]).await?;
            w.end_ms = clock.now_ms();
            w.returned_ms = w.end_ms;
            step(&mut w, "FLUSHALL: every Redis key gone".into());
        }
        Fault::RedisSlow | Fault::PgSlow => {
            let (proxy, delay, what) = match fault {
                Fault::RedisSlow => (dep.redis_proxy.as_ref(), 250, "Redis"),
                _ => (dep.pg_proxy.as_ref(), 100, "PostgreSQL"),
            };
            let proxy = proxy.ok_or_else(|| anyhow!("no proxy in front of {what}"))?;
            proxy.delay(Duration::from_millis(delay));
            step(
                &mut w,
                format!("{delay} ms added to every {what} read and write"),
            );
            tokio::time::sleep(hold).await;
            proxy.restore();
            w.end_ms = clock.now_ms();
            w.returned_ms = w.end_ms;
            step(&mut w, format!("{what} proxy back to no delay"));
        }
        Fault::PgRestart => {
            step(&mut w, "pg_ctl restart -m fast".into());
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
            step(&mut w, "PostgreSQL accepting connections again".into());
        }
        Fault::PgConnections => {
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
            step(
                &mut w,
                format!("{total} service connections terminated in {rounds} rounds, 500 ms apart"),
            );
        }
        Fault::DataPlatformDown | Fault::DataPlatformSlow => {
            let (mode, text) = if fault == Fault::DataPlatformDown {
                (Mode::Down, "data platform receiver stopped listening")
            } else {
                (Mode::Slow, "data platform answers after 3 s")
            };
            dep.platform.set_mode(mode, Duration::from_secs(3)).await?;
            step(&mut w, text.into());
            tokio::time::sleep(hold).await;
            dep.platform.set_mode(Mode::Ok, Duration::ZERO).await?;
            w.end_ms = clock.now_ms();
            w.returned_ms = w.end_ms;
            step(&mut w, "data platform receiver back to 200 at once".into());
        }
        Fault::InstanceKill => {
            // Into the flash sale's payments (the bursts start 0.3 s after
            // the fault time), so the kill lands mid-payment.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let locks = count_keys(dep, "chaos:lock:*").await;
            let pid = dep.instances.pid(1);
            w.start_ms = clock.now_ms();
            dep.instances.kill(1).await;
            step(
                &mut w,
                format!("{locks} lock keys in Redis just before the kill"),
            );
            step(
                &mut w,
                format!("instance #1 (pid {}) killed with SIGKILL", pid_text(pid)),
            );
            tokio::time::sleep(hold).await;
            w.end_ms = clock.now_ms();
            step(&mut w, "instance #1 starting again".into());
            let back = dep.instances.start(1).await?;
            w.returned_ms = clock.at_ms(back);
            step(
                &mut w,
                format!(
                    "instance #1 ready again (pid {})",
                    pid_text(dep.instances.pid(1))
                ),
            );
        }
        Fault::LockHolderStall => {
            // Let the bursts' payments start, so the instance holds locks.
            tokio::time::sleep(Duration::from_millis(800)).await;
            let locks = count_keys(dep, "chaos:lock:*").await;
            let pid = dep.instances.pid(1);
            if let Some(p) = pid {
                crate::procs::signal(p, libc::SIGSTOP);
            }
            w.start_ms = clock.now_ms();
            step(
                &mut w,
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
            step(&mut w, "instance #1 resumed (SIGCONT)".into());
        }
        Fault::BrokerDown => {
            let broker = dep
                .broker
                .as_mut()
                .ok_or_else(|| anyhow!("no broker in this run"))?;
            let pid = broker.pid();
            broker.kill().await;
            step(
                &mut w,
                format!("Kafka broker (pid {}) killed with SIGKILL", pid_text(pid)),
            );
            tokio::time::sleep(hold).await;
            w.end_ms = clock.now_ms();
            let back = broker.spawn().await?;
            w.returned_ms = clock.at_ms(back);
            step(
                &mut w,
                format!(
                    "Kafka broker started again on the same port and storage, pid {}, accepting connections",
                    pid_text(broker.pid())
                ),
            );
        }
        Fault::BrokerStall => {
            let broker = dep
                .broker
                .as_mut()
                .ok_or_else(|| anyhow!("no broker in this run"))?;
            broker.signal(libc::SIGSTOP);
            step(&mut w, "Kafka broker frozen (SIGSTOP)".into());
            tokio::time::sleep(hold).await;
            w.end_ms = clock.now_ms();
            broker.signal(libc::SIGCONT);
            // A frozen process's port still accepts (the kernel does): the
            // broker is back when it runs again.
            w.returned_ms = clock.now_ms();
            step(&mut w, "Kafka broker resumed (SIGCONT)".into());
        }
    }
    Ok(w)
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
