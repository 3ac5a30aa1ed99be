//! A chaos run's figures (time to open, time to close after the dependency
//! returned, errors during and after, backlog drain), its checks (the SQL
//! rules, every acknowledged write in PostgreSQL, no 500), and the report:
//! the incident timeline an operator would write by hand.

use super::faults::FaultWindow;
use super::monitor::{BreakerSample, Recorded};
use super::plan::{Fault, Timing};
use super::stub::Received;
use super::timeline::{self, Answer, Chart};
use crate::rules::{Outcome as RuleOutcome, RuleResult};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use tokio_postgres::Client;

pub struct Input {
    pub fault: Fault,
    pub timing: Timing,
    pub short: bool,
    pub started: String,
    pub command: String,
    pub server: String,
    pub pg_version: String,
    /// The load's first request on the run's clock (ms): the timeline's 0.
    pub origin_ms: f64,
    pub load_end_ms: f64,
    pub window: FaultWindow,
    pub answers: Vec<Answer>,
    pub recorded: Recorded,
    pub rules: Vec<RuleResult>,
    pub acks: Vec<AckCheck>,
    /// Unpublished outbox rows still under a relay's lease at the end, and
    /// the longest lease left (s).
    pub leased: Option<(i64, f64)>,
    /// Kafka mode: the broker, as the report's setup names it.
    pub broker: Option<String>,
    /// After a broker fault: rule 6, per consumer group (empty otherwise).
    pub delivery: Vec<DeliveryCheck>,
    /// When every event was published and applied by every group, in
    /// seconds after the load ended (broker faults; while the load runs new
    /// events keep coming).
    pub delivered_after_s: Option<f64>,
    pub alerts: Vec<Received>,
    /// What the run's Prometheus saw (Markdown section).
    pub prometheus: String,
    /// Prometheus's alerts and Alertmanager's notifications for the
    /// timeline (run clock, ms).
    pub prom_events: Vec<(f64, String)>,
    pub platform_received: usize,
    pub k6_exit: Option<i32>,
    pub run_dir: String,
    pub minutes: f64,
}

/// One kind of acknowledged write, looked up in PostgreSQL.
#[derive(Debug, Clone)]
pub struct AckCheck {
    pub what: &'static str,
    pub acknowledged: usize,
    pub missing: Result<i64, String>,
}

impl AckCheck {
    pub fn failed(&self) -> bool {
        !matches!(self.missing, Ok(0))
    }
}

/// Issue 26's bar: every breaker closes this soon after its dependency
/// accepts connections again, on every instance.
pub const HEAL_BAR_S: f64 = 3.0;

/// Rule 6 after a broker fault, one row per step: the outbox published,
/// then each consumer group's events applied (its inbox) or parked (an
/// open dead letter, which an operator re-drives).
#[derive(Debug, Clone)]
pub struct DeliveryCheck {
    pub what: String,
    /// Events not there yet.
    pub missing: Result<i64, String>,
}

impl DeliveryCheck {
    pub fn failed(&self) -> bool {
        !matches!(self.missing, Ok(0))
    }
}

/// The consumer groups and the event types each takes (the server's
/// `crates/server/src/events.rs`).
const GROUPS: [(&str, &str); 3] = [
    ("ranking", "'order_paid'"),
    (
        "notification",
        "'order_paid', 'coupon_issued', 'order_cancelled', 'order_expired'",
    ),
    ("data_platform", "'order_paid'"),
];

/// Rule 6 now: the outbox published, every group's events applied.
pub async fn check_delivery(db: &Client) -> Vec<DeliveryCheck> {
    let mut queries = vec![(
        "every outbox event published to the broker".to_owned(),
        "SELECT count(*) FROM outbox WHERE published_at IS NULL".to_owned(),
    )];
    for (group, types) in GROUPS {
        queries.push((
            format!("every event applied once by the `{group}` group (inbox) or parked"),
            format!(
                "SELECT count(*) FROM outbox o WHERE o.event_type IN ({types})
                   AND NOT EXISTS (SELECT 1 FROM inbox_{group} i WHERE i.event_id = o.id)
                   AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.consumer = '{group}'
                                   AND d.event_id = o.id AND d.redriven_at IS NULL)"
            ),
        ));
    }
    let mut out = Vec::new();
    for (what, sql) in queries {
        let missing = match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            db.query_one(sql.as_str(), &[]),
        )
        .await
        {
            Ok(Ok(row)) => row.try_get::<_, i64>(0).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("query timed out".to_owned()),
        };
        out.push(DeliveryCheck { what, missing });
    }
    out
}

