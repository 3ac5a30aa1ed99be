//! The servers' own view of a run: each instance's `/metrics` (Prometheus
//! text) scraped right after the scenario, histograms summed over instances
//! and read as quantiles. Beside k6's figures this splits a latency into the
//! time inside the service and the time in k6, the proxy and the kernel.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// One histogram series (name and labels) summed over instances.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Cumulative counts by upper bound, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// Prometheus' `histogram_quantile`: linear inside the bucket holding
    /// the rank. `None` when empty; the highest finite bound when the rank
    /// falls in `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 || self.buckets.is_empty() {
            return None;
        }
        let rank = q * self.count;
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(upper, cumulative) in &self.buckets {
            if cumulative >= rank {
                if upper.is_infinite() {
                    return Some(lower);
                }
                let inside = cumulative - below;
                let frac = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return Some(lower + (upper - lower) * frac);
            }
            lower = upper;
            below = cumulative;
        }
        Some(lower)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

/// Histograms by `name{labels without le}`.
pub type Histograms = BTreeMap<String, Histogram>;

/// Parses Prometheus text and adds its histograms to `into`.
pub fn add_text(into: &mut Histograms, text: &str) {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let (base, part) = if let Some(b) = name.strip_suffix("_bucket") {
            (b, "bucket")
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, "sum")
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, "count")
        } else {
            continue;
        };
        let mut le = None;
        let mut rest = Vec::new();
        for label in split_labels(labels) {
            match label.strip_prefix("le=") {
                Some(v) => le = Some(v.trim_matches('"').to_owned()),
                None => rest.push(label),
            }
        }
        let key = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}{{{}}}", rest.join(","))
        };
        match part {
            "bucket" => {
                let Some(bound) = le.and_then(|l| parse_bound(&l)) else {
                    continue;
                };
                let h = into.entry(key).or_default();
                match h.buckets.iter_mut().find(|(b, _)| *b == bound) {
                    Some(slot) => slot.1 += value,
                    None => {
                        h.buckets.push((bound, value));
                        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                    }
                }
            }
            // `_sum`/`_count` of a summary or counter with no buckets are
            // kept only if buckets show up for the same key.
            "sum" => into.entry(key).or_default().sum += value,
            _ => into.entry(key).or_default().count += value,
        }
    }
    into.retain(|_, h| !h.buckets.is_empty());
}

