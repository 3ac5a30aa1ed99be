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

/// Units per product, and when they were sold.
type Sales = (Vec<(ProductId, i64)>, chrono::DateTime<chrono::Utc>);

impl RankingConsumer {
    fn parse(event: &Event) -> Result<Sales, HandleError> {
        let paid: OrderPaid = serde_json::from_value(event.payload.clone())
            .map_err(|e| HandleError::Permanent(format!("bad order_paid payload: {e}")))?;
        let sales = paid
            .items
            .iter()
            .map(|i| ProductId::parse(i.product_id).map(|p| (p, i.quantity)))
            .collect::<Result<_, _>>()
            .map_err(|e| HandleError::Permanent(e.to_string()))?;
        Ok((sales, paid.paid_at))
    }

    /// The events' sales grouped by the day they count for (each group
    /// carries one of its sale times).
    fn by_day(events: &[&Event]) -> Result<Vec<Sales>, HandleError> {
        let mut days: std::collections::BTreeMap<chrono::NaiveDate, Sales> = Default::default();
        for e in events {
            let (sales, at) = Self::parse(e)?;
            days.entry(at.date_naive())
                .or_insert_with(|| (Vec::new(), at))
                .0
                .extend(sales);
        }
        Ok(days.into_values().collect())
    }

    fn failed(e: commerce_catalog::CatalogError) -> HandleError {
        if e.is_unavailable() {
            HandleError::Unavailable(Duration::from_secs(1))
        } else {
            HandleError::Permanent(e.to_string())
        }
    }
}

impl Consumer for RankingConsumer {
    fn name(&self) -> &'static str {
        RANKING
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[event::ORDER_PAID]
    }

    /// The sale is counted in the inbox transaction: exactly once.
    fn transactional(&self) -> bool {
        true
    }

    fn handle<'a>(
        &'a self,
        tx: Option<&'a mut AsyncPgConnection>,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let tx =
                tx.ok_or_else(|| HandleError::Retryable("ranking needs its transaction".into()))?;
            self.handle_many(tx, &[event]).await
        })
    }

    /// A relay pass's sales, merged per day: one upsert per day, not one
    /// per event.
    fn handle_many<'a>(
        &'a self,
        tx: &'a mut AsyncPgConnection,
        events: &'a [&'a Event],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            for (sales, at) in Self::by_day(events)? {
                self.catalog
                    .record_sales_in(tx, &sales, at)
                    .await
                    .map_err(Self::failed)?;
            }
            Ok(())
        })
    }

    /// One ranking refresh per day for the lot.
    fn after_commit_many<'a>(
        &'a self,
        events: &'a [&'a Event],
        _concurrency: usize,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // Parsed once already inside the transaction; a bad payload
            // would have failed it, so this is only for safety.
            if let Ok(days) = Self::by_day(events) {
                for (sales, at) in days {
                    let mut products: Vec<ProductId> = sales.iter().map(|(p, _)| *p).collect();
                    products.sort_unstable_by_key(|p| p.get());
                    products.dedup();
                    self.catalog.publish_sales(&products, at).await;
                }
            }
        })
    }

    fn after_commit<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok((sales, at)) = Self::parse(event) {
                let products: Vec<ProductId> = sales.iter().map(|(p, _)| *p).collect();
                self.catalog.publish_sales(&products, at).await;
            }
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
