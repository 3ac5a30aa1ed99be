//! Circuit breakers, one per dependency, shared by every worker.
//!
//! failsafe's [`StateMachine`] decides when to open and for how long. Around it
//! this module adds what failsafe lacks: a readable state (tracked through its
//! [`Instrument`] hooks, as it has no getter), a bound on concurrent half-open
//! probes (failsafe lets every caller through), a timeout applied inside the
//! breaker (so slow calls count as failures), failure classification (a "sold
//! out" answer is not an outage), manual overrides, metrics and alerts.
//!
//! Every interaction with the state machine happens under one small mutex (the
//! gate), so the hooks observe transitions in order and the state read right
//! after a call is the state that call produced.
//!
//! The module's files, one job each: `config` (names and settings), `state`
//! (what operators see), `classify` (errors, call results, fallbacks),
//! `control` (manual overrides), `registry` (every breaker of the process);
//! the state machine wrapper itself is here.

mod classify;
mod config;
mod control;
mod registry;
mod state;

pub use classify::{CallError, Classify, Fallback};
pub use config::*;
pub use control::{BreakerAction, UnknownAction, UnknownBreaker};
pub use registry::BreakerRegistry;
pub use state::{BreakerSnapshot, BreakerState, BreakersReport};

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use failsafe::failure_policy::{consecutive_failures, ConsecutiveFailures};
use failsafe::{Instrument, StateMachine};

use crate::alert::AlertSink;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forced {
    No,
    Open,
    Closed,
}

/// What failsafe's hooks told us, plus the override.
#[derive(Debug)]
struct Track {
    /// failsafe's own state.
    raw: BreakerState,
    open_until: Option<Instant>,
    open_until_utc: Option<DateTime<Utc>>,
    /// Bumped on every transition, so results of calls admitted before it
    /// are not fed to the new state (a late success must not close a breaker
    /// that opened after the call started).
    generation: u64,
    forced: Forced,
}

impl Track {
    fn effective(&self) -> BreakerState {
        match self.forced {
            Forced::No => self.raw,
            Forced::Open => BreakerState::Open,
            Forced::Closed => BreakerState::Closed,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Exponential backoff that remembers the last delay it handed out, since
/// failsafe's `on_open` hook does not say how long the breaker stays open.
#[derive(Debug, Clone)]
struct RecordingBackoff {
    next: Duration,
    max: Duration,
    last_micros: Arc<AtomicU64>,
}

impl Iterator for RecordingBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = d.saturating_mul(2).min(self.max);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.last_micros.store(micros, Ordering::SeqCst);
        Some(d)
    }
}

/// failsafe's instrument: records raw transitions only. Reporting (metrics,
/// logs, alerts) is done by the breaker, which sees the override too.
#[derive(Clone)]
struct Hooks {
    track: Arc<Mutex<Track>>,
    last_micros: Arc<AtomicU64>,
    /// Transitions to open since start (see [`Breaker::openings`]).
    openings: Arc<AtomicU64>,
}

impl Hooks {
    fn set(&self, raw: BreakerState) {
        let mut t = lock(&self.track);
        t.raw = raw;
        t.generation += 1;
        if raw == BreakerState::Open {
            self.openings.fetch_add(1, Ordering::SeqCst);
            let delay = Duration::from_micros(self.last_micros.load(Ordering::SeqCst));
            t.open_until = Some(Instant::now() + delay);
            t.open_until_utc = chrono::Duration::from_std(delay)
                .ok()
                .map(|d| Utc::now() + d);
        } else {
            t.open_until = None;
            t.open_until_utc = None;
        }
    }
}

impl Instrument for Hooks {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        self.set(BreakerState::Open);
    }

    fn on_half_open(&self) {
        self.set(BreakerState::HalfOpen);
    }

    fn on_closed(&self) {
        self.set(BreakerState::Closed);
    }
}

type Machine = StateMachine<ConsecutiveFailures<RecordingBackoff>, Hooks>;

struct Inner {
    name: Arc<str>,
    config: BreakerConfig,
    machine: Machine,
    track: Arc<Mutex<Track>>,
    /// Serialises every state-machine interaction; see the module docs.
    gate: Mutex<()>,
    probes: AtomicUsize,
    openings: Arc<AtomicU64>,
    /// Whether a recovery watch runs (see [`Breaker::claim_recovery_watch`]).
    watching: AtomicBool,
    successes: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
    alerts: AlertSink,
}

