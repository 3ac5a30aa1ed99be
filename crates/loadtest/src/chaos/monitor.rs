//! What the runner watches during a chaos run, on one clock: each
//! instance's breakers (`GET /admin/breakers` every 200 ms, straight to the
//! instance, not through nginx) and the event backlog in PostgreSQL (every
//! 500 ms).

use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The runner's own PostgreSQL connections carry this application name;
/// the `pg-connections` fault terminates every other one.
pub const RUNNER_APP_NAME: &str = "loadtest-chaos";

/// The run's clock: milliseconds since `t0`; k6's wall-clock stamps are
/// turned into it with `unix0_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub t0: Instant,
    pub unix0_ms: f64,
}

impl Clock {
    pub fn start() -> Self {
        let unix0_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        Self {
            t0: Instant::now(),
            unix0_ms,
        }
    }

    pub fn now_ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    pub fn at_ms(&self, i: Instant) -> f64 {
        i.saturating_duration_since(self.t0).as_secs_f64() * 1000.0
    }

    pub fn unix_to_run_ms(&self, unix_ms: f64) -> f64 {
        unix_ms - self.unix0_ms
    }
}

/// One poll of one instance: `None` when it did not answer.
#[derive(Debug, Clone)]
pub struct BreakerSample {
    pub at_ms: f64,
    pub instance: usize,
    pub states: Option<Vec<(String, String)>>,
}

/// One poll of the backlog: events not yet published, and `order_paid`
/// events the data platform's consumer has not handled (nor parked).
#[derive(Debug, Clone, Copy)]
pub struct BacklogSample {
    pub at_ms: f64,
    pub unpublished: i64,
    pub data_platform: i64,
}

pub const BACKLOG_SQL: &str = "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL),
        (SELECT count(*) FROM outbox o
          WHERE o.event_type = 'order_paid'
            AND NOT EXISTS (SELECT 1 FROM inbox_data_platform i WHERE i.event_id = o.id)
            AND NOT EXISTS (SELECT 1 FROM dead_letters d
                            WHERE d.consumer = 'data_platform' AND d.event_id = o.id
                              AND d.redriven_at IS NULL))";

#[derive(Default)]
pub struct Recorded {
    pub breakers: Vec<BreakerSample>,
    pub backlog: Vec<BacklogSample>,
}

pub struct Monitor {
    pub data: Arc<Mutex<Recorded>>,
    tasks: Vec<JoinHandle<()>>,
}

fn parse_breakers(v: &Value) -> Option<Vec<(String, String)>> {
    let list = v.get("breakers")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|b| {
                Some((
                    b.get("name")?.as_str()?.to_owned(),
                    b.get("state")?.as_str()?.to_owned(),
                ))
            })
            .collect(),
    )
}

impl Monitor {
    pub fn start(clock: Clock, bases: Vec<String>, admin_key: String, db_url: String) -> Self {
        let data = Arc::new(Mutex::new(Recorded::default()));
        let mut tasks = Vec::new();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_millis(800))
            .build()
            .unwrap_or_default();
        for (instance, base) in bases.into_iter().enumerate() {
            let (data, client, key) = (data.clone(), client.clone(), admin_key.clone());
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let at_ms = clock.now_ms();
                    let states = match client
                        .get(format!("{base}/admin/breakers"))
                        .header("X-Admin-Key", &key)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => r
                            .json::<Value>()
                            .await
                            .ok()
                            .and_then(|v| parse_breakers(&v)),
                        _ => None,
                    };
                    if let Ok(mut d) = data.lock() {
                        d.breakers.push(BreakerSample {
                            at_ms,
                            instance,
                            states,
                        });
                    }
                }
            }));
        }
        let backlog = data.clone();
        tasks.push(tokio::spawn(async move {
            let mut db: Option<tokio_postgres::Client> = None;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if db.as_ref().is_none_or(|c| c.is_closed()) {
                    db = connect(&db_url).await;
                }
                let Some(client) = db.as_ref() else { continue };
                let at_ms = clock.now_ms();
                let row = tokio::time::timeout(
                    Duration::from_secs(2),
                    client.query_one(BACKLOG_SQL, &[]),
                )
                .await;
                match row {
                    Ok(Ok(row)) => {
                        let sample = BacklogSample {
                            at_ms,
                            unpublished: row.try_get(0).unwrap_or(-1),
                            data_platform: row.try_get(1).unwrap_or(-1),
                        };
                        if let Ok(mut d) = backlog.lock() {
                            d.backlog.push(sample);
                        }
                    }
                    _ => db = None,
                }
            }
        }));
        Self { data, tasks }
    }

    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// The latest backlog sample.
    pub fn last_backlog(&self) -> Option<BacklogSample> {
        self.data
            .lock()
            .ok()
            .and_then(|d| d.backlog.last().copied())
    }

    /// Whether every instance's latest answer shows every breaker closed.
    pub fn all_closed(&self, instances: usize) -> bool {
        let Ok(d) = self.data.lock() else {
            return false;
        };
        (0..instances).all(|i| {
            d.breakers
                .iter()
                .rev()
                .find(|s| s.instance == i)
                .and_then(|s| s.states.as_ref())
                .is_some_and(|st| st.iter().all(|(_, s)| s == "closed"))
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A connection of the runner's own, named so the `pg-connections` fault
/// leaves it alone.
pub async fn connect(url: &str) -> Option<tokio_postgres::Client> {
    let url = format!("{url}?application_name={}", RUNNER_APP_NAME);
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_postgres::connect(&url, tokio_postgres::NoTls),
    )
    .await
    .ok()?
    .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}
