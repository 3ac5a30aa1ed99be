//! The seed reports' figures (transcribed from the seed reports, the k6 write-ups of the Spring Boot services we compare against), so a
//! report can put ours beside theirs. Times in milliseconds; `None` where the
//! seed did not say.

#[derive(Debug, Clone, Copy)]
pub struct SeedStep {
    /// Our k6 metric (a Trend) this step compares with.
    pub ours: &'static str,
    /// The seed's metric name.
    pub seed: &'static str,
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
pub struct SeedFigures {
    /// Where in the seed the figures come from.
    pub source: &'static str,
    /// The seed's run, in its words.
    pub run: &'static str,
    pub reqs_per_s: Option<f64>,
    pub iterations_per_s: Option<f64>,
    /// Failed requests / all requests.
    pub error_rate: Option<f64>,
    /// Passed checks / all checks.
    pub checks: Option<f64>,
    pub steps: &'static [SeedStep],
    /// Anything else the seed reports that does not fit the columns.
    pub notes: &'static str,
}

const fn step(
    ours: &'static str,
    seed: &'static str,
    avg: f64,
    p50: f64,
    p90: f64,
    p95: f64,
    max: f64,
) -> SeedStep {
    SeedStep {
        ours,
        seed,
        avg: Some(avg),
        p50: Some(p50),
        p90: Some(p90),
        p95: Some(p95),
        max: Some(max),
    }
}

const FLOW_NOTE: &str =
    "Seed 001's flow: sign-up, queue token (polled until active), concert dates, seats, \
    seat hold, payment (Spring Boot, Redis, Kafka, Docker). Ours adds a charge after sign-up \
    (a new user has no balance to pay with); the step names differ, so only all requests compare.";

/// Seed 004's product read (the with-cache run), shared by product-read and
/// product-detail.
const PRODUCT_SOURCE: &str =
    "seed 004, 상품조회 API (with cache; before: 13 209 req/s, p95 24.87 ms)";
const PRODUCT_STEPS: &[SeedStep] = &[step(
    "product_duration",
    "http_req_duration",
    5.56,
    2.69,
    12.64,
    18.42,
    535.77,
)];
const PRODUCT_NOTE: &str =
    "The seed's k6 ran on a bigger machine than our 2 cores, where k6 alone tops out \
    near 14k req/s against a trivial endpoint: compare with the ceiling.";

const TABLE: &[(&str, SeedFigures)] = &[
    ("charge", SeedFigures {
            source: "seed 003, 시나리오 2 (충전 → 잔액조회)",
            run: "100 VUs for 2m0s: 6 110 requests, 3 055 iterations (3.0–5.0 s each)",
            reqs_per_s: Some(49.595797),
            iterations_per_s: Some(24.797899),
            error_rate: Some(0.0),
            checks: Some(1.0),
            steps: &[
                step("charge_duration", "charge_response_time", 7.608794, 7.4669, 8.7065, 9.12313, 28.759),
                step("balance_duration", "balance_response_time", 2.527945, 2.5021, 3.093, 3.30287, 14.8177),
                step("http_req_duration", "http_req_duration", 5.06, 5.45, 8.23, 8.71, 28.75),
            ],
            notes: "Charge is guarded by a distributed lock and optimistic locking in the seed.",
    }),
    ("balance-read", SeedFigures {
            source: "no seed; seed 003's balance read (at 49.6 req/s, with think time) as a reference",
            run: "issue 2: 100 VUs for 20 s without think time, beside GET /health/live",
            reqs_per_s: None,
            iterations_per_s: None,
            error_rate: None,
            checks: None,
            steps: &[step("balance_duration", "balance_response_time (003)", 2.527945, 2.5021, 3.093, 3.30287, 14.8177)],
            notes: "The figure that matters here is ours / ceiling throughput.",
    }),
    ("coupon-peak", SeedFigures {
            source: "seed 000, 선착순 쿠폰 발급 Peak Test (before the fix; after: 99 % success, avg 24.35 s, med 23.91 s)",
            run: "500 VUs, one iteration each (issue, sleep 1 s, read own coupons); threshold p95 < 500 ms",
            reqs_per_s: None,
            iterations_per_s: None,
            error_rate: Some(54.0 / 500.0),
            checks: Some(446.0 / 500.0),
            steps: &[SeedStep {
                ours: "http_req_duration",
                seed: "http_req_duration",
                avg: Some(24_770.0),
                p50: Some(24_890.0),
                p90: Some(41_000.0),
                p95: Some(45_000.0),
                max: Some(50_000.0),
            }],
            notes: "Deadlocks on a pessimistic lock (PESSIMISTIC_WRITE) and a 10-connection pool; \
                    p90/p95 are given as \"41–45 s\". The seed's coupon never sold out; ours has half \
                    as many units as VUs, so sold_out answers are correct, not errors.",
    }),
    ("coupon-load", SeedFigures {
            source: "seed 000, 선착순 쿠폰 발급 Load Test",
            run: "ramping 5 → 600 → 0 VUs over 46 s, random user of 10 000",
            reqs_per_s: None,
            iterations_per_s: None,
            error_rate: Some(70.0 / 700.0),
            checks: Some(635.0 / 700.0),
            steps: &[SeedStep {
                ours: "http_req_duration",
                seed: "http_req_duration",
                avg: Some(19_440.0),
                p50: Some(18_960.0),
                p90: None,
                p95: Some(45_000.0),
                max: Some(45_000.0),
            }],
            notes: "\"about 90 % success, 635 of 700\"; p90/p95 \"close to 45 s\".",
    }),
    ("payment-load", SeedFigures {
            source: "seed 000, 주문 결제 Load Test (plan only)",
            run: "1 000 users per second pay an order (read the order, sleep 1 s, pay)",
            reqs_per_s: None,
            iterations_per_s: None,
            error_rate: None,
            checks: None,
            steps: &[],
            notes: "The seed gives no measured figures, only the goal: 500 TPS per instance with 2 \
                    instances (1 000 payments per second in all).",
    }),
    ("flow-load", SeedFigures {
            source: "seed 001, Load Test",
            run: "15 s → 150 VUs, 15 s at 150, 15 s → 0: 5 953 requests, 1 189 iterations",
            reqs_per_s: Some(122.162146),
            iterations_per_s: Some(24.399595),
            error_rate: Some(0.0),
            checks: Some(1.0),
            steps: &[step("http_req_duration", "http_req_duration", 6.56, 4.97, 11.68, 16.07, 110.93)],
            notes: FLOW_NOTE,
    }),
    ("endurance", SeedFigures {
            source: "seed 001, Endurance Test",
            run: "150 VUs for 4 min (15 s ramps): 47 473 requests, 9 461 iterations",
            reqs_per_s: Some(165.632751),
            iterations_per_s: Some(33.00932),
            error_rate: Some(0.0),
            checks: Some(1.0),
            steps: &[step("http_req_duration", "http_req_duration", 10.37, 5.05, 18.07, 27.44, 802.04)],
            notes: FLOW_NOTE,
    }),
    ("stress", SeedFigures {
            source: "seed 001, Stress Test",
            run: "+100 VUs every 20 s to 600: 52 635 requests, 10 365 iterations; dial i/o timeouts from 600 VUs",
            reqs_per_s: Some(352.425484),
            iterations_per_s: Some(69.400402),
            error_rate: Some(11.0 / 52_635.0),
            checks: Some(52_624.0 / 52_635.0),
            steps: &[step("http_req_duration", "http_req_duration", 9.52, 3.2, 16.6, 37.3, 522.73)],
            notes: FLOW_NOTE,
    }),
    ("spike", SeedFigures {
            source: "seed 001, Peak Test",
            run: "30 VUs, spikes to 600 (5 s) twice: 18 644 requests, 3 704 iterations",
            reqs_per_s: Some(347.195976),
            iterations_per_s: Some(68.97736),
            error_rate: Some(0.0),
            checks: Some(1.0),
            steps: &[step("http_req_duration", "http_req_duration", 4.77, 1.94, 6.05, 14.01, 214.08)],
            notes: FLOW_NOTE,
    }),
    ("queue-poll", SeedFigures {
            source: "seed 002, 적합한 대기열 구하기 (final run, n = 15 s)",
            run: "stages of 30 s up to 6 500 VUs, each polling every 15 s (3 CPUs, 2 GB)",
            reqs_per_s: Some(400.0),
            iterations_per_s: None,
            error_rate: None,
            checks: None,
            steps: &[SeedStep {
                ours: "queue_poll_duration",
                seed: "queue poll",
                avg: None,
                p50: Some(6.53),
                p90: Some(8.69),
                p95: Some(10.01),
                max: Some(290.60),
            }],
            notes: "req/s is the seed's \"about 400 TPS\" at 6 000 VUs. With n = 10 s the seed's \
                    p50 was 2.03 s and max 60 s.",
    }),
    ("contention", SeedFigures {
            source: "seed 003, 시나리오 1 (1 000 VUs, pairs racing for one seat)",
            run: "1 000 VUs, one iteration each (5 requests): 5 000 requests in 13.2 s; 501 bookings won, 499 refused",
            reqs_per_s: Some(380.024623),
            iterations_per_s: Some(76.004925),
            error_rate: Some(0.10),
            checks: Some(0.90),
            steps: &[
                step("order_duration", "book_response_time", 1381.845526, 1614.74345, 1792.065, 2009.816495, 3068.0992),
                step("product_duration", "seat_response_time", 2338.523624, 2243.4356, 4078.48048, 4312.921055, 4527.0496),
                step("http_req_duration", "http_req_duration", 2090.0, 1760.0, 3910.0, 4510.0, 6440.0),
            ],
            notes: "The seed counts the refused bookings as failed checks and requests (10 %); ours \
                    answers them 409 out_of_stock, a correct answer.",
    }),
    ("product-read", SeedFigures {
            source: PRODUCT_SOURCE,
            run: "100 VUs × 1 000 iterations: 100 000 requests in 5.7 s",
            reqs_per_s: Some(17_506.383703),
            iterations_per_s: Some(17_506.383703),
            error_rate: Some(0.0),
            checks: Some(1.0),
            steps: PRODUCT_STEPS,
            notes: PRODUCT_NOTE,
    }),
    ("product-detail", SeedFigures {
            source: PRODUCT_SOURCE,
            run: "100 VUs × 1 000 iterations: 100 000 requests in 5.7 s (ours differs: 100 VUs for 20 s)",
            reqs_per_s: Some(17_506.383703),
            iterations_per_s: Some(17_506.383703),
            error_rate: Some(0.0),
            checks: Some(1.0),
            steps: PRODUCT_STEPS,
            notes: "The run shape differs from the seed's (constant 100 VUs for 20 s here, \
                    100 VUs × 1 000 iterations there). With the cache off \
                    (--set catalog.detail_cache=false) compare with the seed's before-cache \
                    figures: 13 209 req/s, p95 24.87 ms. As product-read: compare with the ceiling.",
    }),
    ("order", SeedFigures {
            source: "seed 004, 상품 주문 API (after logging fix and cache; before: 13 474 req/s, p95 24.26 ms)",
            run: "100 VUs × 1 000 iterations: 100 000 requests in 5.7 s",
            reqs_per_s: Some(17_626.295048),
            iterations_per_s: Some(17_626.295048),
            error_rate: Some(0.0),
            checks: Some(1.0),
            steps: &[step("order_duration", "http_req_duration", 5.47, 1.23, 12.73, 18.35, 426.74)],
            notes: "As product-read: compare with the ceiling on this machine.",
    }),
    ("flash-sale", SeedFigures {
            source: "no seed; issue 24 (docs/architecture.md, the reference scenarios: flash-sale)",
            run: "one product with 500 units, 2 000 VUs at once from 1 500 users over two instances, one order each",
            reqs_per_s: None,
            iterations_per_s: None,
            error_rate: None,
            checks: None,
            steps: &[],
            notes: "The bar is issue 24's: exactly the units sold, every other answer 409 \
                    out_of_stock (no 503), median order p95 at most 2× the median burst ceiling. \
                    The coupon path meets the same shape (coupon-peak).",
    }),
    ("flash-sale-pay", SeedFigures {
            source: "no seed; issue 24 (docs/architecture.md, the reference scenarios: flash-sale)",
            run: "order then pay at a constant 300 per second for 20 s, every order for the same product",
            reqs_per_s: None,
            iterations_per_s: None,
            error_rate: None,
            checks: None,
            steps: &[],
            notes: "The bar is issue 24's: 0 failed, no dropped iterations, order p95 and pay p95 \
                    under 100 ms.",
    }),
];

pub fn for_scenario(name: &str) -> Option<SeedFigures> {
    TABLE.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::SCENARIOS;

    #[test]
    fn every_scenario_has_seed_figures() {
        for s in SCENARIOS {
            assert!(
                for_scenario(s.name).is_some(),
                "{} has no seed figures",
                s.name
            );
        }
        assert!(for_scenario("nope").is_none());
    }

    #[test]
    fn charge_figures_are_the_reports() {
        let f = for_scenario("charge").unwrap();
        assert_eq!(f.reqs_per_s, Some(49.595797));
        let charge = f
            .steps
            .iter()
            .find(|s| s.ours == "charge_duration")
            .unwrap();
        assert_eq!(charge.p95, Some(9.12313));
    }
}