/// A circuit breaker for one dependency. Clones share the same state.
#[derive(Clone)]
pub struct Breaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    Normal,
    Probe,
    /// Forced closed: the state machine is bypassed entirely.
    Passthrough,
}

/// Leave to make one call; a probe slot is returned on drop, also when the
/// caller's future is cancelled.
struct Permit<'a> {
    inner: &'a Inner,
    generation: u64,
    kind: PermitKind,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.kind == PermitKind::Probe {
            self.inner.probes.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Timeout,
}

impl Breaker {
    /// A breaker with its own state; prefer [`BreakerRegistry::register`] so
    /// operators can see it.
    pub fn new(name: impl Into<String>, mut config: BreakerConfig, alerts: AlertSink) -> Self {
        // With no probe slot a breaker could never close again.
        config.half_open_max_probes = config.half_open_max_probes.max(1);
        let name: Arc<str> = Arc::from(name.into());
        let last_micros = Arc::new(AtomicU64::new(0));
        let track = Arc::new(Mutex::new(Track {
            raw: BreakerState::Closed,
            open_until: None,
            open_until_utc: None,
            generation: 0,
            forced: Forced::No,
        }));
        let backoff = RecordingBackoff {
            next: config.open_for,
            max: config.max_open_for.max(config.open_for),
            last_micros: last_micros.clone(),
        };
        let policy = consecutive_failures(config.failure_threshold.max(1), backoff);
        let openings = Arc::new(AtomicU64::new(0));
        let machine = StateMachine::new(
            policy,
            Hooks {
                track: track.clone(),
                last_micros,
                openings: openings.clone(),
            },
        );
        metrics::gauge!("breaker_state", "name" => name.clone()).set(BreakerState::Closed.gauge());
        Self {
            inner: Arc::new(Inner {
                name,
                config,
                machine,
                track,
                gate: Mutex::new(()),
                probes: AtomicUsize::new(0),
                openings,
                watching: AtomicBool::new(false),
                successes: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                alerts,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }

    /// Current state as operators see it (overrides included).
    pub fn state(&self) -> BreakerState {
        lock(&self.inner.track).effective()
    }

    /// The state the next call would meet. An open breaker whose open period
    /// is over turns half-open here, as a call would turn it: failsafe moves
    /// only when asked, so a caller that checks [`Breaker::state`] before
    /// calling would wait for an open breaker forever. Takes no probe slot.
    pub fn state_for_call(&self) -> BreakerState {
        let inner = &*self.inner;
        let _gate = lock(&inner.gate);
        let (forced, before) = {
            let t = lock(&inner.track);
            (t.forced, t.effective())
        };
        if forced == Forced::No {
            self.ask_machine(before);
        }
        lock(&inner.track).effective()
    }

    /// Asks failsafe whether a call may go, which is what moves an open
    /// breaker whose period is over to half-open; reports that move. Call
    /// under the gate, with the state seen before.
    fn ask_machine(&self, before: BreakerState) -> bool {
        let permitted = self.inner.machine.is_call_permitted();
        self.report(before, "open period over, probing");
        permitted
    }

    /// Sets the `breaker_state` gauge to the current state; for a metrics
    /// recorder installed after the breaker was built.
    pub fn publish_gauge(&self) {
        metrics::gauge!("breaker_state", "name" => self.inner.name.clone())
            .set(self.state().gauge());
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let (state, open_until) = {
            let t = lock(&self.inner.track);
            let state = t.effective();
            let until = if t.forced == Forced::No && state == BreakerState::Open {
                t.open_until_utc
            } else {
                None
            };
            (state, until)
        };
        BreakerSnapshot {
            name: self.inner.name.to_string(),
            state,
            successes: self.inner.successes.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            rejected: self.inner.rejected.load(Ordering::Relaxed),
            open_until,
        }
    }

    /// Runs `fut` through the breaker with `timeout` (or the configured
    /// default); errors are classified by their [`Classify`] impl.
    pub async fn call<T, E, F>(&self, timeout: Option<Duration>, fut: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
        E: Classify,
    {
        self.call_classified(timeout, fut, |e: &E| e.is_failure())
            .await
    }

    /// Like [`Breaker::call`], with the caller saying which errors are
    /// failures of the dependency (`true`) and which are business outcomes.
    pub async fn call_classified<T, E, F, C>(
        &self,
        timeout: Option<Duration>,
        fut: F,
        is_failure: C,
    ) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
        C: FnOnce(&E) -> bool,
    {
        let permit = self
            .admit()
            .map_err(|retry_after| CallError::Rejected { retry_after })?;
        let after = timeout.unwrap_or(self.inner.config.call_timeout);
        match tokio::time::timeout(after, fut).await {
            Ok(Ok(v)) => {
                self.record(&permit, Outcome::Success);
                Ok(v)
            }
            Ok(Err(e)) => {
                let outcome = if is_failure(&e) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                self.record(&permit, outcome);
                Err(CallError::Inner(e))
            }
            Err(_) => {
                self.record(&permit, Outcome::Timeout);
                Err(CallError::Timeout { after })
            }
        }
    }

    /// Calls through the breaker and answers `fallback(error)` when the call
    /// is rejected, times out or fails. While open, the fallback runs at once.
    pub async fn call_or<T, E, F, FB>(&self, timeout: Option<Duration>, fut: F, fallback: FB) -> T
    where
        F: Future<Output = Result<T, E>>,
        E: Classify,
        FB: FnOnce(CallError<E>) -> T,
    {
        match self.call(timeout, fut).await {
            Ok(v) => v,
            Err(e) => fallback(e),
        }
    }

    /// [`Breaker::call_or`] with an async fallback (e.g. read from PostgreSQL
    /// when Redis is out).
    pub async fn call_or_else<T, E, F, FB, FF>(
        &self,
        timeout: Option<Duration>,
        fut: F,
        fallback: FB,
    ) -> T
    where
        F: Future<Output = Result<T, E>>,
        E: Classify,
        FB: FnOnce(CallError<E>) -> FF,
        FF: Future<Output = T>,
    {
        match self.call(timeout, fut).await {
            Ok(v) => v,
            Err(e) => fallback(e).await,
        }
    }

    /// How many times the breaker has opened since start (each failed probe
    /// counts again). A client holding connections compares it with the
    /// value it saw when it made its connection: a connection made before
    /// the last opening may hold an error cached from the outage, which a
    /// probe through it would report in microseconds without reaching the
    /// dependency, so it is replaced before use.
    pub fn openings(&self) -> u64 {
        self.inner.openings.load(Ordering::SeqCst)
    }

    /// Leave to run the one recovery watch of this breaker: a task that,
    /// while the breaker is open, checks the dependency outside the call
    /// path and calls [`Breaker::close_after_health_check`] once it answers.
    /// `None` while another watch runs; the guard frees the slot on drop.
    pub fn claim_recovery_watch(&self) -> Option<RecoveryWatch> {
        self.inner
            .watching
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| RecoveryWatch {
                breaker: self.clone(),
            })
    }

    /// Whether the breaker is open or half-open on its own (not forced):
    /// what a recovery watch waits on.
    pub fn is_recovering(&self) -> bool {
        let t = lock(&self.inner.track);
        t.forced == Forced::No && t.raw != BreakerState::Closed
    }

    /// Closes an open or half-open breaker because a health check made
    /// outside the call path (a fresh connection, a trivial command) reached
    /// the dependency: a probe that succeeded, without waiting for the open
    /// period (which doubles on each failed probe) to end. A forced state is
    /// left alone. Returns whether it closed.
    pub fn close_after_health_check(&self) -> bool {
        let inner = &*self.inner;
        let _gate = lock(&inner.gate);
        let before = {
            let t = lock(&inner.track);
            if t.forced != Forced::No || t.raw == BreakerState::Closed {
                return false;
            }
            t.effective()
        };
        // Closed from open or half-open; the backoff starts afresh.
        inner.machine.reset();
        self.report(before, "a health check reached the dependency");
        true
    }

    /// Opens the breaker until [`Breaker::reset`], whatever calls do.
    pub fn force_open(&self) {
        self.set_forced(Forced::Open, "forced open by an operator");
    }

    /// Keeps the breaker closed and lets every call through until reset.
    pub fn force_close(&self) {
        self.set_forced(Forced::Closed, "forced closed by an operator");
    }

    /// Clears any override and starts afresh closed, failure count zeroed.
    pub fn reset(&self) {
        let _gate = lock(&self.inner.gate);
        let before = {
            let mut t = lock(&self.inner.track);
            let before = t.effective();
            t.forced = Forced::No;
            t.generation += 1;
            before
        };
        self.inner.machine.reset();
        // In the closed state a success zeroes the consecutive-failure count,
        // which failsafe's reset leaves alone when already closed.
        self.inner.machine.on_success();
        self.report(before, "reset by an operator");
    }

    fn set_forced(&self, forced: Forced, why: &str) {
        let _gate = lock(&self.inner.gate);
        let before = {
            let mut t = lock(&self.inner.track);
            let before = t.effective();
            t.forced = forced;
            t.generation += 1;
            before
        };
        self.report(before, why);
    }

    /// Decides whether a call may go; `Err(retry_after)` when it may not.
    fn admit(&self) -> Result<Permit<'_>, Duration> {
        let inner = &*self.inner;
        let decision = {
            let _gate = lock(&inner.gate);
            let forced = lock(&inner.track).forced;
            match forced {
                Forced::Open => Err(inner.config.open_for),
                Forced::Closed => Ok((0, PermitKind::Passthrough)),
                Forced::No => {
                    let before = lock(&inner.track).raw;
                    let permitted = self.ask_machine(before);
                    let t = lock(&inner.track);
                    if !permitted {
                        let now = Instant::now();
                        Err(t
                            .open_until
                            .map_or(inner.config.open_for, |u| u.saturating_duration_since(now)))
                    } else if t.raw == BreakerState::HalfOpen {
                        // Only admit() increments, and it holds the gate, so
                        // load-then-add cannot overshoot.
                        if inner.probes.load(Ordering::SeqCst) < inner.config.half_open_max_probes {
                            inner.probes.fetch_add(1, Ordering::SeqCst);
                            Ok((t.generation, PermitKind::Probe))
                        } else {
                            // A probe answers within the call timeout.
                            Err(inner.config.call_timeout)
                        }
                    } else {
                        Ok((t.generation, PermitKind::Normal))
                    }
                }
            }
        };
        match decision {
            Ok((generation, kind)) => Ok(Permit {
                inner,
                generation,
                kind,
            }),
            Err(retry_after) => {
                inner.rejected.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("breaker_calls_total", "name" => inner.name.clone(), "outcome" => "rejected")
                    .increment(1);
                Err(retry_after)
            }
        }
    }

    fn record(&self, permit: &Permit<'_>, outcome: Outcome) {
        let inner = &*self.inner;
        let label = match outcome {
            Outcome::Success => {
                inner.successes.fetch_add(1, Ordering::Relaxed);
                "success"
            }
            Outcome::Failure => {
                inner.failures.fetch_add(1, Ordering::Relaxed);
                "failure"
            }
            Outcome::Timeout => {
                inner.failures.fetch_add(1, Ordering::Relaxed);
                "timeout"
            }
        };
        metrics::counter!("breaker_calls_total", "name" => inner.name.clone(), "outcome" => label)
            .increment(1);
        if permit.kind == PermitKind::Passthrough {
            return;
        }
        let _gate = lock(&inner.gate);
        let (current, before) = {
            let t = lock(&inner.track);
            (t.generation, t.effective())
        };
        if current != permit.generation {
            return;
        }
        match outcome {
            Outcome::Success => inner.machine.on_success(),
            Outcome::Failure | Outcome::Timeout => inner.machine.on_error(),
        }
        let why = match outcome {
            Outcome::Success => "a probe succeeded",
            Outcome::Failure => "calls failed",
            Outcome::Timeout => "calls timed out",
        };
        self.report(before, why);
    }

    /// Publishes a transition if the visible state changed. Called under the
    /// gate, so transitions are reported in order.
    fn report(&self, before: BreakerState, why: &str) {
        let inner = &*self.inner;
        let (after, until) = {
            let t = lock(&inner.track);
            (
                t.effective(),
                t.open_until_utc.filter(|_| t.forced == Forced::No),
            )
        };
        if after == before {
            return;
        }
        let name = inner.name.clone();
        metrics::gauge!("breaker_state", "name" => name.clone()).set(after.gauge());
        metrics::counter!("breaker_transitions_total", "name" => name.clone(), "to" => after.as_str()).increment(1);
        match after {
            BreakerState::Open => {
                tracing::warn!(breaker = %name, from = %before, to = %after, open_until = ?until, reason = why, "circuit breaker opened");
                let until = until.map_or_else(|| "reset".to_owned(), |u| u.to_rfc3339());
                inner.alerts.send(format!(
                    "circuit breaker `{name}` opened ({why}); calls fail fast until {until}"
                ));
            }
            BreakerState::HalfOpen => {
                tracing::info!(breaker = %name, from = %before, to = %after, reason = why, "circuit breaker half-open");
            }
            BreakerState::Closed => {
                tracing::info!(breaker = %name, from = %before, to = %after, reason = why, "circuit breaker closed");
                inner.alerts.send(format!(
                    "circuit breaker `{name}` closed ({why}); calls flow again"
                ));
            }
        }
    }
}

/// The one running recovery watch of a breaker; see
/// [`Breaker::claim_recovery_watch`].
pub struct RecoveryWatch {
    breaker: Breaker,
}

impl Drop for RecoveryWatch {
    fn drop(&mut self) {
        self.breaker.inner.watching.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug)]
    enum TestError {
        Down,
        NotFound,
    }

    impl Classify for TestError {
        fn is_failure(&self) -> bool {
            matches!(self, TestError::Down)
        }
    }

    fn config(threshold: u32, open_ms: u64, probes: usize) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: threshold,
            open_for: Duration::from_millis(open_ms),
            max_open_for: Duration::from_millis(open_ms * 8),
            half_open_max_probes: probes,
            call_timeout: Duration::from_millis(500),
        }
    }

    async fn fail(b: &Breaker) -> Result<(), CallError<TestError>> {
        b.call(None, async { Err::<(), _>(TestError::Down) }).await
    }

    async fn succeed(b: &Breaker) -> Result<(), CallError<TestError>> {
        b.call(None, async { Ok::<(), TestError>(()) }).await
    }

    #[tokio::test]
    async fn opens_after_threshold_consecutive_failures_only() {
        let b = Breaker::new("t", config(3, 10_000, 1), AlertSink::log_only());
        // A success in between resets the consecutive count.
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        succeed(&b).await.unwrap();
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Open);
        let ran = AtomicUsize::new(0);
        let r = b
            .call(None, async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<(), TestError>(())
            })
            .await;
        assert!(matches!(r, Err(CallError::Rejected { .. })));
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "an open breaker must not run the call"
        );
        let s = b.snapshot();
        assert_eq!((s.successes, s.failures, s.rejected), (1, 5, 1));
        assert!(s.open_until.is_some());
    }

    #[tokio::test]
    async fn business_errors_do_not_open() {
        let b = Breaker::new("t", config(2, 10_000, 1), AlertSink::log_only());
        for _ in 0..10 {
            let r = b
                .call(None, async { Err::<(), _>(TestError::NotFound) })
                .await;
            assert!(matches!(r, Err(CallError::Inner(TestError::NotFound))));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().failures, 0);
        // The classifier argument overrides the trait.
        for _ in 0..2 {
            let _ = b
                .call_classified(None, async { Err::<(), _>(TestError::NotFound) }, |_| true)
                .await;
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn slow_calls_time_out_and_count_as_failures() {
        let b = Breaker::new("t", config(2, 10_000, 1), AlertSink::log_only());
        for _ in 0..2 {
            let started = Instant::now();
            let r = b
                .call(Some(Duration::from_millis(20)), async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok::<(), TestError>(())
                })
                .await;
            assert!(matches!(r, Err(CallError::Timeout { .. })));
            assert!(started.elapsed() < Duration::from_secs(1));
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.snapshot().failures, 2);
    }

    async fn probes_admitted(max_probes: usize) -> (usize, usize) {
        let b = Breaker::new("t", config(1, 30, max_probes), AlertSink::log_only());
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let entered = AtomicUsize::new(0);
        let calls = (0..20).map(|_| {
            b.call(None, async {
                entered.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<(), TestError>(())
            })
        });
        let results = futures::future::join_all(calls).await;
        let rejected = results
            .iter()
            .filter(|r| matches!(r, Err(CallError::Rejected { .. })))
            .count();
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a successful probe closes the breaker"
        );
        succeed(&b).await.unwrap();
        (entered.load(Ordering::SeqCst), rejected)
    }

    #[tokio::test]
    async fn half_open_admits_one_probe_by_default() {
        assert_eq!(probes_admitted(1).await, (1, 19));
    }

    #[tokio::test]
    async fn half_open_admits_at_most_three_probes() {
        assert_eq!(probes_admitted(3).await, (3, 17));
    }

    #[tokio::test]
    async fn state_for_call_turns_half_open_once_the_open_period_is_over() {
        let b = Breaker::new("t", config(1, 30, 1), AlertSink::log_only());
        fail(&b).await.unwrap_err();
        assert_eq!(b.state_for_call(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Nothing called: the tracked state alone never moves.
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.state_for_call(), BreakerState::HalfOpen);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // It took no probe slot: the probe itself is still admitted.
        succeed(&b).await.unwrap();
        assert_eq!(b.state_for_call(), BreakerState::Closed);
        b.force_open();
        assert_eq!(b.state_for_call(), BreakerState::Open);
    }

    #[tokio::test]
    async fn cancelled_probe_frees_its_slot() {
        let b = Breaker::new("t", config(1, 20, 1), AlertSink::log_only());
        fail(&b).await.unwrap_err();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let slow = b.call(None, async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), TestError>(())
        });
        // Poll the probe once (admitted), then drop it.
        let _ = tokio::time::timeout(Duration::from_millis(10), slow).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        succeed(&b).await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn failed_probe_reopens_for_longer() {
        let b = Breaker::new("t", config(1, 40, 1), AlertSink::log_only());
        let t0 = Utc::now();
        fail(&b).await.unwrap_err();
        let first = b.snapshot().open_until.unwrap() - t0;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let t1 = Utc::now();
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Open);
        let second = b.snapshot().open_until.unwrap() - t1;
        assert!(first.num_milliseconds() <= 70, "{first}");
        assert!(second.num_milliseconds() >= 75, "backoff doubles: {second}");
        // A success closes and the next opening starts from open_for again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        succeed(&b).await.unwrap();
        let t2 = Utc::now();
        fail(&b).await.unwrap_err();
        assert!((b.snapshot().open_until.unwrap() - t2).num_milliseconds() <= 70);
    }

    #[tokio::test]
    async fn health_check_closes_an_open_breaker_and_counts_openings() {
        let b = Breaker::new("t", config(1, 10_000, 1), AlertSink::log_only());
        assert_eq!(b.openings(), 0);
        assert!(!b.is_recovering());
        assert!(!b.close_after_health_check(), "closed stays closed");
        fail(&b).await.unwrap_err();
        assert_eq!(b.openings(), 1);
        assert!(b.is_recovering());
        let watch = b.claim_recovery_watch();
        assert!(watch.is_some());
        assert!(b.claim_recovery_watch().is_none(), "one watch at a time");
        // Long before the 10 s open period ends.
        assert!(b.close_after_health_check());
        assert_eq!(b.state(), BreakerState::Closed);
        succeed(&b).await.unwrap();
        drop(watch);
        assert!(b.claim_recovery_watch().is_some());
        // The next opening starts from open_for again, and counts.
        let t0 = Utc::now();
        fail(&b).await.unwrap_err();
        assert_eq!(b.openings(), 2);
        assert!((b.snapshot().open_until.unwrap() - t0).num_milliseconds() <= 10_100);
        // An operator's force-open is left alone.
        b.force_open();
        assert!(!b.is_recovering());
        assert!(!b.close_after_health_check());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn late_success_from_before_opening_does_not_close() {
        let b = Breaker::new("t", config(1, 20, 1), AlertSink::log_only());
        let started_closed = b.call(None, async {
            tokio::time::sleep(Duration::from_millis(120)).await;
            Ok::<(), TestError>(())
        });
        let rest = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            fail(&b).await.unwrap_err();
            tokio::time::sleep(Duration::from_millis(40)).await;
            // This probe is still running when the old call succeeds.
            b.call(None, async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok::<(), TestError>(())
            })
            .await
        };
        let check = async {
            tokio::time::sleep(Duration::from_millis(170)).await;
            b.state()
        };
        let (old, probe, state_meanwhile) = tokio::join!(started_closed, rest, check);
        old.unwrap();
        probe.unwrap();
        assert_eq!(state_meanwhile, BreakerState::HalfOpen);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn force_open_force_close_and_reset() {
        let b = Breaker::new("t", config(2, 10_000, 1), AlertSink::log_only());
        b.force_open();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.snapshot().open_until, None);
        let v = b
            .call_or(None, async { Ok::<_, TestError>("real") }, |_| "fallback")
            .await;
        assert_eq!(v, "fallback");

        b.force_close();
        for _ in 0..10 {
            assert!(matches!(fail(&b).await, Err(CallError::Inner(_))));
        }
        assert_eq!(b.state(), BreakerState::Closed);

        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        succeed(&b).await.unwrap();
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "normal tripping again after reset"
        );
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        // Reset zeroes the consecutive count: one failure does not reopen.
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn call_or_else_runs_async_fallback_when_open() {
        let b = Breaker::new("t", config(1, 10_000, 1), AlertSink::log_only());
        fail(&b).await.unwrap_err();
        let v = b
            .call_or_else(None, async { Ok::<u32, TestError>(1) }, |e| async move {
                assert!(e.is_rejected());
                2
            })
            .await;
        assert_eq!(v, 2);
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        let e = |ms| CallError::<TestError>::Rejected {
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(e(0).retry_after_secs(), 1);
        assert_eq!(e(300).retry_after_secs(), 1);
        assert_eq!(e(4_001).retry_after_secs(), 5);
        assert_eq!(
            CallError::<TestError>::Timeout {
                after: Duration::ZERO
            }
            .retry_after_secs(),
            1
        );
    }

    #[tokio::test]
    async fn snapshot_has_the_admin_shape() {
        let registry = BreakerRegistry::with_standard(AlertSink::log_only());
        let redis = registry.redis();
        redis.force_open();
        let json = serde_json::to_value(registry.report()).unwrap();
        let breakers = json["breakers"].as_array().unwrap();
        let names: Vec<_> = breakers
            .iter()
            .map(|b| b["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["data_platform", "kafka", "notification", "redis"]);
        for b in breakers {
            let mut keys: Vec<_> = b.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            assert_eq!(
                keys,
                [
                    "failures",
                    "name",
                    "open_until",
                    "rejected",
                    "state",
                    "successes"
                ]
            );
        }
        assert_eq!(breakers[3]["state"], "open");
        assert_eq!(breakers[0]["state"], "closed");

        let b = Breaker::new("x", config(1, 10_000, 1), AlertSink::log_only());
        fail(&b).await.unwrap_err();
        let v = serde_json::to_value(b.snapshot()).unwrap();
        let until = v["open_until"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(until).is_ok());
        let b = Breaker::new("y", config(1, 10, 1), AlertSink::log_only());
        fail(&b).await.unwrap_err();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _probe = futures::FutureExt::now_or_never(
            b.call(None, futures::future::pending::<Result<(), TestError>>()),
        );
        // The probe was admitted then dropped; the state stays half-open.
        assert_eq!(
            serde_json::to_value(b.snapshot()).unwrap()["state"],
            "half_open"
        );
    }

    #[test]
    fn registry_control_parses_actions_and_names() {
        let registry = BreakerRegistry::with_standard(AlertSink::log_only());
        let action: BreakerAction = "force-open".parse().unwrap();
        assert_eq!(
            registry.control("kafka", action).unwrap().state,
            BreakerState::Open
        );
        assert_eq!(
            registry
                .control("kafka", "force-close".parse().unwrap())
                .unwrap()
                .state,
            BreakerState::Closed
        );
        assert_eq!(
            registry
                .control("kafka", "reset".parse().unwrap())
                .unwrap()
                .state,
            BreakerState::Closed
        );
        assert!("explode".parse::<BreakerAction>().is_err());
        assert!(registry.control("nope", BreakerAction::Reset).is_err());
        // register() returns the existing breaker, shared state included.
        registry.kafka().force_open();
        assert_eq!(
            registry.register(KAFKA, BreakerConfig::default()).state(),
            BreakerState::Open
        );
    }

    mod metrics_recorder {
        use metrics::{
            Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
            SharedString, Unit,
        };
        use std::collections::HashMap;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};

        /// Keeps every counter and gauge by its rendered key, e.g.
        /// `breaker_calls_total{name=t,outcome=success}`.
        #[derive(Default)]
        pub struct TestRecorder {
            values: Mutex<HashMap<String, Arc<Cell>>>,
        }

        #[derive(Default)]
        pub struct Cell(AtomicU64);

        impl CounterFn for Cell {
            fn increment(&self, value: u64) {
                self.0.fetch_add(value, Ordering::SeqCst);
            }
            fn absolute(&self, value: u64) {
                self.0.store(value, Ordering::SeqCst);
            }
        }

        impl GaugeFn for Cell {
            fn increment(&self, _: f64) {}
            fn decrement(&self, _: f64) {}
            fn set(&self, value: f64) {
                self.0.store(value.to_bits(), Ordering::SeqCst);
            }
        }

        fn render(key: &Key) -> String {
            let labels: Vec<_> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            format!("{}{{{}}}", key.name(), labels.join(","))
        }

        impl TestRecorder {
            fn cell(&self, key: &Key) -> Arc<Cell> {
                let mut v = self.values.lock().unwrap();
                v.entry(render(key)).or_default().clone()
            }

            pub fn counter(&self, key: &str) -> u64 {
                let v = self.values.lock().unwrap();
                v.get(key).map_or(0, |c| c.0.load(Ordering::SeqCst))
            }

            pub fn gauge(&self, key: &str) -> Option<f64> {
                let v = self.values.lock().unwrap();
                v.get(key)
                    .map(|c| f64::from_bits(c.0.load(Ordering::SeqCst)))
            }
        }

        impl Recorder for TestRecorder {
            fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
                Counter::from_arc(self.cell(key))
            }
            fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
                Gauge::from_arc(self.cell(key))
            }
            fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
                Histogram::noop()
            }
        }
    }

    #[test]
    fn exports_state_gauge_call_and_transition_counters() {
        let rec = metrics_recorder::TestRecorder::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(&rec, || {
            rt.block_on(async {
                let b = Breaker::new("m", config(2, 20, 1), AlertSink::log_only());
                assert_eq!(rec.gauge("breaker_state{name=m}"), Some(0.0));
                succeed(&b).await.unwrap();
                fail(&b).await.unwrap_err();
                b.call(Some(Duration::from_millis(5)), async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<(), TestError>(())
                })
                .await
                .unwrap_err();
                assert_eq!(rec.gauge("breaker_state{name=m}"), Some(2.0));
                fail(&b).await.unwrap_err();
                tokio::time::sleep(Duration::from_millis(40)).await;
                let probe = b.call(None, async {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok::<(), TestError>(())
                });
                let gauge_in_half_open = async {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    rec.gauge("breaker_state{name=m}")
                };
                let (probe, half) = tokio::join!(probe, gauge_in_half_open);
                probe.unwrap();
                assert_eq!(half, Some(1.0));
                assert_eq!(rec.gauge("breaker_state{name=m}"), Some(0.0));
            })
        });
        assert_eq!(
            rec.counter("breaker_calls_total{name=m,outcome=success}"),
            2
        );
        assert_eq!(
            rec.counter("breaker_calls_total{name=m,outcome=failure}"),
            1
        );
        assert_eq!(
            rec.counter("breaker_calls_total{name=m,outcome=timeout}"),
            1
        );
        assert_eq!(
            rec.counter("breaker_calls_total{name=m,outcome=rejected}"),
            1
        );
        assert_eq!(rec.counter("breaker_transitions_total{name=m,to=open}"), 1);
        assert_eq!(
            rec.counter("breaker_transitions_total{name=m,to=half_open}"),
            1
        );
        assert_eq!(
            rec.counter("breaker_transitions_total{name=m,to=closed}"),
            1
        );
    }
}
