//! A chaos run's figures (time to open, time to close after the return, errors
//! during and after, backlog drain) and its verdict, from what the run gathered.

use super::checks::{AckCheck, DeliveryCheck};
use super::faults::FaultWindow;
use super::monitor::{BreakerSample, Recorded};
use super::plan::{Fault, Timing};
use super::stub::Received;
use super::timeline::{self, Answer, Chart};
use crate::rules::{Outcome as RuleOutcome, RuleResult};
use std::collections::BTreeMap;

/// What a run gathered: its figures' and its report's input.
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

/// Issue 26's bar: every breaker closes this soon after its dependency
/// accepts connections again, on every instance.
pub const HEAL_BAR_S: f64 = 3.0;

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

/// The figures of one run, from what it gathered.
pub fn summarise(input: &Input) -> Summary {
    let mut s = Summary {
        proxy_errors_expected: input.fault.proxy_errors_expected(),
        ..Summary::default()
    };
    count_answers(input, &mut s);
    track_breakers(input, &mut s);
    breaker_times(input, &mut s);
    measure_backlog(input, &mut s);

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

/// The answers by status, by error code, and the errors of the requests
/// sent during the fault and after the dependency returned.
fn count_answers(input: &Input, s: &mut Summary) {
    let w = &input.window;
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
}

/// Breakers, per instance: each one the fault opened or left open.
fn track_breakers(input: &Input, s: &mut Summary) {
    let w = &input.window;
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
}

/// The fault's own breaker (every breaker if it has none): the first open,
/// the slowest close after the dependency returned.
fn breaker_times(input: &Input, s: &mut Summary) {
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
}

/// The event backlog: before the fault, its peak, how soon it drained.
fn measure_backlog(input: &Input, s: &mut Summary) {
    let w = &input.window;
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