/// Every 2xx a client was told, in PostgreSQL: the user coupons (with their
/// user), the orders (with their user), and the payments (the order paid,
/// with its payment row).
pub async fn check_acks(db: &Client, answers: &[Answer]) -> Vec<AckCheck> {
    let pairs = |steps: &[&str], status: u16| -> (Vec<i64>, Vec<i64>) {
        answers
            .iter()
            .filter(|a| a.status == status && steps.contains(&a.step.as_str()))
            .filter_map(|a| Some((a.id?, a.user?)))
            .unzip()
    };
    let checks: [(&'static str, Vec<&str>, u16, &str); 3] = [
        (
            "coupons issued (201)",
            vec!["coupon"],
            201,
            "SELECT count(*) FROM unnest($1::bigint[], $2::bigint[]) a(id, u)
             WHERE NOT EXISTS (SELECT 1 FROM user_coupons c WHERE c.id = a.id AND c.user_id = a.u)",
        ),
        (
            "orders created (201)",
            vec!["order", "sale"],
            201,
            "SELECT count(*) FROM unnest($1::bigint[], $2::bigint[]) a(id, u)
             WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = a.id AND o.user_id = a.u)",
        ),
        (
            "orders paid (200)",
            vec!["pay"],
            200,
            "SELECT count(*) FROM unnest($1::bigint[], $2::bigint[]) a(id, u)
             WHERE NOT EXISTS (SELECT 1 FROM orders o JOIN payments p ON p.order_id = o.id
                               WHERE o.id = a.id AND o.user_id = a.u AND o.status = 'paid')",
        ),
    ];
    let mut out = Vec::new();
    for (what, steps, status, sql) in checks {
        let (ids, users) = pairs(&steps, status);
        let acknowledged = answers
            .iter()
            .filter(|a| a.status == status && steps.contains(&a.step.as_str()))
            .count();
        let unreadable = (acknowledged - ids.len()) as i64;
        let missing = match tokio::time::timeout(
            std::time::Duration::from_secs(60),
            db.query_one(sql, &[&ids, &users]),
        )
        .await
        {
            Ok(Ok(row)) => row
                .try_get::<_, i64>(0)
                .map(|n| n + unreadable)
                .map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("query timed out".to_owned()),
        };
        out.push(AckCheck {
            what,
            acknowledged,
            missing,
        });
    }
    out
}

/// One instance's breaker through the run.
#[derive(Debug, Clone)]
pub struct BreakerTrack {
    pub instance: usize,
    pub name: String,
    /// First time after the fault began it was not closed (s since the fault).
    pub opened_after_s: Option<f64>,
    /// When it closed for good after the dependency returned (s since then).
    pub closed_after_return_s: Option<f64>,
    /// Still not closed at the last poll.
    pub open_at_end: bool,
}

