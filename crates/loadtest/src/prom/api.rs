//! Prometheus's HTTP API (`/api/v1/query`, `/api/v1/query_range`): the
//! queries a report quotes, every one bounded by the client's timeout.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// One series of a result: its labels and its samples (unix seconds, value).
/// An instant query has one sample per series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(f64, f64)>,
}

impl Series {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }

    /// The value of an instant query's series.
    pub fn value(&self) -> Option<f64> {
        self.samples.last().map(|(_, v)| *v)
    }
}

/// The `data.result` of a Prometheus answer (vector, matrix or scalar).
pub fn parse(body: &Value) -> Result<Vec<Series>> {
    if body.get("status").and_then(Value::as_str) != Some("success") {
        bail!(
            "{}",
            body.get("error")
                .and_then(Value::as_str)
                .unwrap_or("query failed")
        );
    }
    let data = body.get("data").ok_or_else(|| anyhow!("no data"))?;
    let result = data.get("result").ok_or_else(|| anyhow!("no result"))?;
    let kind = data.get("resultType").and_then(Value::as_str).unwrap_or("");
    if kind == "scalar" {
        return Ok(sample(result)
            .map(|s| {
                vec![Series {
                    labels: BTreeMap::new(),
                    samples: vec![s],
                }]
            })
            .unwrap_or_default());
    }
    let list = result
        .as_array()
        .ok_or_else(|| anyhow!("result is not a list"))?;
    Ok(list
        .iter()
        .map(|s| {
            let labels = s
                .get("metric")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let samples = match s.get("values").and_then(Value::as_array) {
                Some(values) => values.iter().filter_map(sample).collect(),
                None => s.get("value").and_then(sample).into_iter().collect(),
            };
            Series { labels, samples }
        })
        .collect())
}

/// `[1700000000.123, "0.5"]`.
fn sample(v: &Value) -> Option<(f64, f64)> {
    let pair = v.as_array()?;
    let t = pair.first()?.as_f64()?;
    let value = pair.get(1)?.as_str()?;
    let x = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some((t, x))
}

/// A client of one Prometheus.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        resp.json::<Value>()
            .await
            .with_context(|| format!("GET {path}: not JSON"))
    }

    /// `expr` evaluated at `time` (unix seconds).
    pub async fn query(&self, expr: &str, time: f64) -> Result<Vec<Series>> {
        let body = self
            .get(
                "/api/v1/query",
                &[("query", expr.to_owned()), ("time", format!("{time:.3}"))],
            )
            .await?;
        parse(&body).with_context(|| format!("query `{expr}`"))
    }

    /// `expr` from `start` to `end` (unix seconds) every `step` seconds.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Series>> {
        let body = self
            .get(
                "/api/v1/query_range",
                &[
                    ("query", expr.to_owned()),
                    ("start", format!("{start:.3}")),
                    ("end", format!("{end:.3}")),
                    ("step", format!("{step}")),
                ],
            )
            .await?;
        parse(&body).with_context(|| format!("query_range `{expr}`"))
    }

    /// The scrape targets' health: (instance, up, last error).
    pub async fn targets(&self) -> Result<Vec<(String, bool, String)>> {
        let body = self.get("/api/v1/targets", &[]).await?;
        let list = body
            .pointer("/data/activeTargets")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("no activeTargets"))?;
        Ok(list
            .iter()
            .map(|t| {
                let s = |p: &str| t.pointer(p).and_then(Value::as_str).unwrap_or("");
                (
                    s("/labels/instance").to_owned(),
                    s("/health") == "up",
                    s("/lastError").to_owned(),
                )
            })
            .collect())
    }
}

/// One stretch of an alert in the `ALERTS` series: pending or firing from
/// the first sample to the last (unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpan {
    pub alertname: String,
    pub state: String,
    /// The alert's own labels (without alertname, alertstate, job).
    pub labels: BTreeMap<String, String>,
    pub from: f64,
    pub to: f64,
    /// The series was still there at the end of the range.
    pub open: bool,
}

/// The stretches of `ALERTS` (a `query_range` result at `step` up to `end`):
/// a gap longer than one step and a half ends a stretch.
pub fn alert_spans(series: &[Series], step: f64, end: f64) -> Vec<AlertSpan> {
    let mut spans = Vec::new();
    for s in series {
        let labels: BTreeMap<String, String> = s
            .labels
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "alertstate" | "__name__" | "job"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut current: Option<(f64, f64)> = None;
        let mut push = |from: f64, to: f64| {
            spans.push(AlertSpan {
                alertname: s.label("alertname").to_owned(),
                state: s.label("alertstate").to_owned(),
                labels: labels.clone(),
                from,
                to,
                open: end - to < step * 1.5,
            });
        };
        for &(t, _) in &s.samples {
            current = match current {
                Some((from, last)) if t - last <= step * 1.5 => Some((from, t)),
                Some((from, last)) => {
                    push(from, last);
                    Some((t, t))
                }
                None => Some((t, t)),
            };
        }
        if let Some((from, last)) = current {
            push(from, last);
        }
    }
    spans.sort_by(|a, b| a.from.total_cmp(&b.from));
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vectors_matrices_and_scalars_parse() {
        let v = parse(
            &json!({"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"route":"/a"},"value":[1700000000.5,"0.25"]},
            {"metric":{"route":"/b"},"value":[1700000000.5,"NaN"]}]}}),
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].label("route"), "/a");
        assert_eq!(v[0].value(), Some(0.25));
        assert!(v[1].value().unwrap().is_nan());
        let m = parse(
            &json!({"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"alertname":"X"},"values":[[1.0,"1"],[2.0,"1"]]}]}}),
        )
        .unwrap();
        assert_eq!(m[0].samples, vec![(1.0, 1.0), (2.0, 1.0)]);
        let s = parse(
            &json!({"status":"success","data":{"resultType":"scalar","result":[3.0,"+Inf"]}}),
        )
        .unwrap();
        assert_eq!(s[0].value(), Some(f64::INFINITY));
        let e = parse(&json!({"status":"error","error":"parse error"})).unwrap_err();
        assert!(e.to_string().contains("parse error"));
    }

    #[test]
    fn alert_stretches_split_at_gaps_and_know_if_still_open() {
        let series = parse(
            &json!({"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"ALERTS","alertname":"RedisDegraded","alertstate":"firing",
                       "instance":"127.0.0.1:1","job":"commerce","severity":"critical"},
             "values":[[10,"1"],[11,"1"],[12,"1"],[20,"1"],[21,"1"]]}]}}),
        )
        .unwrap();
        let spans = alert_spans(&series, 1.0, 21.0);
        assert_eq!(spans.len(), 2);
        assert_eq!(
            (spans[0].from, spans[0].to, spans[0].open),
            (10.0, 12.0, false)
        );
        assert_eq!(
            (spans[1].from, spans[1].to, spans[1].open),
            (20.0, 21.0, true)
        );
        assert_eq!(spans[0].alertname, "RedisDegraded");
        assert_eq!(spans[0].state, "firing");
        assert!(!spans[0].labels.contains_key("job"));
        assert_eq!(spans[0].labels["severity"], "critical");
    }
}
