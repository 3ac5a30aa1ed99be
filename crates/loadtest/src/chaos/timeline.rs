//! The answers k6 logged (one JSON line each, see `loadtests/k6/chaos.js`),
//! binned per second, and the timeline chart (SVG, drawn with `plotters`):
//! requests per second by status, p99, and each breaker's state per
//! instance, with the fault window shaded.

use super::monitor::{BreakerSample, Clock};
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One answer a k6 client got.
#[derive(Debug, Clone)]
pub struct Answer {
    /// When it ended, on the run's clock (ms).
    pub at_ms: f64,
    pub status: u16,
    pub duration_ms: f64,
    pub step: String,
    pub code: Option<String>,
    pub retry_after: bool,
    /// What a 2xx acknowledged (user coupon id, order id) and to whom.
    pub id: Option<i64>,
    pub user: Option<i64>,
}

fn int(v: Option<&Value>) -> Option<i64> {
    let v = v?;
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The console lines of k6 that are answers; others are ignored.
pub fn parse(text: &str, clock: &Clock) -> Vec<Answer> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            Some(Answer {
                at_ms: clock.unix_to_run_ms(v.get("t")?.as_f64()?),
                status: u16::try_from(v.get("s")?.as_u64()?).ok()?,
                duration_ms: v.get("d").and_then(Value::as_f64).unwrap_or(0.0),
                step: v.get("n")?.as_str()?.to_owned(),
                code: v.get("c").and_then(Value::as_str).map(str::to_owned),
                retry_after: v.get("ra").is_some(),
                id: int(v.get("id")),
                user: int(v.get("u")),
            })
        })
        .collect()
}

/// The status classes the chart and the report count.
pub const CLASSES: [&str; 6] = ["2xx", "4xx", "503", "500", "other 5xx", "no answer"];

pub fn class(status: u16) -> &'static str {
    match status {
        0 => "no answer",
        200..=299 => "2xx",
        500 => "500",
        503 => "503",
        400..=499 => "4xx",
        _ => "other 5xx",
    }
}

/// An error, for the report's "errors during / after": no answer or a 5xx.
pub fn is_error(status: u16) -> bool {
    status == 0 || status >= 500
}

/// p-th percentile (0..=100) of `values` (sorted in place).
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1).copied()
}

/// What the chart draws; times in seconds since the load started.
pub struct Chart<'a> {
    pub title: String,
    pub answers: &'a [Answer],
    pub breakers: &'a [BreakerSample],
    /// The load's start on the run's clock (ms).
    pub origin_ms: f64,
    pub end_s: f64,
    pub fault_s: (f64, f64),
    /// When the dependency accepted connections again.
    pub returned_s: Option<f64>,
    pub instances: usize,
}

/// The same left margin on every panel, so their time axes line up.
const LABEL_AREA: u32 = 150;

/// The fault window's shade on the answers' and the p99's panels.
const FAULT_SHADE: RGBAColor = RGBAColor(220, 40, 40, 0.12);

/// One panel of the chart.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const STATE_COLORS: [(&str, RGBColor); 4] = [
    ("closed", RGBColor(46, 160, 67)),
    ("half_open", RGBColor(230, 160, 0)),
    ("open", RGBColor(210, 40, 40)),
    ("no answer", RGBColor(150, 150, 150)),
];

fn class_color(c: &str) -> RGBColor {
    match c {
        "2xx" => RGBColor(46, 160, 67),
        "4xx" => RGBColor(60, 110, 220),
        "503" => RGBColor(230, 140, 0),
        "500" => RGBColor(200, 0, 0),
        "other 5xx" => RGBColor(140, 0, 140),
        _ => RGBColor(90, 90, 90),
    }
}

