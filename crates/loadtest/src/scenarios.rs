//! The scenario table: which k6 script, which seed, which endpoints it needs
//! (the one place that says so) and which data the runner seeds for it. The
//! VU shape itself lives in the script; the runner reads it back, scaled,
//! with `k6 inspect` (see [`Shape`]).

use serde_json::Value;
use std::time::Duration;

/// One HTTP route of the contract (docs/api.md), path parameters as `{…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
}

const fn ep(method: &'static str, path: &'static str) -> Endpoint {
    Endpoint { method, path }
}

/// Routes the runner itself calls while seeding.
pub const MINT_TOKEN: Endpoint = ep("POST", "/api/v1/auth/token");
pub const ADMIN_PRODUCTS: Endpoint = ep("POST", "/admin/products");
pub const ADMIN_COUPONS: Endpoint = ep("POST", "/admin/coupons");
pub const CREATE_ORDER: Endpoint = ep("POST", "/api/v1/orders");

const SIGN_UP: Endpoint = ep("POST", "/api/v1/users");
const BALANCE: Endpoint = ep("GET", "/api/v1/me/balance");
const CHARGE: Endpoint = ep("POST", "/api/v1/me/balance/charge");
const PRODUCTS: Endpoint = ep("GET", "/api/v1/products");
const PRODUCT: Endpoint = ep("GET", "/api/v1/products/{id}");
const ISSUE: Endpoint = ep("POST", "/api/v1/coupons/{id}/issue");
const MY_COUPONS: Endpoint = ep("GET", "/api/v1/me/coupons");
const ORDER: Endpoint = ep("GET", "/api/v1/orders/{id}");
const PAY: Endpoint = ep("POST", "/api/v1/orders/{id}/payment");
const QUEUE_ENTER: Endpoint = ep("POST", "/api/v1/queue/tokens");
const QUEUE_POLL: Endpoint = ep("GET", "/api/v1/queue/tokens/{token}");

/// How many units the scenario's coupon has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponQuantity {
    /// Half the scenario's VUs (a real first-come sale: half are told sold out).
    HalfOfVus,
    Fixed(u64),
}

/// How many units the scenario's one sale product has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleStock {
    /// One unit per `n` VUs at the peak (flash-sale: 2 000 VUs, 500 units),
    /// so a scaled run still sells out and still turns most buyers away.
    PerVus(u64),
    /// At least this many, and never fewer than 1.5× the iterations the
    /// shape runs (flash-sale-pay must not sell out).
    AtLeast(u64),
}

impl SaleStock {
    /// The units for a shape with `peak_vus` VUs at once and
    /// `iterations` iterations (when the shape fixes them).
    /// Whether the scenario's buyers outnumber the units (the product is
    /// meant to sell out, and the rules check it sold exactly its units).
    pub fn sells_out(self) -> bool {
        matches!(self, Self::PerVus(_))
    }

    pub fn units(self, peak_vus: u64, iterations: Option<u64>) -> u64 {
        match self {
            Self::PerVus(n) => peak_vus.div_ceil(n.max(1)).max(1),
            Self::AtLeast(n) => {
                let iterations = iterations.unwrap_or(0);
                n.max(iterations.saturating_add(iterations / 2))
            }
        }
    }
}

/// What the runner seeds beyond the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataNeeds {
    /// Tokens for the seeded users (TOKENS_FILE).
    pub tokens: bool,
    /// The catalog: `products` ids, 50 units each.
    pub products: bool,
    /// Products with one unit each, one per pair of VUs.
    pub contention_products: bool,
    pub coupon: Option<CouponQuantity>,
    /// One pending order per expected iteration.
    pub orders: bool,
    /// One product every VU orders (`sale_product` {id, units}); a burst
    /// scenario gets a fresh one per burst.
    pub sale_product: Option<SaleStock>,
}

const NONE: DataNeeds = DataNeeds {
    tokens: false,
    products: false,
    contention_products: false,
    coupon: None,
    orders: false,
    sale_product: None,
};

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    /// Seed report number (`seeds/00N_*.txt`), or "-" for ours.
    pub seed: &'static str,
    pub script: &'static str,
    pub what: &'static str,
    /// Every route the scenario and its seeding call.
    pub needs: &'static [Endpoint],
    pub data: DataNeeds,
    /// The k6 Trend of the scenario's main step: the latency `all`'s table
    /// puts beside the ceiling and the seed (`http_req_duration` for the
    /// flows, whose steps have no single main one).
    pub headline: &'static str,
}

