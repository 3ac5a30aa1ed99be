//! Operator alerts for breaker transitions.
//!
//! Alerts leave the request path at once: the breaker hands the text to a
//! bounded channel and a background task posts it, so a slow or dead webhook
//! never slows a request. A full channel drops the alert (it is still logged).

use std::time::Duration;

use tokio::sync::mpsc;

/// Alerts waiting to be posted; more than this in a burst are dropped.
const QUEUE: usize = 64;

/// Where breaker alerts go: a Slack-compatible webhook, or the log only.
#[derive(Clone, Debug, Default)]
pub struct AlertSink {
    tx: Option<mpsc::Sender<String>>,
}

impl AlertSink {
    /// Alerts are only logged (no webhook configured).
    pub fn log_only() -> Self {
        Self { tx: None }
    }

    /// Posts `{"text": …}` to `url`, each POST bounded by `timeout`.
    ///
    /// Spawns the sender task, so it must be called inside a tokio runtime;
    /// outside one it logs a warning and falls back to [`AlertSink::log_only`].
    pub fn webhook(url: impl Into<String>, timeout: Duration) -> Self {
        let url = url.into();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "alert webhook configured outside a tokio runtime; alerts are logged only"
            );
            return Self::log_only();
        };
        let client = match reqwest::Client::builder().timeout(timeout).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "alert webhook client could not be built; alerts are logged only");
                return Self::log_only();
            }
        };
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        handle.spawn(async move {
            while let Some(text) = rx.recv().await {
                let body = serde_json::json!({ "text": text });
                match client.post(&url).json(&body).send().await {
                    Ok(resp) if resp.status().is_success() => {}
                    Ok(resp) => {
                        tracing::warn!(status = %resp.status(), "alert webhook refused the alert")
                    }
                    Err(e) => tracing::warn!(error = %e, "alert webhook unreachable"),
                }
            }
        });
        Self { tx: Some(tx) }
    }

    /// From configuration: a webhook when a URL is set, else log only.
    pub fn from_url(url: Option<&str>) -> Self {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(u) => Self::webhook(u, Duration::from_secs(3)),
            None => Self::log_only(),
        }
    }

    /// Whether alerts are posted somewhere besides the log.
    pub fn is_webhook(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues an alert without waiting; never blocks the caller.
    pub fn send(&self, text: String) {
        tracing::warn!(target: "alert", "{text}");
        if let Some(tx) = &self.tx {
            if let Err(e) = tx.try_send(text) {
                tracing::warn!(error = %e, "alert dropped: webhook queue full or closed");
            }
        }
    }
}