impl Chart<'_> {
    fn secs(&self, ms: f64) -> f64 {
        (ms - self.origin_ms) / 1000.0
    }

    /// Per-second counts by class and p99 (ms), second 0 first.
    pub fn per_second(&self) -> (BTreeMap<&'static str, Vec<f64>>, Vec<Option<f64>>) {
        let n = self.end_s.ceil().max(1.0) as usize;
        let mut counts: BTreeMap<&'static str, Vec<f64>> =
            CLASSES.iter().map(|c| (*c, vec![0.0; n])).collect();
        let mut durations: Vec<Vec<f64>> = vec![Vec::new(); n];
        for a in self.answers {
            let s = self.secs(a.at_ms);
            if s < 0.0 {
                continue;
            }
            let i = (s as usize).min(n - 1);
            if let Some(v) = counts.get_mut(class(a.status)) {
                v[i] += 1.0;
            }
            durations[i].push(a.duration_ms);
        }
        let p99 = durations.iter_mut().map(|d| percentile(d, 99.0)).collect();
        (counts, p99)
    }

    pub fn draw(&self, path: &Path) -> Result<()> {
        self.draw_inner(path)
            .map_err(|e| anyhow!("drawing {}: {e}", path.display()))
    }

    fn draw_inner(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let rows = self.breaker_rows();
        let height = 760 + 22 * rows.len() as u32;
        let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(&self.title, ("sans-serif", 22))?;
        let (top, bottom) = root.split_vertically(260);
        let (middle, bottom) = bottom.split_vertically(240);
        let end = self.end_s.max(1.0);
        let (counts, p99) = self.per_second();
        self.draw_rates(&top, end, &counts)?;
        self.draw_p99(&middle, end, &p99)?;
        self.draw_breakers(&bottom, end, &rows)?;
        root.present()?;
        Ok(())
    }

    /// Rows of the breaker panel: every (instance, breaker) seen.
    fn breaker_rows(&self) -> Vec<(usize, String)> {
        let mut names: Vec<String> = self
            .breakers
            .iter()
            .filter_map(|s| s.states.as_ref())
            .flat_map(|st| st.iter().map(|(n, _)| n.clone()))
            .collect();
        names.sort();
        names.dedup();
        (0..self.instances)
            .flat_map(|i| names.iter().map(move |n| (i, n.clone())))
            .collect()
    }

    /// Requests per second by status class.
    fn draw_rates(
        &self,
        area: &Area<'_>,
        end: f64,
        counts: &BTreeMap<&'static str, Vec<f64>>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let shade = FAULT_SHADE.filled();
        let (fs, fe) = self.fault_s;
        let max_rps = counts
            .values()
            .flat_map(|v| v.iter().copied())
            .fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(
                "answers per second by status (fault window shaded)",
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(LABEL_AREA)
            .build_cartesian_2d(0f64..end, 0f64..max_rps * 1.1)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the load started")
            .y_desc("answers/s")
            .draw()?;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(fs, 0.0), (fe, max_rps * 1.1)],
            shade,
        )))?;
        if let Some(r) = self.returned_s {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(r, 0.0), (r, max_rps * 1.1)],
                BLACK.stroke_width(1),
            )))?;
        }
        for c in CLASSES {
            let Some(v) = counts.get(c) else { continue };
            if v.iter().all(|x| *x == 0.0) {
                continue;
            }
            let color = class_color(c);
            chart
                .draw_series(LineSeries::new(
                    v.iter().enumerate().map(|(i, y)| (i as f64 + 0.5, *y)),
                    color.stroke_width(2),
                ))?
                .label(c)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }

    /// p99 per second.
    fn draw_p99(
        &self,
        area: &Area<'_>,
        end: f64,
        p99: &[Option<f64>],
    ) -> Result<(), Box<dyn std::error::Error>> {
        let shade = FAULT_SHADE.filled();
        let (fs, fe) = self.fault_s;
        let max_p99 = p99.iter().flatten().copied().fold(10.0f64, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(
                "p99 of the answers ending in each second (ms)",
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(LABEL_AREA)
            .build_cartesian_2d(0f64..end, 0f64..max_p99 * 1.1)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the load started")
            .y_desc("p99 ms")
            .draw()?;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(fs, 0.0), (fe, max_p99 * 1.1)],
            shade,
        )))?;
        chart.draw_series(LineSeries::new(
            p99.iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as f64 + 0.5, v))),
            RGBColor(30, 30, 30).stroke_width(2),
        ))?;
        Ok(())
    }

    /// Breakers: one row per instance and breaker.
    fn draw_breakers(
        &self,
        area: &Area<'_>,
        end: f64,
        rows: &[(usize, String)],
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (fs, fe) = self.fault_s;
        let n_rows = rows.len().max(1);
        let labels = rows.to_vec();
        let mut chart = ChartBuilder::on(area)
            .caption(
                "breaker state per instance (green closed, orange half-open, red open, grey no answer)",
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(LABEL_AREA)
            .build_cartesian_2d(0f64..end, -0.5f64..n_rows as f64 - 0.5)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n_rows)
            .y_label_formatter(&|y| {
                let i = y.round();
                if (*y - i).abs() > 1e-6 || i < 0.0 {
                    return String::new();
                }
                let i = i as usize;
                labels
                    .get(i)
                    .map(|(inst, name)| format!("#{inst} {name}"))
                    .unwrap_or_default()
            })
            .x_desc("seconds since the load started")
            .draw()?;
        for (row, (inst, name)) in rows.iter().enumerate() {
            let samples: Vec<&BreakerSample> = self
                .breakers
                .iter()
                .filter(|s| s.instance == *inst)
                .collect();
            let mut rects = Vec::new();
            for (k, s) in samples.iter().enumerate() {
                let x0 = self.secs(s.at_ms).max(0.0);
                let x1 = samples
                    .get(k + 1)
                    .map(|n| self.secs(n.at_ms))
                    .unwrap_or(x0 + 0.2)
                    .min(end);
                if x1 <= 0.0 || x0 >= end {
                    continue;
                }
                let state = match &s.states {
                    None => "no answer",
                    Some(st) => st
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or("no answer"),
                };
                let color = STATE_COLORS
                    .iter()
                    .find(|(n, _)| *n == state)
                    .map(|(_, c)| *c)
                    .unwrap_or(RGBColor(150, 150, 150));
                let y = row as f64;
                rects.push(Rectangle::new(
                    [(x0, y - 0.35), (x1, y + 0.35)],
                    color.filled(),
                ));
            }
            chart.draw_series(rects)?;
        }
        chart.draw_series(std::iter::once(Rectangle::new(
            [(fs, -0.5), (fe, n_rows as f64 - 0.5)],
            RGBAColor(220, 40, 40, 0.10).filled(),
        )))?;
        if let Some(r) = self.returned_s {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(r, -0.5), (r, n_rows as f64 - 0.5)],
                BLACK.stroke_width(2),
            )))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_and_ignores_other_lines() {
        let clock = Clock {
            t0: std::time::Instant::now(),
            unix0_ms: 1000.0,
        };
        let text = "time=x level=warning msg=hello\n\
            {\"t\":2500,\"s\":201,\"d\":3.5,\"n\":\"coupon\",\"id\":7,\"u\":3}\n\
            {\"t\":3000,\"s\":503,\"d\":1,\"n\":\"order\",\"c\":\"redis_unavailable\",\"ra\":1}\n";
        let a = parse(text, &clock);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].at_ms, 1500.0);
        assert_eq!((a[0].id, a[0].user), (Some(7), Some(3)));
        assert!(a[1].retry_after);
        assert_eq!(a[1].code.as_deref(), Some("redis_unavailable"));
        assert_eq!(class(0), "no answer");
        assert_eq!(class(502), "other 5xx");
        assert!(is_error(503) && !is_error(409));
    }

    #[test]
    fn percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut [], 99.0), None);
    }

    #[test]
    fn draws_a_timeline_with_a_row_per_instance_and_breaker() {
        let answers: Vec<Answer> = (0..400)
            .map(|i| Answer {
                at_ms: f64::from(i) * 50.0,
                status: if (100..140).contains(&i) { 503 } else { 200 },
                duration_ms: f64::from(i % 17),
                step: "product".to_owned(),
                code: None,
                retry_after: true,
                id: None,
                user: None,
            })
            .collect();
        let breakers: Vec<BreakerSample> = (0..200)
            .flat_map(|i| {
                (0..2).map(move |instance| BreakerSample {
                    at_ms: f64::from(i) * 100.0,
                    instance,
                    states: (i != 50).then(|| {
                        let redis = if (50..80).contains(&i) {
                            "open"
                        } else {
                            "closed"
                        };
                        vec![
                            ("redis".to_owned(), redis.to_owned()),
                            ("kafka".to_owned(), "closed".to_owned()),
                        ]
                    }),
                })
            })
            .collect();
        let chart = Chart {
            title: "test".to_owned(),
            answers: &answers,
            breakers: &breakers,
            origin_ms: 0.0,
            end_s: 20.0,
            fault_s: (5.0, 8.0),
            returned_s: Some(8.1),
            instances: 2,
        };
        let path = std::env::temp_dir().join(format!("chaos-timeline-{}.svg", std::process::id()));
        chart.draw(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for label in ["#0 redis", "#1 kafka", "2xx", "503"] {
            assert!(svg.contains(label), "{label} missing");
        }
        let (counts, p99) = chart.per_second();
        assert_eq!(counts["503"].iter().sum::<f64>(), 40.0);
        assert_eq!(p99.len(), 20);
    }
}
