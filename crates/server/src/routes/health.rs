//! Liveness, readiness (each dependency's state) and Prometheus metrics.

use crate::error::ErrorCode;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;
use std::time::Duration;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// The process answers.
#[utoipa::path(get, path = "/health/live", tag = "ops", operation_id = "live",
    responses((status = 200, body = super::schemas::LiveBody)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when PostgreSQL answers; optional dependencies that are down make
/// it `degraded`, still 200.
#[utoipa::path(get, path = "/health/ready", tag = "ops", operation_id = "ready",
    responses((status = 200, body = super::schemas::ReadyBody, description = "ready or degraded"),
        (status = 503, body = super::schemas::ReadyBody, description = "not_ready: the database is down",
            headers(("Retry-After" = u64, description = "seconds")))))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let db = match tokio::time::timeout(Duration::from_secs(2), commerce_storage::ping(&state.db))
        .await
    {
        Ok(Ok(())) => json!({ "status": "up" }),
        Ok(Err(e)) => json!({ "status": "down", "error": e.to_string() }),
        Err(_) => json!({ "status": "down", "error": "timed out" }),
    };
    let db_up = db["status"] == "up";
    // Redis is optional: its absence degrades, it does not make us unready.
    let redis = match tokio::time::timeout(Duration::from_millis(500), state.redis.ping()).await {
        Ok(Ok(())) => json!({ "status": "up" }),
        Ok(Err(e)) => json!({ "status": "down", "error": e.to_string() }),
        Err(_) => json!({ "status": "down", "error": "timed out" }),
    };
    let redis_up = redis["status"] == "up";
    let (size, available, waiting) = state.pool_status();
    let breakers: serde_json::Map<String, serde_json::Value> = state
        .breakers
        .snapshot()
        .into_iter()
        .map(|b| (b.name.clone(), json!(b.state)))
        .collect();
    // Events waiting too long to leave (broker down, relay stuck) degrade.
    let age_bound = state.settings.events.outbox_degraded_age_secs as f64;
    let (outbox, outbox_lagging) =
        match tokio::time::timeout(Duration::from_secs(1), state.relay.backlog()).await {
            Ok(Ok(b)) => {
                let lagging = b.oldest_age_secs > age_bound;
                (
                    json!({
                        "status": if lagging { "lagging" } else { "ok" },
                        "unpublished": b.unpublished,
                        "oldest_age_secs": b.oldest_age_secs,
                        "degraded_after_secs": age_bound,
                    }),
                    lagging,
                )
            }
            _ => (json!(null), false),
        };
    let kafka = match state.relay.sink() {
        commerce_events::relay::Sink::Kafka(p) => {
            let breaker = state.breakers.kafka().state();
            json!({
                "status": match breaker {
                    commerce_resilience::BreakerState::Closed => "up",
                    commerce_resilience::BreakerState::HalfOpen => "probing",
                    commerce_resilience::BreakerState::Open => "down",
                },
                "last_error": p.errors().report().last,
            })
        }
        commerce_events::relay::Sink::InProcess(_) => json!({ "status": "in_process" }),
    };
    let checks = json!({
        "outbox": outbox,
        "kafka": kafka,
        "database": db,
        "redis": redis,
        "db_pool": { "size": size, "available": available, "waiting": waiting },
        "breakers": breakers,
    });
    if db_up {
        let status = if redis_up && !outbox_lagging && !breakers.values().any(|s| s != "closed") {
            "ready"
        } else {
            "degraded"
        };
        HttpResponse::Ok().json(json!({ "status": status, "checks": checks }))
    } else {
        HttpResponse::build(ErrorCode::NotReady.status())
            .insert_header((actix_web::http::header::RETRY_AFTER, "2"))
            .json(json!({ "status": "unavailable", "code": ErrorCode::NotReady, "message": "database down", "checks": checks }))
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops", operation_id = "metrics",
    responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (size, available, waiting) = state.pool_status();
    metrics::gauge!("db_pool_connections", "state" => "open").set(size as f64);
    metrics::gauge!("db_pool_connections", "state" => "idle").set(available as f64);
    metrics::gauge!("db_pool_connections", "state" => "in_use")
        .set(size.saturating_sub(available) as f64);
    metrics::gauge!("db_pool_waiting").set(waiting as f64);
    state.breakers.publish_gauges();
    // Shared-table gauges are counted here, at scrape, so they are fresh for
    // Prometheus whoever else asks; bounded so a slow database cannot stall
    // the scrape (the gauges then keep their last value).
    let refresh = async {
        let _ = state.relay.backlog().await;
        let _ = state.events.publish_dead_letter_gauge().await;
    };
    // Per-product and per-coupon figures are written at scrape rather than
    // kept as gauges, so a product off the board or a closed coupon leaves
    // the output. Read side by side, each bounded: a slow database leaves
    // them out of this scrape (absent, never a stale value).
    let limit = Duration::from_secs(1);
    let (_, stock, coupons) = futures::join!(
        tokio::time::timeout(limit, refresh),
        tokio::time::timeout(limit, state.catalog.stock_exposition()),
        tokio::time::timeout(limit, state.coupons.issued_exposition()),
    );
    let mut body = state.metrics.render();
    for text in [
        stock.ok().and_then(Result::ok),
        coupons.ok().and_then(Result::ok),
    ]
    .into_iter()
    .flatten()
    {
        if !body.is_empty() && !body.ends_with('\n') {
            body.push('\n');
        }
        body.push_str(&text);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}