/// The figures of one run (also `chaos all`'s row).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub statuses: BTreeMap<u16, usize>,
    pub total: usize,
    pub errors_during: usize,
    pub errors_after: usize,
    pub answers_during: usize,
    pub answers_after: usize,
    pub internal_500: usize,
    pub unavailable_without_retry_after: usize,
    pub proxy_errors: usize,
    pub proxy_errors_expected: bool,
    pub no_answer: usize,
    pub tracks: Vec<BreakerTrack>,
    pub time_to_open_s: Option<f64>,
    pub time_to_close_s: Option<f64>,
    pub breaker_never_closed: bool,
    pub breakers_open_at_end: Vec<String>,
    /// The slowest close after the dependency returned was over
    /// [`HEAL_BAR_S`].
    pub slow_heal: bool,
    /// Rule 6 steps not complete at the end (broker faults).
    pub delivery_failed: usize,
    pub delivery_checked: bool,
    pub backlog_peak: i64,
    pub backlog_before: i64,
    pub drain_s: Option<f64>,
    pub backlog_end: Option<(i64, i64)>,
    pub rules_failed: usize,
    pub rules_held: usize,
    pub acks_failed: usize,
    pub codes: BTreeMap<(u16, String), usize>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.rules_failed == 0
            && self.acks_failed == 0
            && self.internal_500 == 0
            && self.unavailable_without_retry_after == 0
            && (self.proxy_errors == 0 || self.proxy_errors_expected)
            && self.breakers_open_at_end.is_empty()
            && !self.slow_heal
            && self.delivery_failed == 0
    }

    /// Why it failed, if it did.
    pub fn why(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.rules_failed > 0 {
            out.push(format!("{} rule(s) broke", self.rules_failed));
        }
        if self.acks_failed > 0 {
            out.push("an acknowledged write is not in PostgreSQL".to_owned());
        }
        if self.internal_500 > 0 {
            out.push(format!("{} answer(s) 500", self.internal_500));
        }
        if self.unavailable_without_retry_after > 0 {
            out.push(format!(
                "{} 503/429 without Retry-After",
                self.unavailable_without_retry_after
            ));
        }
        if self.proxy_errors > 0 && !self.proxy_errors_expected {
            out.push(format!("{} 502/504 from nginx", self.proxy_errors));
        }
        if !self.breakers_open_at_end.is_empty() {
            out.push(format!(
                "breaker(s) not closed at the end: {}",
                self.breakers_open_at_end.join(", ")
            ));
        }
        if self.slow_heal {
            out.push(format!(
                "a breaker closed {} after its dependency returned (bar {HEAL_BAR_S} s)",
                secs(self.time_to_close_s)
            ));
        }
        if self.delivery_failed > 0 {
            out.push(format!(
                "{} step(s) of event delivery not complete at the end (rule 6)",
                self.delivery_failed
            ));
        }
        out
    }
}