impl Scenario {
    /// One of seed 001's flows (lib/flow.js), which count `flow_completed`.
    pub fn is_flow(&self) -> bool {
        self.needs == FLOW_NEEDS
    }
}

const FLOW_NEEDS: &[Endpoint] = &[
    ADMIN_PRODUCTS,
    SIGN_UP,
    CHARGE,
    QUEUE_ENTER,
    QUEUE_POLL,
    PRODUCTS,
    PRODUCT,
    CREATE_ORDER,
    PAY,
];
const FLOW_DATA: DataNeeds = DataNeeds {
    products: true,
    ..NONE
};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "coupon-peak",
        seed: "000",
        script: "coupon-peak.js",
        what: "500 VUs at once, one iteration each: issue, sleep 1 s, read own coupons; p95 < 500 ms",
        needs: &[MINT_TOKEN, ADMIN_COUPONS, ISSUE, MY_COUPONS],
        data: DataNeeds { tokens: true, coupon: Some(CouponQuantity::HalfOfVus), ..NONE },
        headline: "issue_duration",
    },
    Scenario {
        name: "coupon-load",
        seed: "000",
        script: "coupon-load.js",
        what: "stages 1s→5, 5s→100, 5s→200, 5s→300, 5s→400, 10s→600, 10s→500, 5s→0; random user",
        needs: &[MINT_TOKEN, ADMIN_COUPONS, ISSUE, MY_COUPONS],
        data: DataNeeds { tokens: true, coupon: Some(CouponQuantity::Fixed(5_000)), ..NONE },
        headline: "issue_duration",
    },
    Scenario {
        name: "payment-load",
        seed: "000",
        script: "payment-load.js",
        what: "1 000 users per second during a sale: read the order, sleep 1 s, pay (20 s)",
        needs: &[MINT_TOKEN, ADMIN_PRODUCTS, CREATE_ORDER, ORDER, PAY],
        data: DataNeeds { tokens: true, products: true, orders: true, ..NONE },
        headline: "pay_duration",
    },
    Scenario {
        name: "flow-load",
        seed: "001",
        script: "flow-load.js",
        what: "sign-up → charge → queue token (poll until active) → browse → stock → order → pay; 150 VUs (15s/15s/15s)",
        needs: FLOW_NEEDS,
        data: FLOW_DATA,
        headline: "http_req_duration",
    },
    Scenario {
        name: "endurance",
        seed: "001",
        script: "endurance.js",
        what: "the 001 flow, 150 VUs for 4 min",
        needs: FLOW_NEEDS,
        data: FLOW_DATA,
        headline: "http_req_duration",
    },
    Scenario {
        name: "stress",
        seed: "001",
        script: "stress.js",
        what: "the 001 flow, +100 VUs every 20 s to 600",
        needs: FLOW_NEEDS,
        data: FLOW_DATA,
        headline: "http_req_duration",
    },
    Scenario {
        name: "spike",
        seed: "001",
        script: "spike.js",
        what: "the 001 flow, 30 ↔ 600 VU spikes",
        needs: FLOW_NEEDS,
        data: FLOW_DATA,
        headline: "http_req_duration",
    },
    Scenario {
        name: "queue-poll",
        seed: "002",
        script: "queue-poll.js",
        what: "up to 6 500 VUs polling the waiting room every 15 s (5.5 min)",
        needs: &[MINT_TOKEN, QUEUE_ENTER, QUEUE_POLL],
        data: DataNeeds { tokens: true, ..NONE },
        headline: "queue_poll_duration",
    },
    Scenario {
        name: "contention",
        seed: "003",
        script: "contention.js",
        what: "1 000 VUs, pairs of users racing for the same last unit: exactly half win",
        needs: &[MINT_TOKEN, ADMIN_PRODUCTS, PRODUCT, CREATE_ORDER, PAY],
        data: DataNeeds { tokens: true, contention_products: true, ..NONE },
        headline: "order_duration",
    },
    Scenario {
        name: "charge",
        seed: "003",
        script: "charge.js",
        what: "100 VUs: charge then read balance, 2 min",
        needs: &[MINT_TOKEN, CHARGE, BALANCE],
        data: DataNeeds { tokens: true, ..NONE },
        headline: "charge_duration",
    },
    Scenario {
        name: "balance-read",
        seed: "-",
        script: "balance-read.js",
        what: "issue 2: 100 VUs for 20 s reading their balance, beside /health/live",
        needs: &[MINT_TOKEN, BALANCE],
        data: DataNeeds { tokens: true, ..NONE },
        headline: "balance_duration",
    },
    Scenario {
        name: "product-read",
        seed: "004",
        script: "product-read.js",
        what: "100 VUs × 1 000 iterations of product detail",
        needs: &[ADMIN_PRODUCTS, PRODUCT],
        data: DataNeeds { products: true, ..NONE },
        headline: "product_duration",
    },
    Scenario {
        name: "product-detail",
        seed: "004",
        script: "product-detail.js",
        what: "issue 5: 100 VUs for 20 s of product detail, no think time (with and without the detail cache)",
        needs: &[ADMIN_PRODUCTS, PRODUCT],
        data: DataNeeds { products: true, ..NONE },
        headline: "product_duration",
    },
    Scenario {
        name: "order",
        seed: "004",
        script: "order.js",
        what: "100 VUs × 1 000 iterations of order creation",
        needs: &[MINT_TOKEN, ADMIN_PRODUCTS, CREATE_ORDER],
        data: DataNeeds { tokens: true, products: true, ..NONE },
        headline: "order_duration",
    },
    Scenario {
        name: "flash-sale",
        seed: "-",
        script: "flash-sale.js",
        what: "issue 24: one product with 500 units, 2 000 VUs at once from 1 500 users, one order each: exactly 500 sold, the rest 409 out_of_stock",
        needs: &[MINT_TOKEN, ADMIN_PRODUCTS, CREATE_ORDER],
        data: DataNeeds { tokens: true, sale_product: Some(SaleStock::PerVus(4)), ..NONE },
        headline: "order_duration",
    },
    Scenario {
        name: "flash-sale-pay",
        seed: "-",
        script: "flash-sale-pay.js",
        what: "issue 24: order then pay at a constant 300 per second for 20 s, every order for the same product (10 000 units)",
        needs: &[MINT_TOKEN, ADMIN_PRODUCTS, CREATE_ORDER, PAY],
        data: DataNeeds { tokens: true, sale_product: Some(SaleStock::AtLeast(10_000)), ..NONE },
        headline: "order_duration",
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// A scenario's VU shape as k6 reports it (`k6 inspect --execution-requirements`),
/// after the script applied VU_SCALE and DURATION_SCALE.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// The k6 scenario object (`scenarios.main`), nulls removed.
    pub scenario: Value,
    /// k6's total, including graceful stop.
    pub total: Duration,
    pub max_vus: u64,
}

