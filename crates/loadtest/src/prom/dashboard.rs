//! The Grafana dashboard's every panel query against the run's Prometheus:
//! `scripts/check-dashboard.py --prometheus URL --json` (one check, the
//! script's), evaluated at the end of the scenario over its whole window.

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// One panel query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelResult {
    pub title: String,
    pub ref_id: String,
    pub promql: String,
    /// `data`, `no-data`, `allowed-empty` or `error`.
    pub status: String,
    pub series: u64,
    pub why: String,
}

/// The script's `--json` output.
pub fn parse(text: &str) -> Result<Vec<PanelResult>> {
    let v: Value =
        serde_json::from_str(text.trim()).context("check-dashboard.py printed no JSON")?;
    let list = v
        .get("queries")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("no queries in check-dashboard.py's output"))?;
    Ok(list
        .iter()
        .map(|q| {
            let s = |k: &str| q.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            PanelResult {
                title: s("title"),
                ref_id: s("ref"),
                promql: s("promql"),
                status: s("status"),
                series: q.get("series").and_then(Value::as_u64).unwrap_or(0),
                why: s("why"),
            }
        })
        .collect())
}

/// Runs the script (bounded to 2 minutes) at unix time `at` with Grafana's
/// intervals set to `window` seconds.
pub async fn check(
    root: &Path,
    prometheus: &str,
    at: f64,
    window: u64,
) -> Result<Vec<PanelResult>> {
    let script = root.join("scripts/check-dashboard.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg("--prometheus")
        .arg(prometheus)
        .arg("--time")
        .arg(format!("{at:.3}"))
        .arg("--window")
        .arg(format!("{window}s"))
        .arg("--json")
        .current_dir(root)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| anyhow!("check-dashboard.py did not finish within 2 minutes"))?
        .context("running python3 scripts/check-dashboard.py")?;
    // Exit 1 only says some query had no data: the JSON says which.
    parse(&String::from_utf8_lossy(&out.stdout)).with_context(|| {
        format!(
            "check-dashboard.py exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_json_parses() {
        let text = r#"{"prometheus": "http://x", "time": "1", "window": "60s", "failed": 1, "queries": [
            {"title": "Requests/s by route", "ref": "A", "promql": "sum(rate(x[60s]))", "series": 3, "why": "", "status": "data"},
            {"title": "Breaker transitions", "ref": "A", "promql": "y", "series": 0, "why": "counted only once", "status": "allowed-empty"}]}"#;
        let rows = parse(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].status, "data");
        assert_eq!(rows[0].series, 3);
        assert_eq!(rows[1].why, "counted only once");
        assert!(parse("dashboard: ok").is_err());
    }
}
