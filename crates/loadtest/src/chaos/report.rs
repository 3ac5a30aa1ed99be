//! A chaos run's report: the incident timeline an operator would write by
//! hand (setup, timeline, figures, breakers, answers, alerts, rules).

use super::figures::{secs, to_close_text, to_open_text, Input, Summary, HEAL_BAR_S};
use crate::rules::Outcome as RuleOutcome;
use std::fmt::Write as _;

/// The report of one run (Markdown), its sections in order.
pub fn render(input: &Input, s: &Summary, svg_name: &str) -> String {
    let mut o = String::new();
    header(&mut o, input, s, svg_name);
    setup(&mut o, input);
    timeline(&mut o, input, s);
    figures(&mut o, input, s);
    breakers(&mut o, s);
    answers(&mut o, s);
    alerts(&mut o, input);
    // What Prometheus saw: written by prom::chaos_section.
    o.push_str(&input.prometheus);
    rules(&mut o, input, s);
    o
}

/// The title, the verdict and why, the fault, the timeline chart.
fn header(o: &mut String, input: &Input, s: &Summary, svg_name: &str) {
    let _ = writeln!(o, "# Chaos: {} ({})\n", input.fault.name(), input.started);
    let _ = writeln!(
        o,
        "**{}.** {}\n",
        if s.passed() { "PASS" } else { "FAIL" },
        if s.passed() {
            format!(
                "Every rule held, every acknowledged write is in PostgreSQL, no answer was a 500, and every breaker was closed at the end{}{}.",
                if s.time_to_close_s.is_some() {
                    format!(", within {HEAL_BAR_S} s of its dependency's return")
                } else {
                    String::new()
                },
                if s.delivery_checked {
                    "; every event was published and applied by every consumer group"
                } else {
                    ""
                }
            )
        } else {
            s.why().join("; ")
        }
    );
    let _ = writeln!(o, "Fault: {}.\n", input.fault.what());
    let _ = writeln!(o, "![timeline]({svg_name})\n");
}

/// What ran: the command, the server, the deployment, the load, the data.
fn setup(o: &mut String, input: &Input) {
    let t = &input.timing;
    let _ = writeln!(o, "## Setup\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| command | `{}` |", input.command);
    let _ = writeln!(o, "| server | {} |", input.server);
    let _ = writeln!(
        o,
        "| deployment | two instances behind nginx; {} and Redis of the run's own on free loopback ports; {}local alert webhook and data-platform receiver |",
        input.pg_version,
        input
            .broker
            .as_ref()
            .map(|b| format!("Kafka mode: {b}, events relayed through it to three consumer groups; "))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "| load | {} s: product reads {}/s and order + pay {}/s throughout; at {} s a coupon burst ({} VUs, {} coupons) and a flash sale ({} VUs, {} units, order + pay) |",
        t.total_s,
        t.read_rate,
        t.order_rate,
        t.fault_at_s,
        t.burst_vus,
        t.burst_vus / 2,
        t.sale_vus,
        (t.sale_vus / 3).max(1)
    );
    let _ = writeln!(
        o,
        "| data | {} users (1 000 000 each), {} products × 50 units |",
        t.users, t.products
    );
    let _ = writeln!(
        o,
        "| form | {} |",
        if input.short { "short (CI)" } else { "full" }
    );
    let _ = writeln!(o, "| run files | `{}` |", input.run_dir);
    let _ = writeln!(
        o,
        "| took | {:.1} min (k6 exit {}) |\n",
        input.minutes,
        input
            .k6_exit
            .map_or_else(|| "killed".to_owned(), |c| c.to_string())
    );
}