fn state_of<'a>(s: &'a BreakerSample, name: &str) -> Option<&'a str> {
    s.states
        .as_ref()?
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub fn summarise(input: &Input) -> Summary {
    let w = &input.window;
    let mut s = Summary {
        proxy_errors_expected: input.fault.proxy_errors_expected(),
        ..Summary::default()
    };
    for a in &input.answers {
        *s.statuses.entry(a.status).or_default() += 1;
        s.total += 1;
        // By when the request was sent: one sent during the fault that
        // waited past its end is the fault's.
        let back = w.returned_ms.max(w.end_ms);
        let sent = a.at_ms - a.duration_ms;
        let during = a.at_ms >= w.start_ms && sent <= back;
        let after = sent > back;
        if during {
            s.answers_during += 1;
        }
        if after {
            s.answers_after += 1;
        }
        if timeline::is_error(a.status) {
            if during {
                s.errors_during += 1;
            } else if after {
                s.errors_after += 1;
            }
        }
        match a.status {
            0 => s.no_answer += 1,
            500 => s.internal_500 += 1,
            502 | 504 => s.proxy_errors += 1,
            503 | 429 if !a.retry_after => s.unavailable_without_retry_after += 1,
            _ => {}
        }
        if a.status >= 400 || a.status == 0 {
            let code = a.code.clone().unwrap_or_else(|| "-".to_owned());
            *s.codes.entry((a.status, code)).or_default() += 1;
        }
    }

    // Breakers, per instance.
    let mut names: Vec<String> = input
        .recorded
        .breakers
        .iter()
        .filter_map(|b| b.states.as_ref())
        .flat_map(|st| st.iter().map(|(n, _)| n.clone()))
        .collect();
    names.sort();
    names.dedup();
    let instances = input
        .recorded
        .breakers
        .iter()
        .map(|b| b.instance + 1)
        .max()
        .unwrap_or(0);
    for i in 0..instances {
        let samples: Vec<&BreakerSample> = input
            .recorded
            .breakers
            .iter()
            .filter(|b| b.instance == i)
            .collect();
        for name in &names {
            let opened = samples
                .iter()
                .filter(|b| b.at_ms >= w.start_ms)
                .find(|b| matches!(state_of(b, name), Some("open" | "half_open")))
                .map(|b| (b.at_ms - w.start_ms) / 1000.0);
            let last = samples.iter().rev().find(|b| b.states.is_some());
            let open_at_end = last.is_some_and(|b| state_of(b, name) != Some("closed"));
            // The first answered poll at or after the return from which on
            // every answered poll says closed.
            let mut closed_after = None;
            if opened.is_some() && !open_at_end {
                let mut candidate = None;
                for b in samples.iter().filter(|b| b.states.is_some()) {
                    match state_of(b, name) {
                        Some("closed") => {
                            if candidate.is_none() {
                                candidate = Some(b.at_ms);
                            }
                        }
                        _ => candidate = None,
                    }
                }
                closed_after = candidate.map(|c| ((c - w.returned_ms) / 1000.0).max(0.0));
            }
            if opened.is_some() || open_at_end {
                s.tracks.push(BreakerTrack {
                    instance: i,
                    name: name.clone(),
                    opened_after_s: opened,
                    closed_after_return_s: closed_after,
                    open_at_end,
                });
            }
            if open_at_end {
                s.breakers_open_at_end.push(format!("#{i} {name}"));
            }
        }
    }
    let relevant: Vec<&BreakerTrack> = s
        .tracks
        .iter()
        .filter(|t| input.fault.breaker().is_none_or(|b| b == t.name))
        .collect();
    s.time_to_open_s = relevant
        .iter()
        .filter_map(|t| t.opened_after_s)
        .min_by(f64::total_cmp);
    s.breaker_never_closed = relevant.iter().any(|t| t.open_at_end);
    s.time_to_close_s = relevant
        .iter()
        .filter_map(|t| t.closed_after_return_s)
        .max_by(f64::total_cmp);
    s.slow_heal = s.time_to_close_s.is_some_and(|t| t > HEAL_BAR_S);

    // Backlog.
    let total = |b: &super::monitor::BacklogSample| b.unpublished.max(0) + b.data_platform.max(0);
    let backlog = &input.recorded.backlog;
    s.backlog_before = backlog
        .iter()
        .filter(|b| b.at_ms < w.start_ms && b.at_ms >= input.origin_ms)
        .map(total)
        .max()
        .unwrap_or(0);
    s.backlog_peak = backlog
        .iter()
        .filter(|b| b.at_ms >= w.start_ms)
        .map(total)
        .max()
        .unwrap_or(0);
    s.drain_s = backlog
        .iter()
        .filter(|b| b.at_ms >= w.returned_ms)
        .find(|b| total(b) <= s.backlog_before)
        .map(|b| (b.at_ms - w.returned_ms) / 1000.0);
    s.backlog_end = backlog.last().map(|b| (b.unpublished, b.data_platform));

    s.rules_failed = input.rules.iter().filter(|r| r.failed()).count();
    s.rules_held = input
        .rules
        .iter()
        .filter(|r| r.outcome == RuleOutcome::Held)
        .count();
    s.acks_failed = input.acks.iter().filter(|a| a.failed()).count();
    s.delivery_checked = !input.delivery.is_empty();
    s.delivery_failed = input.delivery.iter().filter(|d| d.failed()).count();
    s
}

impl Input {
    pub fn chart(&self, _s: &Summary) -> Chart<'_> {
        let secs = |ms: f64| (ms - self.origin_ms) / 1000.0;
        Chart {
            title: format!(
                "chaos {}: {}",
                self.fault.name(),
                self.started.replace('T', " ")
            ),
            answers: &self.answers,
            breakers: &self.recorded.breakers,
            origin_ms: self.origin_ms,
            end_s: secs(
                self.recorded
                    .breakers
                    .last()
                    .map(|b| b.at_ms)
                    .unwrap_or(self.load_end_ms)
                    .max(self.load_end_ms),
            ),
            fault_s: (secs(self.window.start_ms), secs(self.window.end_ms)),
            returned_s: Some(secs(self.window.returned_ms)),
            instances: 2,
        }
    }
}

pub(super) fn secs(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.2} s"))
        .unwrap_or_else(|| "–".to_owned())
}

pub(super) fn to_open_text(s: &Summary) -> String {
    match s.time_to_open_s {
        Some(t) => format!("{t:.2} s"),
        None => "did not open".to_owned(),
    }
}

