//! Consumers that call an external HTTP endpoint (data platform,
//! notification webhook), each behind its own circuit breaker.

use crate::{Consumer, Event, HandleError};
use commerce_resilience::{Breaker, CallError};
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use std::time::Duration;

/// Consumer group names (also their inbox tables and breakers).
pub const DATA_PLATFORM: &str = "data_platform";
pub const NOTIFICATION: &str = "notification";
pub const RANKING: &str = "ranking";

/// Why the peer's answer was not a success.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("peer answered {0}")]
    Status(reqwest::StatusCode),
}

impl PeerError {
    /// 5xx, 408, 429 and transport errors mean the peer is failing.
    fn is_failure(&self) -> bool {
        match self {
            Self::Transport(e) => !e.status().is_some_and(|s| s.is_client_error()),
            Self::Status(s) => s.is_server_error() || *s == 408 || *s == 429,
        }
    }
}

/// POSTs each event (JSON, with `Idempotency-Key: <event id>` so the peer
/// can drop the rare duplicate) to a configured URL; with no URL it logs.
pub struct HttpConsumer {
    name: &'static str,
    event_types: &'static [&'static str],
    url: Option<String>,
    client: reqwest::Client,
    breaker: Breaker,
    timeout: Duration,
}

impl HttpConsumer {
    pub fn new(
        name: &'static str,
        event_types: &'static [&'static str],
        url: Option<String>,
        breaker: Breaker,
        timeout: Duration,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            name,
            event_types,
            url,
            client,
            breaker,
            timeout,
        }
    }

    async fn post(&self, url: &str, event: &Event) -> Result<(), HandleError> {
        let request = async {
            let res = self
                .client
                .post(url)
                .header("Idempotency-Key", event.id.to_string())
                .json(event)
                .send()
                .await?;
            if res.status().is_success() {
                Ok(())
            } else {
                Err(PeerError::Status(res.status()))
            }
        };
        let result = self
            .breaker
            .call_classified(Some(self.timeout), request, PeerError::is_failure)
            .await;
        if self.breaker.is_recovering() {
            self.watch_recovery(url);
        }
        match result {
            Ok(()) => Ok(()),
            Err(CallError::Rejected { retry_after }) => Err(HandleError::Unavailable(retry_after)),
            Err(CallError::Timeout { after }) => {
                Err(HandleError::Retryable(format!("timed out after {after:?}")))
            }
            Err(CallError::Inner(e)) if e.is_failure() => {
                Err(HandleError::Retryable(e.to_string()))
            }
            Err(CallError::Inner(e)) => Err(HandleError::Permanent(e.to_string())),
        }
    }
}

/// How often an open breaker's endpoint is asked whether it answers again.
const RECOVERY_CHECK_EVERY: Duration = Duration::from_millis(250);

impl HttpConsumer {
    /// While the breaker is open, asks the endpoint (HEAD, bounded by the
    /// call timeout) every 250 ms and closes the breaker at its first
    /// answer that is not a 5xx: the events waiting behind it flow within a
    /// fraction of a second of the endpoint's return, not after an open
    /// period that doubled with each failed probe. A peer that accepts
    /// connections but answers too slowly stays open. One watch per
    /// breaker; it ends once the breaker is closed (or forced) by any means.
    fn watch_recovery(&self, url: &str) {
        let Some(watch) = self.breaker.claim_recovery_watch() else {
            return;
        };
        let breaker = self.breaker.clone();
        let client = self.client.clone();
        let url = url.to_owned();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let _watch = watch;
            while breaker.is_recovering() {
                tokio::time::sleep(RECOVERY_CHECK_EVERY).await;
                let asked = tokio::time::timeout(timeout, client.head(&url).send()).await;
                if let Ok(Ok(res)) = asked {
                    if !res.status().is_server_error() {
                        if breaker.close_after_health_check() {
                            tracing::info!(breaker = breaker.name(), "endpoint answers again");
                        }
                        return;
                    }
                }
            }
        });
    }
}

impl Consumer for HttpConsumer {
    fn name(&self) -> &'static str {
        self.name
    }

    fn event_types(&self) -> &'static [&'static str] {
        self.event_types
    }

    fn handle<'a>(
        &'a self,
        _tx: Option<&'a mut AsyncPgConnection>,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            match &self.url {
                Some(url) => self.post(url, event).await,
                None => {
                    tracing::info!(consumer = self.name, event = %event.id, event_type = %event.event_type, key = %event.key, "event (no endpoint configured, logged only)");
                    Ok(())
                }
            }
        })
    }
}