/// The run's events in order: the fault's steps, the bursts, the alerts,
/// the breakers seen open and closed, Prometheus's alerts, the load's end.
fn timeline(o: &mut String, input: &Input, s: &Summary) {
    let w = &input.window;
    let rel = |ms: f64| (ms - input.origin_ms) / 1000.0;
    let t = &input.timing;
    let _ = writeln!(o, "## Timeline (seconds since the load's first request)\n");
    let _ = writeln!(o, "| t | what |\n|---|---|");
    let mut events: Vec<(f64, String)> = w
        .steps
        .iter()
        .map(|(at, text)| (rel(*at), text.clone()))
        .collect();
    events.push((
        t.fault_at_s + 0.3,
        "coupon burst and flash sale start".to_owned(),
    ));
    for a in &input.alerts {
        let inst = a.path.rsplit('/').next().unwrap_or("?");
        let text = serde_json::from_str::<serde_json::Value>(&a.body)
            .ok()
            .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| a.body.clone());
        let at_ms = a.at.as_secs_f64() * 1000.0;
        events.push((rel(at_ms), format!("alert from #{inst}: {text}")));
    }
    for tr in &s.tracks {
        if let Some(x) = tr.opened_after_s {
            events.push((
                rel(w.start_ms) + x,
                format!("poll: #{} `{}` seen open", tr.instance, tr.name),
            ));
        }
        if let Some(x) = tr.closed_after_return_s {
            events.push((
                rel(w.returned_ms) + x,
                format!("poll: #{} `{}` seen closed for good", tr.instance, tr.name),
            ));
        }
    }
    for (at_ms, text) in &input.prom_events {
        events.push((rel(*at_ms), text.clone()));
    }
    events.push((rel(input.load_end_ms), "load over".to_owned()));
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (at, text) in events {
        let _ = writeln!(o, "| {at:.2} | {text} |");
    }
}