pub(super) fn to_close_text(s: &Summary) -> String {
    if s.breaker_never_closed {
        return "not closed".to_owned();
    }
    match s.time_to_close_s {
        Some(t) => format!("{t:.2} s"),
        None => "–".to_owned(),
    }
}

pub(super) fn rules_text(s: &Summary) -> String {
    let events = if !s.delivery_checked {
        ""
    } else if s.delivery_failed == 0 {
        ", every event delivered"
    } else {
        ", **events undelivered**"
    };
    if s.rules_failed == 0 && s.acks_failed == 0 {
        format!("{} held, acks in PG{events}", s.rules_held)
    } else {
        format!(
            "{} broke, {} ack check(s) failed{events}",
            s.rules_failed, s.acks_failed
        )
    }
}

pub fn verdict_lines(s: &Summary) -> Vec<String> {
    let mut out = vec![format!(
        "{} answers; errors during {} / after {}; 500s {}; breaker open after {}, closed {} after the dependency returned; backlog drained in {}",
        s.total,
        s.errors_during,
        s.errors_after,
        s.internal_500,
        to_open_text(s),
        to_close_text(s),
        secs(s.drain_s)
    )];
    if s.passed() {
        out.push("PASS".to_owned());
    } else {
        out.push(format!("FAIL: {}", s.why().join("; ")));
    }
    out
}