impl Shape {
    pub fn from_inspect(inspect: &Value) -> Result<Self, String> {
        let raw = inspect
            .pointer("/scenarios/main")
            .ok_or("k6 inspect: no scenarios.main (scripts build options with buildOptions)")?;
        let scenario = strip_nulls(raw);
        let total = inspect
            .get("totalDuration")
            .and_then(Value::as_str)
            .and_then(parse_k6_duration)
            .ok_or("k6 inspect: no totalDuration")?;
        let max_vus = inspect.get("maxVUs").and_then(Value::as_u64).unwrap_or(0);
        Ok(Self {
            scenario,
            total,
            max_vus,
        })
    }

    fn executor(&self) -> &str {
        self.scenario
            .get("executor")
            .and_then(Value::as_str)
            .unwrap_or("?")
    }

    fn num(&self, key: &str) -> u64 {
        self.scenario.get(key).and_then(Value::as_u64).unwrap_or(0)
    }

    fn dur(&self, key: &str) -> Option<Duration> {
        self.scenario
            .get(key)
            .and_then(Value::as_str)
            .and_then(parse_k6_duration)
    }

    /// One iteration per VU, all at once: a burst over in a second or two,
    /// whose p95 swings from run to run more than a sustained load's.
    pub fn is_burst(&self) -> bool {
        self.executor() == "per-vu-iterations" && self.num("iterations") <= 1
    }

