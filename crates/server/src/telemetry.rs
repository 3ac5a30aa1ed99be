//! Logs (text or JSON), the Prometheus recorder, and the per-request
//! middleware that stamps the request id and records route metrics.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;
use tracing_actix_web::RequestId;
use tracing_subscriber::EnvFilter;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request's root span: tracing-actix-web's fields plus the caller
/// (`user_id`, recorded once the bearer token is checked) and the order a
/// money route acts on (`order_id`), so every line logged while serving it
/// can be tied to a user and an order when a timeline is rebuilt from logs.
pub struct RootSpan;

impl tracing_actix_web::RootSpanBuilder for RootSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        tracing_actix_web::root_span!(
            request,
            user_id = tracing::field::Empty,
            order_id = tracing::field::Empty
        )
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Records `field` (`user_id` or `order_id`) on the request's root span.
pub fn record_on_request(field: &'static str, value: i64) {
    tracing::Span::current().record(field, value);
}

/// Installs the global tracing subscriber (once; later calls are no-ops).
pub fn init_tracing(format: &str, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Latency buckets of every `*_seconds` histogram: fine between 1 and
/// 300 ms, where a peak's p95 lies and where load-test reports read them.
const SECONDS_BUCKETS: [f64; 20] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder; several servers in one process
/// (tests) share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("coupon_write_batch_size".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                    )
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was set first; then ours renders empty.
            let _ = metrics::set_global_recorder(recorder);
            describe_metrics();
            handle
        })
        .clone()
}

/// Help text (`# HELP`) of every metric, so `/metrics` passes `promtool
/// check metrics`; each crate describes its own.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "http_requests_total",
        "HTTP requests by method, route pattern and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route pattern."
    );
    describe_gauge!(
        "db_pool_connections",
        "PostgreSQL pool connections by state (open, idle, in_use), read at scrape."
    );
    describe_gauge!(
        "db_pool_waiting",
        "Requests waiting for a PostgreSQL pool connection, read at scrape."
    );
    commerce_catalog::describe_metrics();
    commerce_coupons::describe_metrics();
    commerce_events::describe_metrics();
    commerce_orders::describe_metrics();
    commerce_queue::describe_metrics();
    commerce_resilience::describe_metrics();
    commerce_storage::describe_metrics();
}

/// Adds `x-request-id` to every response and records request metrics by
/// route pattern (not raw path, to keep label cardinality bounded).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req.extensions().get::<RequestId>().map(|id| id.to_string());
    let method = req.method().to_string();
    let mut res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    let elapsed = started.elapsed();
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    // The waiting room slows admission when latency climbs.
    if let Some(state) = res
        .request()
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
    {
        state.queue.observe_latency(elapsed);
    }
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), id);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use actix_web::{test, web, App};
    use std::sync::{Arc, Mutex};
    use tracing_actix_web::TracingLogger;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[actix_web::test]
    async fn lines_logged_while_serving_carry_the_user_and_the_order() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(App::new().wrap(TracingLogger::<RootSpan>::new()).route(
            "/pay",
            web::post().to(|| async {
                record_on_request("user_id", 7);
                record_on_request("order_id", 42);
                tracing::warn!("payment refused");
                "ok"
            }),
        ))
        .await;
        test::call_service(&app, test::TestRequest::post().uri("/pay").to_request()).await;
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("payment refused"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("\"user_id\":7"), "{line}");
        assert!(line.contains("\"order_id\":42"), "{line}");
        assert!(line.contains("request_id"), "{line}");
    }
}