/// The figures: the fault window, the breakers' times, the errors, the
/// backlog, the data platform.
fn figures(o: &mut String, input: &Input, s: &Summary) {
    let w = &input.window;
    let rel = |ms: f64| (ms - input.origin_ms) / 1000.0;
    let _ = writeln!(o, "\n## Figures\n");
    let _ = writeln!(o, "| figure | value |\n|---|---|");
    let _ = writeln!(
        o,
        "| fault window | {:.2} s → {:.2} s; dependency back at {:.2} s |",
        rel(w.start_ms),
        rel(w.end_ms),
        rel(w.returned_ms)
    );
    let _ = writeln!(
        o,
        "| time to breaker open{} | {} |",
        input
            .fault
            .breaker()
            .map(|b| format!(" (`{b}`)"))
            .unwrap_or_default(),
        to_open_text(s)
    );
    let _ = writeln!(
        o,
        "| time to closed after the dependency returned (slowest instance) | {} |",
        to_close_text(s)
    );
    let _ = writeln!(
        o,
        "| errors (5xx or no answer) of the requests sent during the fault | {} of {} answers |",
        s.errors_during, s.answers_during
    );
    let _ = writeln!(
        o,
        "| errors of the requests sent after the dependency returned | {} of {} answers |",
        s.errors_after, s.answers_after
    );
    let _ = writeln!(o, "| 500 answers | {} |", s.internal_500);
    let _ = writeln!(
        o,
        "| 503/429 without Retry-After | {} |",
        s.unavailable_without_retry_after
    );
    let _ = writeln!(
        o,
        "| 502/504 from nginx | {}{} |",
        s.proxy_errors,
        if s.proxy_errors_expected && s.proxy_errors > 0 {
            " (requests the killed or frozen instance held)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "| no answer (client timeout or reset) | {} |",
        s.no_answer
    );
    let _ = writeln!(
        o,
        "| event backlog (unpublished + data platform) | {} before the fault at most, peak {} after it; back to that level {} after the dependency returned |",
        s.backlog_before,
        s.backlog_peak,
        secs(s.drain_s)
    );
    if s.delivery_checked {
        let _ = writeln!(
            o,
            "| every event published and applied by every consumer group (checked once the load ended) | {} after the load ended |",
            input
                .delivered_after_s
                .map_or_else(|| "**not by the end**".to_owned(), |t| format!("{t:.2} s"))
        );
    }
    if let Some((u, d)) = s.backlog_end {
        let _ = writeln!(
            o,
            "| backlog at the end | {u} unpublished, {d} not yet at the data platform |"
        );
    }
    if let Some((n, left)) = input.leased.filter(|(n, _)| *n > 0) {
        let _ = writeln!(
            o,
            "| of those, leased by a relay | {n} row(s), lease over in {left:.0} s at most: another instance publishes them then (at least once, rule 6) |"
        );
    }
    let _ = writeln!(
        o,
        "| data platform receiver | {} requests received |",
        input.platform_received
    );
}

/// Each breaker the fault opened, per instance.
fn breakers(o: &mut String, s: &Summary) {
    let _ = writeln!(o, "\n### Breakers per instance\n");
    if s.tracks.is_empty() {
        let _ = writeln!(o, "No breaker left `closed` on any instance.");
    } else {
        let _ = writeln!(
            o,
            "| instance | breaker | open after the fault began | closed for good after the dependency returned |\n|---|---|---|---|"
        );
        for tr in &s.tracks {
            let _ = writeln!(
                o,
                "| #{} | `{}` | {} | {} |",
                tr.instance,
                tr.name,
                secs(tr.opened_after_s),
                if tr.open_at_end {
                    "not closed".to_owned()
                } else {
                    secs(tr.closed_after_return_s)
                }
            );
        }
    }
    let _ = writeln!(
        o,
        "\nPolled every 200 ms per instance (`GET /admin/breakers`), so each time is ±0.2 s."
    );
}

/// The answers by status and by error code.
fn answers(o: &mut String, s: &Summary) {
    let _ = writeln!(o, "\n### Answers by status\n");
    let _ = writeln!(o, "| status | answers |\n|---|---|");
    for (status, n) in &s.statuses {
        let label = if *status == 0 {
            "no answer".to_owned()
        } else {
            status.to_string()
        };
        let _ = writeln!(o, "| {label} | {n} |");
    }
    if !s.codes.is_empty() {
        let _ = writeln!(o, "\n| status | error code | answers |\n|---|---|---|");
        for ((status, code), n) in &s.codes {
            let _ = writeln!(o, "| {status} | `{code}` | {n} |");
        }
    }
}

/// The instances' own alerts, in order.
fn alerts(o: &mut String, input: &Input) {
    let rel = |ms: f64| (ms - input.origin_ms) / 1000.0;
    let _ = writeln!(
        o,
        "\n## Alerts the webhook received from the instances (breaker transitions), in order\n"
    );
    if input.alerts.is_empty() {
        let _ = writeln!(o, "None.");
    } else {
        let _ = writeln!(o, "| t | instance | text |\n|---|---|---|");
        for a in &input.alerts {
            let inst = a.path.rsplit('/').next().unwrap_or("?");
            let text = serde_json::from_str::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
                .unwrap_or_else(|| a.body.clone());
            let _ = writeln!(
                o,
                "| {:.2} | #{inst} | {} |",
                rel(a.at.as_secs_f64() * 1000.0),
                text.replace('|', "\\|")
            );
        }
    }
}

/// The rules, the acknowledged writes, the events' delivery, the heal bar
/// and no 500: each held or not.
fn rules(o: &mut String, input: &Input, s: &Summary) {
    let _ = writeln!(o, "\n## Rules\n");
    let _ = writeln!(o, "| rule | DESIGN | result |\n|---|---|---|");
    for r in &input.rules {
        let result = match &r.outcome {
            RuleOutcome::Held => "held".to_owned(),
            RuleOutcome::Broken { violations, sample } => {
                format!("**BROKEN** ({violations}): {}", sample.replace('|', "\\|"))
            }
            RuleOutcome::Skipped { missing } => format!("skipped (no {})", missing.join(", ")),
            RuleOutcome::Error(e) => format!("**ERROR**: {}", e.replace('|', "\\|")),
        };
        let _ = writeln!(o, "| {} | {} | {result} |", r.name, r.design_rule);
    }
    for a in &input.acks {
        let result = match &a.missing {
            Ok(0) => "all in PostgreSQL".to_owned(),
            Ok(n) => format!("**{n} missing**"),
            Err(e) => format!("**ERROR**: {e}"),
        };
        let _ = writeln!(
            o,
            "| every 2xx a client was told is in PostgreSQL: {} {} | 5 | {result} |",
            a.acknowledged, a.what
        );
    }
    for d in &input.delivery {
        let result = match &d.missing {
            Ok(0) => "held".to_owned(),
            Ok(n) => format!("**{n} events not there**"),
            Err(e) => format!("**ERROR**: {}", e.replace('|', "\\|")),
        };
        let _ = writeln!(o, "| {} | 6 | {result} |", d.what);
    }
    if let Some(t) = s.time_to_close_s {
        let _ = writeln!(
            o,
            "| every breaker closed within {HEAL_BAR_S} s of its dependency's return, on every instance | issue 26 | {} |",
            if s.slow_heal {
                format!("**{t:.2} s**")
            } else {
                format!("held ({t:.2} s)")
            }
        );
    }
    let _ = writeln!(
        o,
        "| no answer is a 500 | 7 | {} |",
        if s.internal_500 == 0 {
            "held".to_owned()
        } else {
            format!("**{} answers 500**", s.internal_500)
        }
    );
}