    /// The most VUs the shape runs at once.
    pub fn peak_vus(&self) -> u64 {
        match self.executor() {
            "ramping-vus" => self
                .scenario
                .get("stages")
                .and_then(Value::as_array)
                .map(|st| {
                    st.iter()
                        .filter_map(|s| s.get("target").and_then(Value::as_u64))
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0)
                .max(self.num("startVUs")),
            "constant-arrival-rate" => self.num("maxVUs"),
            _ => self.num("vus"),
        }
    }

    /// Iterations the shape will run, when it fixes them (iteration and
    /// arrival-rate executors).
    pub fn expected_iterations(&self) -> Option<u64> {
        match self.executor() {
            "per-vu-iterations" => Some(self.num("vus") * self.num("iterations")),
            "shared-iterations" => Some(self.num("iterations")),
            "constant-arrival-rate" => {
                let unit = self
                    .dur("timeUnit")
                    .unwrap_or(Duration::from_secs(1))
                    .as_secs_f64();
                let secs = self.dur("duration")?.as_secs_f64();
                Some((self.num("rate") as f64 * secs / unit.max(0.001)).ceil() as u64)
            }
            _ => None,
        }
    }

    /// One line for the report, e.g. `constant-vus: 100 VUs for 20.4s`.
    pub fn describe(&self) -> String {
        let s = &self.scenario;
        let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
        match self.executor() {
            "constant-vus" => format!(
                "constant-vus: {} VUs for {}",
                self.num("vus"),
                text("duration")
            ),
            "ramping-vus" => {
                let stages: Vec<String> = s
                    .get("stages")
                    .and_then(Value::as_array)
                    .map(|st| {
                        st.iter()
                            .map(|x| {
                                format!(
                                    "{}→{}",
                                    x.get("duration").and_then(Value::as_str).unwrap_or("?"),
                                    x.get("target").and_then(Value::as_u64).unwrap_or(0)
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                format!("ramping-vus: {}", stages.join(", "))
            }
            "per-vu-iterations" => format!(
                "per-vu-iterations: {} VUs × {} iteration(s) (max {})",
                self.num("vus"),
                self.num("iterations"),
                text("maxDuration")
            ),
            "shared-iterations" => format!(
                "shared-iterations: {} iterations over {} VUs",
                self.num("iterations"),
                self.num("vus")
            ),
            "constant-arrival-rate" => format!(
                "constant-arrival-rate: {} iterations per {} for {} ({}–{} VUs)",
                self.num("rate"),
                text("timeUnit"),
                text("duration"),
                self.num("preAllocatedVUs"),
                self.num("maxVUs")
            ),
            other => format!("{other}: {s}"),
        }
    }
}

/// Removes null members (k6 inspect prints every unset field as null; k6
/// rejects some of them when they are fed back as options).
pub fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Parses k6's duration strings: `20.4s`, `2m0s`, `1h2m3.5s`, `500ms`, `1.5µs`.
pub fn parse_k6_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (unit, len) = [
            ("ms", 2),
            ("µs", "µs".len()),
            ("us", 2),
            ("ns", 2),
            ("h", 1),
            ("m", 1),
            ("s", 1),
        ]
        .iter()
        .find(|(u, _)| rest.starts_with(u))
        .map(|(u, l)| (*u, *l))?;
        let secs = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "µs" | "us" => 1e-6,
            _ => 1e-9,
        };
        total += n * secs;
        rest = &rest[len..];
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_scenario_of_the_design_is_listed_once() {
        let names = [
            "coupon-peak",
            "coupon-load",
            "payment-load",
            "flow-load",
            "endurance",
            "stress",
            "spike",
            "queue-poll",
            "contention",
            "charge",
            "product-read",
            "product-detail",
            "order",
            "balance-read",
            "flash-sale",
            "flash-sale-pay",
        ];
        for n in names {
            assert!(find(n).is_some(), "{n} missing");
        }
        assert_eq!(SCENARIOS.len(), names.len());
    }

    #[test]
    fn every_script_exists() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../loadtests/k6");
        for s in SCENARIOS {
            assert!(dir.join(s.script).is_file(), "{} missing", s.script);
        }
        assert!(dir.join("ceiling.js").is_file());
    }

    /// The script and the lib files it imports (`from './lib/x.js'`).
    fn script_with_imports(dir: &std::path::Path, script: &str) -> String {
        let text = std::fs::read_to_string(dir.join(script)).unwrap();
        let mut all = text.clone();
        for line in text.lines() {
            if let Some(rest) = line.split("from './lib/").nth(1) {
                let file = rest.split('\'').next().unwrap();
                all.push_str(&std::fs::read_to_string(dir.join("lib").join(file)).unwrap());
            }
        }
        all
    }

    #[test]
    fn every_headline_is_a_trend_of_its_script() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../loadtests/k6");
        for s in SCENARIOS {
            assert!(s.headline.ends_with("_duration"), "{}", s.name);
            if s.headline == "http_req_duration" {
                continue; // k6's own
            }
            let text = script_with_imports(&dir, s.script);
            assert!(
                text.contains(&format!("new Trend('{}'", s.headline)),
                "{} does not define the Trend {}",
                s.script,
                s.headline
            );
        }
    }

    #[test]
    fn flows_are_the_four_001_scenarios() {
        let flows: Vec<&str> = SCENARIOS
            .iter()
            .filter(|s| s.is_flow())
            .map(|s| s.name)
            .collect();
        assert_eq!(flows, ["flow-load", "endurance", "stress", "spike"]);
    }

    #[test]
    fn sale_stock_scales_with_the_shape() {
        assert_eq!(SaleStock::PerVus(4).units(2000, Some(2000)), 500);
        assert_eq!(SaleStock::PerVus(4).units(201, None), 51);
        assert_eq!(SaleStock::PerVus(4).units(0, None), 1);
        assert_eq!(SaleStock::AtLeast(10_000).units(1500, Some(6000)), 10_000);
        assert_eq!(SaleStock::AtLeast(10_000).units(1500, Some(12_000)), 18_000);
        assert_eq!(SaleStock::AtLeast(10_000).units(1500, None), 10_000);
        assert!(SaleStock::PerVus(4).sells_out());
        assert!(!SaleStock::AtLeast(10_000).sells_out());
        let sale = find("flash-sale").unwrap();
        assert_eq!(sale.data.sale_product, Some(SaleStock::PerVus(4)));
        assert!(
            !sale.data.orders,
            "a burst scenario whose data a burst renews"
        );
    }

    #[test]
    fn durations() {
        let d = |s| parse_k6_duration(s).map(|d| d.as_secs_f64());
        assert_eq!(d("20s"), Some(20.0));
        assert_eq!(d("20.4s"), Some(20.4));
        assert_eq!(d("2m0s"), Some(120.0));
        assert_eq!(d("1h2m3.5s"), Some(3723.5));
        assert_eq!(d("500ms"), Some(0.5));
        assert_eq!(d("0s"), Some(0.0));
        assert_eq!(d("0"), Some(0.0));
        assert_eq!(d(""), None);
        assert_eq!(d("10x"), None);
        assert_eq!(d("s"), None);
    }

    fn inspect(main: Value, total: &str, max_vus: u64) -> Value {
        json!({"scenarios": {"main": main}, "totalDuration": total, "maxVUs": max_vus})
    }

    #[test]
    fn shape_of_constant_vus() {
        let shape = Shape::from_inspect(&inspect(
            json!({"executor": "constant-vus", "vus": 100, "duration": "20.4s", "startTime": null, "exec": "default"}),
            "50.4s",
            100,
        ))
        .unwrap();
        assert_eq!(shape.describe(), "constant-vus: 100 VUs for 20.4s");
        assert_eq!(shape.total, Duration::from_secs_f64(50.4));
        assert_eq!(shape.peak_vus(), 100);
        assert_eq!(shape.expected_iterations(), None);
        assert!(
            shape.scenario.get("startTime").is_none(),
            "nulls are stripped"
        );
    }

    #[test]
    fn shape_of_stages_and_iterations() {
        let ramp = Shape::from_inspect(&inspect(
            json!({"executor": "ramping-vus", "startVUs": 0, "stages": [{"duration": "1s", "target": 5}, {"duration": "10s", "target": 600}, {"duration": "5s", "target": 0}]}),
            "46s",
            600,
        ))
        .unwrap();
        assert_eq!(ramp.describe(), "ramping-vus: 1s→5, 10s→600, 5s→0");
        assert_eq!(ramp.peak_vus(), 600);

        let iters = Shape::from_inspect(&inspect(
            json!({"executor": "per-vu-iterations", "vus": 100, "iterations": 1000, "maxDuration": "10m0s"}),
            "10m30s",
            100,
        ))
        .unwrap();
        assert_eq!(iters.expected_iterations(), Some(100_000));
        assert!(!iters.is_burst());
        assert!(!ramp.is_burst());
        let burst = Shape::from_inspect(&inspect(
            json!({"executor": "per-vu-iterations", "vus": 500, "iterations": 1, "maxDuration": "2m0s"}),
            "2m30s",
            500,
        ))
        .unwrap();
        assert!(burst.is_burst());

        let rate = Shape::from_inspect(&inspect(
            json!({"executor": "constant-arrival-rate", "rate": 1000, "timeUnit": "1s", "duration": "3.4s", "preAllocatedVUs": 1200, "maxVUs": 2500}),
            "33.4s",
            2500,
        ))
        .unwrap();
        assert_eq!(rate.expected_iterations(), Some(3400));
        assert_eq!(rate.peak_vus(), 2500);
    }

    #[test]
    fn inspect_without_scenario_is_an_error() {
        assert!(Shape::from_inspect(&json!({"totalDuration": "1s"})).is_err());
    }
}