pub fn render(input: &Input, s: &Summary, svg_name: &str) -> String {
    let w = &input.window;
    let rel = |ms: f64| (ms - input.origin_ms) / 1000.0;
    let t = &input.timing;
    let mut o = String::new();
    let _ = writeln!(o, "# Chaos: {} ({})\n", input.fault.name(), input.started);
    let _ = writeln!(
        o,
        "**{}.** {}\n",
        if s.passed() { "PASS" } else { "FAIL" },
        if s.passed() {
            format!(
                "Every rule held, every acknowledged write is in PostgreSQL, no answer was a 500, and every breaker was closed at the end{}{}.",
                if s.time_to_close_s.is_some() {
                    format!(", within {HEAL_BAR_S} s of its dependency's return")
                } else {
                    String::new()
                },
                if s.delivery_checked {
                    "; every event was published and applied by every consumer group"
                } else {
                    ""
                }
            )
        } else {
            s.why().join("; ")
        }
    );
    let _ = writeln!(o, "Fault: {}.\n", input.fault.what());
    let _ = writeln!(o, "![timeline]({svg_name})\n");
    let _ = writeln!(o, "## Setup\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| command | `{}` |", input.command);
    let _ = writeln!(o, "| server | {} |", input.server);
    let _ = writeln!(
        o,
        "| deployment | two instances behind nginx; {} and Redis of the run's own on free loopback ports; {}local alert webhook and data-platform receiver |",
        input.pg_version,
        input
            .broker
            .as_ref()
            .map(|b| format!("Kafka mode: {b}, events relayed through it to three consumer groups; "))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "| load | {} s: product reads {}/s and order + pay {}/s throughout; at {} s a coupon burst ({} VUs, {} coupons) and a flash sale ({} VUs, {} units, order + pay) |",
        t.total_s,
        t.read_rate,
        t.order_rate,
        t.fault_at_s,
        t.burst_vus,
        t.burst_vus / 2,
        t.sale_vus,
        (t.sale_vus / 3).max(1)
    );
    let _ = writeln!(
        o,
        "| data | {} users (1 000 000 each), {} products × 50 units |",
        t.users, t.products
    );
    let _ = writeln!(
        o,
        "| form | {} |",
        if input.short { "short (CI)" } else { "full" }
    );
    let _ = writeln!(o, "| run files | `{}` |", input.run_dir);
    let _ = writeln!(
        o,
        "| took | {:.1} min (k6 exit {}) |\n",
        input.minutes,
        input
            .k6_exit
            .map_or_else(|| "killed".to_owned(), |c| c.to_string())
    );

    let _ = writeln!(o, "## Timeline (seconds since the load's first request)\n");
    let _ = writeln!(o, "| t | what |\n|---|---|");
    let mut events: Vec<(f64, String)> = w
        .steps
        .iter()
        .map(|(at, text)| (rel(*at), text.clone()))
        .collect();
    events.push((
        t.fault_at_s + 0.3,
        "coupon burst and flash sale start".to_owned(),
    ));
    for a in &input.alerts {
        let inst = a.path.rsplit('/').next().unwrap_or("?");
        let text = serde_json::from_str::<serde_json::Value>(&a.body)
            .ok()
            .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| a.body.clone());
        let at_ms = a.at.as_secs_f64() * 1000.0;
        events.push((rel(at_ms), format!("alert from #{inst}: {text}")));
    }
    for tr in &s.tracks {
        if let Some(x) = tr.opened_after_s {
            events.push((
                rel(w.start_ms) + x,
                format!("poll: #{} `{}` seen open", tr.instance, tr.name),
            ));
        }
        if let Some(x) = tr.closed_after_return_s {
            events.push((
                rel(w.returned_ms) + x,
                format!("poll: #{} `{}` seen closed for good", tr.instance, tr.name),
            ));
        }
    }
    for (at_ms, text) in &input.prom_events {
        events.push((rel(*at_ms), text.clone()));
    }
    events.push((rel(input.load_end_ms), "load over".to_owned()));
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (at, text) in events {
        let _ = writeln!(o, "| {at:.2} | {text} |");
    }

    let _ = writeln!(o, "\n## Figures\n");
    let _ = writeln!(o, "| figure | value |\n|---|---|");
    let _ = writeln!(
        o,
        "| fault window | {:.2} s → {:.2} s; dependency back at {:.2} s |",
        rel(w.start_ms),
        rel(w.end_ms),
        rel(w.returned_ms)
    );
    let _ = writeln!(
        o,
        "| time to breaker open{} | {} |",
        input
            .fault
            .breaker()
            .map(|b| format!(" (`{b}`)"))
            .unwrap_or_default(),
        to_open_text(s)
    );
    let _ = writeln!(
        o,
        "| time to closed after the dependency returned (slowest instance) | {} |",
        to_close_text(s)
    );
    let _ = writeln!(
        o,
        "| errors (5xx or no answer) of the requests sent during the fault | {} of {} answers |",
        s.errors_during, s.answers_during
    );
    let _ = writeln!(
        o,
        "| errors of the requests sent after the dependency returned | {} of {} answers |",
        s.errors_after, s.answers_after
    );
    let _ = writeln!(o, "| 500 answers | {} |", s.internal_500);
    let _ = writeln!(
        o,
        "| 503/429 without Retry-After | {} |",
        s.unavailable_without_retry_after
    );
    let _ = writeln!(
        o,
        "| 502/504 from nginx | {}{} |",
        s.proxy_errors,
        if s.proxy_errors_expected && s.proxy_errors > 0 {
            " (requests the killed or frozen instance held)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "| no answer (client timeout or reset) | {} |",
        s.no_answer
    );
    let _ = writeln!(
        o,
        "| event backlog (unpublished + data platform) | {} before the fault at most, peak {} after it; back to that level {} after the dependency returned |",
        s.backlog_before,
        s.backlog_peak,
        secs(s.drain_s)
    );
    if s.delivery_checked {
        let _ = writeln!(
            o,
            "| every event published and applied by every consumer group (checked once the load ended) | {} after the load ended |",
            input
                .delivered_after_s
                .map_or_else(|| "**not by the end**".to_owned(), |t| format!("{t:.2} s"))
        );
    }
    if let Some((u, d)) = s.backlog_end {
        let _ = writeln!(
            o,
            "| backlog at the end | {u} unpublished, {d} not yet at the data platform |"
        );
    }
    if let Some((n, left)) = input.leased.filter(|(n, _)| *n > 0) {
        let _ = writeln!(
            o,
            "| of those, leased by a relay | {n} row(s), lease over in {left:.0} s at most: another instance publishes them then (at least once, rule 6) |"
        );
    }
    let _ = writeln!(
        o,
        "| data platform receiver | {} requests received |",
        input.platform_received
    );

    let _ = writeln!(o, "\n### Breakers per instance\n");
    if s.tracks.is_empty() {
        let _ = writeln!(o, "No breaker left `closed` on any instance.");
    } else {
        let _ = writeln!(
            o,
            "| instance | breaker | open after the fault began | closed for good after the dependency returned |\n|---|---|---|---|"
        );
        for tr in &s.tracks {
            let _ = writeln!(
                o,
                "| #{} | `{}` | {} | {} |",
                tr.instance,
                tr.name,
                secs(tr.opened_after_s),
                if tr.open_at_end {
                    "not closed".to_owned()
                } else {
                    secs(tr.closed_after_return_s)
                }
            );
        }
    }
    let _ = writeln!(
        o,
        "\nPolled every 200 ms per instance (`GET /admin/breakers`), so each time is ±0.2 s."
    );

    let _ = writeln!(o, "\n### Answers by status\n");
    let _ = writeln!(o, "| status | answers |\n|---|---|");
    for (status, n) in &s.statuses {
        let label = if *status == 0 {
            "no answer".to_owned()
        } else {
            status.to_string()
        };
        let _ = writeln!(o, "| {label} | {n} |");
    }
    if !s.codes.is_empty() {
        let _ = writeln!(o, "\n| status | error code | answers |\n|---|---|---|");
        for ((status, code), n) in &s.codes {
            let _ = writeln!(o, "| {status} | `{code}` | {n} |");
        }
    }

    let _ = writeln!(
        o,
        "\n## Alerts the webhook received from the instances (breaker transitions), in order\n"
    );
    if input.alerts.is_empty() {
        let _ = writeln!(o, "None.");
    } else {
        let _ = writeln!(o, "| t | instance | text |\n|---|---|---|");
        for a in &input.alerts {
            let inst = a.path.rsplit('/').next().unwrap_or("?");
            let text = serde_json::from_str::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
                .unwrap_or_else(|| a.body.clone());
            let _ = writeln!(
                o,
                "| {:.2} | #{inst} | {} |",
                rel(a.at.as_secs_f64() * 1000.0),
                text.replace('|', "\\|")
            );
        }
    }

    o.push_str(&input.prometheus);

    let _ = writeln!(o, "\n## Rules\n");
    let _ = writeln!(o, "| rule | DESIGN | result |\n|---|---|---|");
    for r in &input.rules {
        let result = match &r.outcome {
            RuleOutcome::Held => "held".to_owned(),
            RuleOutcome::Broken { violations, sample } => {
                format!("**BROKEN** ({violations}): {}", sample.replace('|', "\\|"))
            }
            RuleOutcome::Skipped { missing } => format!("skipped (no {})", missing.join(", ")),
            RuleOutcome::Error(e) => format!("**ERROR**: {}", e.replace('|', "\\|")),
        };
        let _ = writeln!(o, "| {} | {} | {result} |", r.name, r.design_rule);
    }
    for a in &input.acks {
        let result = match &a.missing {
            Ok(0) => "all in PostgreSQL".to_owned(),
            Ok(n) => format!("**{n} missing**"),
            Err(e) => format!("**ERROR**: {e}"),
        };
        let _ = writeln!(
            o,
            "| every 2xx a client was told is in PostgreSQL: {} {} | 5 | {result} |",
            a.acknowledged, a.what
        );
    }
    for d in &input.delivery {
        let result = match &d.missing {
            Ok(0) => "held".to_owned(),
            Ok(n) => format!("**{n} events not there**"),
            Err(e) => format!("**ERROR**: {}", e.replace('|', "\\|")),
        };
        let _ = writeln!(o, "| {} | 6 | {result} |", d.what);
    }
    if let Some(t) = s.time_to_close_s {
        let _ = writeln!(
            o,
            "| every breaker closed within {HEAL_BAR_S} s of its dependency's return, on every instance | issue 26 | {} |",
            if s.slow_heal {
                format!("**{t:.2} s**")
            } else {
                format!("held ({t:.2} s)")
            }
        );
    }
    let _ = writeln!(
        o,
        "| no answer is a 500 | 7 | {} |",
        if s.internal_500 == 0 {
            "held".to_owned()
        } else {
            format!("**{} answers 500**", s.internal_500)
        }
    );
    o
}
