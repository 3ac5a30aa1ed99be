//! Wiring of the event consumers: the generic HTTP consumers from
//! `commerce-events`, and the ranking consumer that feeds the catalog's
//! popular products (the catalog and orders crates stay unaware of each
//! other; the event is their only link).

use crate::config::Settings;
use commerce_catalog::Catalog;
use commerce_domain::ProductId;
use commerce_events::consumers::{HttpConsumer, DATA_PLATFORM, NOTIFICATION, RANKING};
use commerce_events::{Consumer, Event, HandleError};
use commerce_resilience::BreakerRegistry;
use commerce_storage::outbox::event;
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Records the units of a paid order per product per day.
pub struct RankingConsumer {
    catalog: Catalog,
}

#[derive(serde::Deserialize)]
struct PaidItem {
    product_id: i64,
    quantity: i64,
}

#[derive(serde::Deserialize)]
struct OrderPaid {
    paid_at: chrono::DateTime<chrono::Utc>,
    items: Vec<PaidItem>,
}

impl Consumer for RankingConsumer {
    fn name(&self) -> &'static str {
        RANKING
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[event::ORDER_PAID]
    }

    fn handle<'a>(
        &'a self,
        _tx: Option<&'a mut AsyncPgConnection>,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let paid: OrderPaid = serde_json::from_value(event.payload.clone())
                .map_err(|e| HandleError::Permanent(format!("bad order_paid payload: {e}")))?;
            let sales: Vec<(ProductId, i64)> = paid
                .items
                .iter()
                .map(|i| ProductId::parse(i.product_id).map(|p| (p, i.quantity)))
                .collect::<Result<_, _>>()
                .map_err(|e| HandleError::Permanent(e.to_string()))?;
            self.catalog
                .record_sales(&sales, paid.paid_at)
                .await
                .map_err(|e| {
                    if e.is_unavailable() {
                        HandleError::Unavailable(Duration::from_secs(1))
                    } else {
                        HandleError::Retryable(e.to_string())
                    }
                })
        })
    }
}

/// The consumers every instance runs.
pub fn consumers(
    settings: &Settings,
    breakers: &BreakerRegistry,
    catalog: &Catalog,
) -> Vec<Arc<dyn Consumer>> {
    let timeout = Duration::from_millis(settings.events.http_timeout_ms);
    vec![
        Arc::new(HttpConsumer::new(
            DATA_PLATFORM,
            &[event::ORDER_PAID],
            settings.data_platform.url.clone(),
            breakers.data_platform(),
            timeout,
        )),
        Arc::new(HttpConsumer::new(
            NOTIFICATION,
            &[
                event::ORDER_PAID,
                event::COUPON_ISSUED,
                event::ORDER_CANCELLED,
                event::ORDER_EXPIRED,
            ],
            settings.notification.url.clone(),
            breakers.notification(),
            timeout,
        )),
        Arc::new(RankingConsumer {
            catalog: catalog.clone(),
        }),
    ]
}
