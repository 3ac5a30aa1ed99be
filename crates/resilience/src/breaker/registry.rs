//! All breakers of the process, by name.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::alert::AlertSink;

use super::*;

/// All breakers of the process, by name; cloned into every worker.
#[derive(Clone, Default)]
pub struct BreakerRegistry {
    breakers: Arc<RwLock<BTreeMap<String, Breaker>>>,
    alerts: AlertSink,
}

impl fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

impl BreakerRegistry {
    pub fn new(alerts: AlertSink) -> Self {
        Self {
            breakers: Arc::default(),
            alerts,
        }
    }

    /// A registry holding the [`STANDARD`] breakers with their default configs.
    pub fn with_standard(alerts: AlertSink) -> Self {
        let registry = Self::new(alerts);
        for name in STANDARD {
            registry.register(name, BreakerConfig::for_dependency(name));
        }
        registry
    }

    /// The breaker named `name`, created with `config` if it does not exist
    /// yet (an existing breaker keeps its config and state).
    pub fn register(&self, name: &str, config: BreakerConfig) -> Breaker {
        if let Some(b) = self.get(name) {
            return b;
        }
        let mut map = self
            .breakers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_owned())
            .or_insert_with(|| {
                // Each transition's series exists from the start (at 0), so
                // the first one is an increase Prometheus sees and the
                // dashboard's panel has a line before anything has broken.
                for to in [BreakerState::Open, BreakerState::HalfOpen, BreakerState::Closed] {
                    metrics::counter!("breaker_transitions_total", "name" => name.to_owned(), "to" => to.as_str())
                        .increment(0);
                }
                Breaker::new(name, config, self.alerts.clone())
            })
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<Breaker> {
        self.breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The breaker named `name`, created with its default config if missing.
    pub fn breaker(&self, name: &str) -> Breaker {
        self.register(name, BreakerConfig::for_dependency(name))
    }

    pub fn redis(&self) -> Breaker {
        self.breaker(REDIS)
    }

    pub fn kafka(&self) -> Breaker {
        self.breaker(KAFKA)
    }

    pub fn data_platform(&self) -> Breaker {
        self.breaker(DATA_PLATFORM)
    }

    pub fn notification(&self) -> Breaker {
        self.breaker(NOTIFICATION)
    }

    /// Every breaker, sorted by name.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        let map = self.breakers.read().unwrap_or_else(PoisonError::into_inner);
        map.values().map(Breaker::snapshot).collect()
    }

    /// Re-publishes every `breaker_state` gauge (see [`Breaker::publish_gauge`]).
    pub fn publish_gauges(&self) {
        let map = self.breakers.read().unwrap_or_else(PoisonError::into_inner);
        map.values().for_each(Breaker::publish_gauge);
    }

    /// The body of `GET /admin/breakers`.
    pub fn report(&self) -> BreakersReport {
        BreakersReport {
            breakers: self.snapshot(),
        }
    }

    /// Applies an operator action and returns the breaker's new snapshot.
    pub fn control(
        &self,
        name: &str,
        action: BreakerAction,
    ) -> Result<BreakerSnapshot, UnknownBreaker> {
        let breaker = self
            .get(name)
            .ok_or_else(|| UnknownBreaker(name.to_owned()))?;
        match action {
            BreakerAction::ForceOpen => breaker.force_open(),
            BreakerAction::ForceClose => breaker.force_close(),
            BreakerAction::Reset => breaker.reset(),
        }
        Ok(breaker.snapshot())
    }
}
