//! What a run's Prometheus saw, as report sections: the figures over the
//! run's window (each with its PromQL), the alerts of the `ALERTS` series,
//! Alertmanager's notifications and the dashboard check. Every query is
//! quoted; an empty answer is written "no data".

use super::api::{alert_spans, AlertSpan, Client, Series};
use super::dashboard::PanelResult;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One query and its answer.
#[derive(Debug, Clone)]
pub struct Quoted {
    pub what: &'static str,
    pub expr: String,
    pub result: Result<Vec<Series>, String>,
}

/// Everything asked of Prometheus about one window.
#[derive(Debug, Clone)]
pub struct Figures {
    pub window_s: u64,
    pub requests: Quoted,
    pub p95: Quoted,
    pub others: Vec<Quoted>,
    pub alerts_expr: String,
    pub alerts: Result<Vec<AlertSpan>, String>,
}

/// The figures' queries over a window of `w` (`90s`).
pub fn queries(w: &str) -> (String, String, Vec<(&'static str, String)>) {
    let requests = format!("sum by (route) (increase(http_requests_total[{w}]))");
    let p95 = format!(
        "histogram_quantile(0.95, sum by (route, le) (rate(http_request_duration_seconds_bucket[{w}])))"
    );
    let others = vec![
        (
            "answers by status",
            format!("sum by (status) (increase(http_requests_total[{w}]))"),
        ),
        (
            "5xx ratio",
            format!(
                "(sum(increase(http_requests_total{{status=~\"5..\"}}[{w}])) or vector(0)) / sum(increase(http_requests_total[{w}]))"
            ),
        ),
        (
            "most requests waiting for a pooled connection, per instance",
            format!("max by (instance) (max_over_time(db_pool_waiting[{w}]))"),
        ),
        (
            "most pooled connections in use, per instance",
            format!("max by (instance) (max_over_time(db_pool_connections{{state=\"in_use\"}}[{w}]))"),
        ),
        (
            "largest outbox backlog (unpublished events)",
            format!("max(max_over_time(outbox_backlog[{w}]))"),
        ),
        (
            "oldest unpublished event (s)",
            format!("max(max_over_time(outbox_oldest_age_seconds[{w}]))"),
        ),
        (
            "breakers not closed at some scrape (highest state: 1 half-open, 2 open; no data: all closed)",
            format!("max by (instance, name) (max_over_time(breaker_state[{w}])) > 0"),
        ),
        (
            "scrapes that failed, per instance",
            format!("sum by (instance) (count_over_time(up{{job=\"commerce\"}}[{w}]) - sum_over_time(up{{job=\"commerce\"}}[{w}]))"),
        ),
    ];
    (requests, p95, others)
}

/// Asks `client` the figures of `start`..`end` (unix seconds), evaluated
/// at `end`, and the `ALERTS` series over the window at `step` seconds.
pub async fn collect(client: &Client, start: f64, end: f64, step: f64) -> Figures {
    let window_s = (end - start).ceil().max(1.0) as u64;
    let w = format!("{window_s}s");
    let (requests, p95, others) = queries(&w);
    let ask = |what: &'static str, expr: String| async move {
        let result = client.query(&expr, end).await.map_err(|e| format!("{e:#}"));
        Quoted { what, expr, result }
    };
    let requests = ask("requests", requests).await;
    let p95 = ask("p95", p95).await;
    let mut answered = Vec::new();
    for (what, expr) in others {
        answered.push(ask(what, expr).await);
    }
    let alerts_expr = "ALERTS".to_owned();
    let alerts = client
        .query_range(&alerts_expr, start, end, step)
        .await
        .map(|s| alert_spans(&s, step, end))
        .map_err(|e| format!("{e:#}"));
    Figures {
        window_s,
        requests,
        p95,
        others: answered,
        alerts_expr,
        alerts,
    }
}

pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn labels_text(labels: &BTreeMap<String, String>, name: &dyn Fn(&str) -> String) -> String {
    let parts: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "job")
        .map(|(k, v)| {
            if k == "instance" {
                name(v)
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    parts.join(", ")
}

fn answer_text(q: &Quoted, name: &dyn Fn(&str) -> String) -> String {
    match &q.result {
        Err(e) => format!("query failed: {}", e.replace('|', "\\|")),
        Ok(list) if list.is_empty() => "no data".to_owned(),
        Ok(list) => list
            .iter()
            .map(|s| {
                let v = s.value().map(number).unwrap_or_else(|| "?".into());
                let l = labels_text(&s.labels, name);
                if l.is_empty() {
                    v
                } else {
                    format!("{l}: {v}")
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn code(expr: &str) -> String {
    format!("`{}`", expr.replace('|', "\\|"))
}

/// The figures as Markdown: requests and p95 per route, then the rest.
pub fn figures_markdown(f: &Figures, name: &dyn Fn(&str) -> String) -> String {
    let mut o = String::new();
    let by_route = |q: &Quoted| -> Vec<(String, f64)> {
        q.result
            .as_ref()
            .map(|l| {
                l.iter()
                    .filter_map(|s| Some((s.label("route").to_owned(), s.value()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let counts = by_route(&f.requests);
    let p95s = by_route(&f.p95);
    let _ = writeln!(
        o,
        "| route | requests | requests/s | p95 (ms) |\n|---|---|---|---|"
    );
    if counts.is_empty() {
        let _ = writeln!(o, "| (no data: {}) | | | |", answer_text(&f.requests, name));
    }
    // Routes with no request in the window (counters from before it) are
    // left out.
    let mut rows: Vec<(String, f64)> = counts.into_iter().filter(|(_, n)| *n > 0.0).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (route, n) in rows {
        let p95 = p95s
            .iter()
            .find(|(r, _)| *r == route)
            .map(|(_, v)| v * 1000.0)
            .filter(|v| v.is_finite())
            .map(number)
            .unwrap_or_else(|| "no data".into());
        let _ = writeln!(
            o,
            "| `{route}` | {} | {} | {p95} |",
            number(n.round()),
            number(n / f.window_s as f64)
        );
    }
    let _ = writeln!(
        o,
        "\nrequests: {}; p95: {} (Prometheus's `increase` extrapolates to the window's edges: counts are close, not exact; a p95 is a bucket interpolation).\n",
        code(&f.requests.expr),
        code(&f.p95.expr)
    );
    let _ = writeln!(o, "| figure | value | PromQL |\n|---|---|---|");
    for q in &f.others {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            q.what,
            answer_text(q, name),
            code(&q.expr)
        );
    }
    o
}

/// The alert stretches as a table, times by `t` (unix seconds → the
/// report's clock, in seconds).
pub fn alerts_markdown(
    alerts: &Result<Vec<AlertSpan>, String>,
    expr: &str,
    step: f64,
    name: &dyn Fn(&str) -> String,
    t: &dyn Fn(f64) -> f64,
) -> String {
    let mut o = String::new();
    match alerts {
        Err(e) => {
            let _ = writeln!(o, "`{expr}` query failed: {e}");
        }
        Ok(list) if list.is_empty() => {
            let _ = writeln!(
                o,
                "No alert was pending or firing (`{expr}` had no data in the window)."
            );
        }
        Ok(list) => {
            let _ = writeln!(
                o,
                "| alert | labels | state | from (s) | to (s) |\n|---|---|---|---|---|"
            );
            for a in list {
                let labels = labels_text(&a.labels, name);
                let to = if a.open {
                    format!("{:.1} (still {} at the end)", t(a.to), a.state)
                } else {
                    format!("{:.1}", t(a.to + step))
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {:.1} | {to} |",
                    a.alertname,
                    labels,
                    a.state,
                    t(a.from)
                );
            }
            let _ = writeln!(
                o,
                "\nFrom `{expr}` (query_range, step {step} s): \"from\" is the first evaluation that had the alert in that state, \"to\" the first that no longer had it (both to within one evaluation interval: a range query sees a sample up to a step late)."
            );
        }
    }
    o
}

/// The dashboard check as Markdown.
pub fn dashboard_markdown(result: &Result<Vec<PanelResult>, String>, window_s: u64) -> String {
    let mut o = String::new();
    match result {
        Err(e) => {
            let _ = writeln!(o, "Not run: {e}");
        }
        Ok(rows) => {
            let data = rows.iter().filter(|r| r.status == "data").count();
            let _ = writeln!(
                o,
                "`scripts/check-dashboard.py --prometheus … --time <end> --window {window_s}s --json`: every panel query of `docker/grafana/dashboards/commerce.json` evaluated at the end of the window, Grafana's intervals set to the window. **{data} of {} returned data.**\n",
                rows.len()
            );
            let _ = writeln!(o, "| panel | query | result |\n|---|---|---|");
            for r in rows {
                let result = match r.status.as_str() {
                    "data" => format!("data ({} series)", r.series),
                    "allowed-empty" => format!("no data — expected: {}", r.why),
                    "error" => format!("**query error**: {}", r.why.replace('|', "\\|")),
                    _ => format!("**no data** — {}", why_empty(&r.promql)),
                };
                let _ = writeln!(o, "| {} | {} | {result} |", r.title, r.ref_id);
            }
        }
    }
    o
}

/// Why a panel can be empty in a load test: the metric only exists once
/// its code path ran.
pub fn why_empty(promql: &str) -> &'static str {
    const WHY: &[(&str, &str)] = &[
        ("queue_", "the waiting room was not used by this scenario"),
        ("payments_total", "no payment in this scenario"),
        ("events_", "no consumer handled an event in this run (Kafka and the data platform are not deployed by the load test)"),
        ("breaker_transitions_total", "no breaker changed state"),
        ("stock_gate_total", "no order in this scenario"),
        ("product_stock", "no product on sale (sold today) in this scenario"),
        ("coupon_issued", "no coupon open in this scenario"),
        ("coupon_quantity", "no coupon open in this scenario"),
        ("coupon_", "no coupon issued in this run"),
    ];
    WHY.iter()
        .find(|(m, _)| promql.contains(m))
        .map(|(_, w)| *w)
        .unwrap_or("the metric was not exported during the run")
}

/// Alertmanager's webhook notifications: (time, status, alert names with
/// instances).
pub fn notification_text(body: &str, name: &dyn Fn(&str) -> String) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let status = v.get("status")?.as_str()?.to_owned();
    let alerts = v.get("alerts")?.as_array()?;
    let names: Vec<String> = alerts
        .iter()
        .map(|a| {
            let l = |k: &str| {
                a.pointer(&format!("/labels/{k}"))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let st = a
                .get("status")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            let mut text = l("alertname");
            let inst = l("instance");
            let extra: Vec<String> = [("name", l("name")), ("route_group", l("route_group"))]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !inst.is_empty() {
                text.push_str(&format!(" {}", name(&inst)));
            }
            if !extra.is_empty() {
                text.push_str(&format!(" ({})", extra.join(", ")));
            }
            if st != status {
                text.push_str(&format!(" [{st}]"));
            }
            text
        })
        .collect();
    Some((status, names.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn series(labels: &[(&str, &str)], v: f64) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            samples: vec![(100.0, v)],
        }
    }

    fn figures(requests: Result<Vec<Series>, String>) -> Figures {
        let (r, p, others) = queries("60s");
        Figures {
            window_s: 60,
            requests: Quoted {
                what: "requests",
                expr: r,
                result: requests,
            },
            p95: Quoted {
                what: "p95",
                expr: p,
                result: Ok(vec![series(&[("route", "/a")], 0.0123)]),
            },
            others: others
                .into_iter()
                .map(|(what, expr)| Quoted {
                    what,
                    expr,
                    result: if what.contains("waiting") {
                        Ok(vec![series(
                            &[("instance", "127.0.0.1:1"), ("job", "commerce")],
                            3.0,
                        )])
                    } else {
                        Ok(vec![])
                    },
                })
                .collect(),
            alerts_expr: "ALERTS".into(),
            alerts: Ok(vec![]),
        }
    }

    #[test]
    fn figures_quote_queries_values_and_no_data() {
        let name = |i: &str| {
            if i == "127.0.0.1:1" {
                "#0".to_owned()
            } else {
                i.to_owned()
            }
        };
        let f = figures(Ok(vec![
            series(&[("route", "/a")], 600.0),
            series(&[("route", "/b")], 6000.0),
        ]));
        let md = figures_markdown(&f, &name);
        // Busiest route first, rate over the window, p95 in ms.
        let a = md.find("| `/b` | 6000 | 100 | no data |").unwrap();
        let b = md.find("| `/a` | 600 | 10 | 12.300 |").unwrap();
        assert!(a < b);
        assert!(
            md.contains("| most requests waiting for a pooled connection, per instance | #0: 3 |")
        );
        assert!(md.contains("| largest outbox backlog (unpublished events) | no data |"));
        assert!(md.contains("`max(max_over_time(outbox_backlog[60s]))`"));
        // PromQL's `|` is escaped inside the table.
        assert!(md.contains("status=~\"5..\""));
        let failed = figures_markdown(&figures(Err("connection refused".into())), &name);
        assert!(failed.contains("(no data: query failed: connection refused)"));
    }

    #[test]
    fn alerts_render_on_the_reports_clock() {
        let name = |i: &str| format!("#{}", i.len());
        let t = |u: f64| u - 1000.0;
        let mut labels = BTreeMap::new();
        labels.insert("instance".to_owned(), "abc".to_owned());
        let spans = Ok(vec![
            AlertSpan {
                alertname: "RedisDegraded".into(),
                state: "firing".into(),
                labels: labels.clone(),
                from: 1010.0,
                to: 1014.0,
                open: false,
            },
            AlertSpan {
                alertname: "InstanceDown".into(),
                state: "pending".into(),
                labels,
                from: 1020.0,
                to: 1022.0,
                open: true,
            },
        ]);
        let md = alerts_markdown(&spans, "ALERTS", 1.0, &name, &t);
        assert!(md.contains("| RedisDegraded | #3 | firing | 10.0 | 15.0 |"));
        assert!(
            md.contains("| InstanceDown | #3 | pending | 20.0 | 22.0 (still pending at the end) |")
        );
        let none = alerts_markdown(&Ok(vec![]), "ALERTS", 1.0, &name, &t);
        assert!(none.contains("No alert"));
    }

    #[test]
    fn dashboard_rows_say_data_expected_empty_or_why_not() {
        let row = |title: &str, status: &str, promql: &str| PanelResult {
            title: title.into(),
            ref_id: "A".into(),
            promql: promql.into(),
            status: status.into(),
            series: 2,
            why: "counted only once a breaker changes state".into(),
        };
        let md = dashboard_markdown(
            &Ok(vec![
                row("Requests/s by route", "data", "x"),
                row("Breaker transitions", "allowed-empty", "y"),
                row(
                    "Payments by outcome",
                    "no-data",
                    "sum(rate(payments_total[60s]))",
                ),
            ]),
            60,
        );
        assert!(md.contains("**1 of 3 returned data.**"));
        assert!(md.contains("| Requests/s by route | A | data (2 series) |"));
        assert!(md.contains("no data — expected: counted only once"));
        assert!(md.contains("**no data** — no payment in this scenario"));
        assert!(dashboard_markdown(&Err("python3 missing".into()), 60).contains("Not run"));
    }

    #[test]
    fn alertmanager_notifications_are_summarised() {
        let body = r#"{"status":"firing","alerts":[
            {"status":"firing","labels":{"alertname":"RedisDegraded","instance":"127.0.0.1:1","name":"redis"}},
            {"status":"resolved","labels":{"alertname":"InstanceDown","instance":"127.0.0.1:2"}}]}"#;
        let name = |i: &str| {
            if i.ends_with(":1") {
                "#0".to_owned()
            } else {
                "#1".to_owned()
            }
        };
        let (status, text) = notification_text(body, &name).unwrap();
        assert_eq!(status, "firing");
        assert_eq!(
            text,
            "RedisDegraded #0 (name=redis), InstanceDown #1 [resolved]"
        );
        assert!(notification_text("{\"text\":\"breaker\"}", &name).is_none());
    }
}