fn parse_bound(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

/// Splits `a="x",b="y,z"` on the commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                if i > start {
                    out.push(&s[start..i]);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// Scrapes every instance; an instance that does not answer is left out
/// (named in the returned errors) rather than failing the run.
pub async fn scrape(bases: &[String]) -> (Histograms, Vec<String>) {
    let mut all = Histograms::new();
    let mut errors = Vec::new();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => return (all, vec![e.to_string()]),
    };
    for base in bases {
        let url = format!("{base}/metrics");
        match client.get(&url).send().await {
            Ok(r) => match r.text().await {
                Ok(t) => add_text(&mut all, &t),
                Err(e) => errors.push(format!("{url}: {e}")),
            },
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    (all, errors)
}

/// `before` subtracted from `after`, so a scrape before the scenario (the
/// warm-up's requests) does not count.
pub fn delta(after: &Histograms, before: &Histograms) -> Histograms {
    let mut out = Histograms::new();
    for (k, a) in after {
        let mut h = a.clone();
        if let Some(b) = before.get(k) {
            for (bound, c) in &mut h.buckets {
                if let Some((_, bc)) = b.buckets.iter().find(|(bb, _)| bb == bound) {
                    *c -= bc;
                }
            }
            h.sum -= b.sum;
            h.count -= b.count;
        }
        if h.count > 0.0 {
            out.insert(k.clone(), h);
        }
    }
    out
}

/// The report's section: request latency per route, then the steps the
/// service times itself (`*_seconds`), then other histograms (batch sizes).
pub fn render(h: &Histograms) -> String {
    let mut out = String::new();
    if h.is_empty() {
        return out;
    }
    out.push_str(
        "\n## Inside the service (its `/metrics`, all instances, scenario only)\n\n\
         Estimated from the servers' histogram buckets (linear inside a bucket), so a figure is \
         only as fine as its bucket. `http_request_duration_seconds` runs from the first \
         middleware to the response; the rest of k6's figure is k6, the proxy and the kernel.\n\n\
         | histogram | count | mean | p50 | p95 | p99 |\n|---|---|---|---|---|---|\n",
    );
    for (name, hist) in h {
        if name.contains("route=\"/metrics\"") || name.contains("route=\"/health/live\"") {
            continue;
        }
        let seconds = name.contains("_seconds");
        let fmt = |v: Option<f64>| match v {
            Some(x) if seconds => format!("{} ms", crate::report::num(x * 1000.0)),
            Some(x) => crate::report::num(x),
            None => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} |",
            name.replace('|', "\\|"),
            crate::report::int(hist.count),
            fmt(hist.mean()),
            fmt(hist.quantile(0.5)),
            fmt(hist.quantile(0.95)),
            fmt(hist.quantile(0.99)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{method="POST",route="/api/v1/coupons/{id}/issue",le="0.01"} 50
http_request_duration_seconds_bucket{method="POST",route="/api/v1/coupons/{id}/issue",le="0.1"} 90
http_request_duration_seconds_bucket{method="POST",route="/api/v1/coupons/{id}/issue",le="+Inf"} 100
http_request_duration_seconds_sum{method="POST",route="/api/v1/coupons/{id}/issue"} 2.5
http_request_duration_seconds_count{method="POST",route="/api/v1/coupons/{id}/issue"} 100
http_requests_total{method="POST",route="x",status="201"} 7
coupon_write_batch_size_bucket{le="1"} 3
coupon_write_batch_size_bucket{le="+Inf"} 4
coupon_write_batch_size_sum 10
coupon_write_batch_size_count 4
"#;

    const KEY: &str =
        "http_request_duration_seconds{method=\"POST\",route=\"/api/v1/coupons/{id}/issue\"}";

    #[test]
    fn sums_instances_and_reads_quantiles_like_prometheus() {
        let mut h = Histograms::new();
        add_text(&mut h, ONE);
        add_text(&mut h, ONE);
        let issue = &h[KEY];
        assert_eq!(issue.count, 200.0);
        assert_eq!(issue.buckets[0], (0.01, 100.0));
        // rank 100 of 200 is the top of the first bucket
        assert!((issue.quantile(0.5).unwrap() - 0.01).abs() < 1e-9);
        // rank 170: 70 of the 80 in (0.01, 0.1]
        let p85 = issue.quantile(0.85).unwrap();
        assert!((p85 - (0.01 + 0.09 * 70.0 / 80.0)).abs() < 1e-9, "{p85}");
        // in +Inf: the highest finite bound
        assert_eq!(issue.quantile(0.99), Some(0.1));
        assert_eq!(h["coupon_write_batch_size"].mean(), Some(2.5));
        assert!(!h.contains_key("http_requests_total{method=\"POST\",route=\"x\",status=\"201\"}"));
    }

    #[test]
    fn delta_leaves_out_what_was_there_before() {
        let mut before = Histograms::new();
        add_text(&mut before, ONE);
        let mut after = Histograms::new();
        add_text(&mut after, ONE);
        add_text(&mut after, ONE);
        let d = delta(&after, &before);
        assert_eq!(d[KEY].count, 100.0);
        assert!(delta(&before, &before).is_empty());
    }

    #[test]
    fn labels_with_commas_inside_quotes_stay_whole() {
        assert_eq!(
            split_labels(r#"a="x,y",b="z",le="0.5""#),
            vec![r#"a="x,y""#, r#"b="z""#, r#"le="0.5""#]
        );
    }

    #[test]
    fn renders_seconds_in_ms_and_hides_the_probes() {
        let mut h = Histograms::new();
        add_text(&mut h, ONE);
        add_text(
            &mut h,
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/health/live\",le=\"+Inf\"} 5\n\
             http_request_duration_seconds_count{method=\"GET\",route=\"/health/live\"} 5\n",
        );
        let md = render(&h);
        assert!(md.contains("| 100 | 25.00 ms |"), "{md}");
        assert!(
            md.contains("`coupon_write_batch_size` | 4 | 2.50 |"),
            "{md}"
        );
        assert!(!md.contains("/health/live"), "{md}");
    }
}
