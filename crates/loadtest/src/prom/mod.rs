//! A real Prometheus (and Alertmanager) beside a run: Debian's binaries,
//! started on free loopback ports with their data in the run's folder,
//! scraping every instance each second and evaluating the repository's
//! alert rules (their durations scaled down, see [`config::scale_rules`]).
//! The reports quote what it saw ([`render`]). When Prometheus is not
//! installed the run goes on without it and its report says so.

pub mod api;
pub mod config;
pub mod dashboard;
pub mod render;

use crate::procs::{self, Managed};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// How often the run's Prometheus scrapes and evaluates.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// The rules' durations, divided for runs of a minute or two: a `for: 1m`
/// becomes 2 s, a `[5m]` window 10 s.
pub const RULE_SCALE: config::RuleScale = config::RuleScale {
    divisor: 30,
    min_window: Duration::from_secs(2),
};

/// The rules file of the repository the runs load (scaled).
pub const RULES_SOURCE: &str = "docker/prometheus/alerts.yml";

/// A running Prometheus and, when installed, Alertmanager.
pub struct Stack {
    pub client: api::Client,
    pub prometheus_url: String,
    pub alertmanager_url: Option<String>,
    /// For the report: versions, ports, rules, what was left out.
    pub setup: String,
    /// The scrape targets (`127.0.0.1:port`), in instance order.
    pub targets: Vec<String>,
    procs: Vec<Managed>,
}

/// `name` on PATH, or in /usr/bin (Debian's packages).
fn find(names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|n| {
        crate::k6::which(n).or_else(|| {
            let p = Path::new("/usr/bin").join(n);
            p.is_file().then_some(p)
        })
    })
}

/// The first line of `bin --version` (bounded).
async fn version(bin: &Path) -> String {
    let mut cmd = Command::new(bin);
    cmd.arg("--version").stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(10), cmd.output()).await {
        Ok(Ok(out)) => {
            // Prometheus prints its version on stdout, Alertmanager on stderr.
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        }
        _ => format!("{} (version unknown)", bin.display()),
    }
}

/// Waits up to `limit` for `url` to answer 200; fails early if `proc` exits.
/// Starts `name` (logging to `<dir>/<name>.log`, stopped with SIGTERM),
/// keeps it in `procs`, and waits up to 30 s for its `/-/ready` on `port`.
/// Returns its URL and whether it became ready.
async fn spawn_ready(
    name: &str,
    cmd: &mut Command,
    dir: &Path,
    port: u16,
    procs: &mut Vec<Managed>,
) -> Result<(String, Result<()>)> {
    let mut m = Managed::spawn(name, cmd, &dir.join(format!("{name}.log")), libc::SIGTERM)?;
    let url = format!("http://127.0.0.1:{port}");
    let ready = wait_ready(&format!("{url}/-/ready"), &mut m, Duration::from_secs(30)).await;
    procs.push(m);
    Ok((url, ready))
}

async fn wait_ready(url: &str, proc: &mut Managed, limit: Duration) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "{} exited ({status}) before it was ready:\n{}",
                proc.name,
                procs::tail(&proc.log, 15)
            );
        }
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} not ready within {limit:?}:\n{}",
                proc.name,
                procs::tail(&proc.log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Stack {
    /// Starts Alertmanager (when installed; routing to `webhook`, when
    /// given) and Prometheus scraping `targets`, in `dir`. An error says why
    /// there is no Prometheus; the caller reports it and goes on.
    pub async fn start(
        root: &Path,
        dir: &Path,
        targets: &[String],
        webhook: Option<&str>,
    ) -> Result<Self> {
        let prometheus = find(&["prometheus"]).ok_or_else(|| {
            anyhow!(
                "prometheus is not installed (apt-get install --no-install-recommends prometheus)"
            )
        })?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let source = root.join(RULES_SOURCE);
        let rules_text = std::fs::read_to_string(&source)
            .with_context(|| format!("reading {}", source.display()))?;
        let rules = dir.join("alerts.yml");
        std::fs::write(
            &rules,
            config::scale_rules(&rules_text, RULE_SCALE, RULES_SOURCE),
        )?;
        let mut procs = Vec::new();
        let mut notes = Vec::new();

        // Alertmanager first, so Prometheus's first alerts find it.
        let mut am_addr = None;
        let am_bin = find(&["alertmanager", "prometheus-alertmanager"]);
        match (&am_bin, webhook) {
            (Some(bin), Some(hook)) => {
                let port = procs::free_port()?;
                let conf = dir.join("alertmanager.yml");
                std::fs::write(&conf, config::alertmanager_config(hook))?;
                let mut cmd = Command::new(bin);
                cmd.arg(format!("--config.file={}", conf.display()))
                    .arg(format!("--storage.path={}", dir.join("am-data").display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    // No cluster: it would bind 9094 on every interface.
                    .arg("--cluster.listen-address=")
                    .arg("--log.level=warn");
                let (url, ready) = spawn_ready("alertmanager", &mut cmd, dir, port, &mut procs).await?;
                match ready {
                    Ok(()) => {
                        notes.push(format!(
                            "{} on {url}, every alert routed at once (group wait and interval 1 s) to the run's webhook",
                            version(bin).await
                        ));
                        am_addr = Some((url, format!("127.0.0.1:{port}")));
                    }
                    Err(e) => notes.push(format!("Alertmanager did not start ({e:#}); none")),
                }
            }
            (None, _) => notes.push(
                "Alertmanager is not installed (apt-get install --no-install-recommends prometheus-alertmanager): none".to_owned(),
            ),
            (Some(_), None) => {}
        }

        let port = procs::free_port()?;
        let conf = dir.join("prometheus.yml");
        std::fs::write(
            &conf,
            config::prometheus_config(
                targets,
                SCRAPE_INTERVAL,
                &rules,
                am_addr.as_ref().map(|(_, a)| a.as_str()),
            ),
        )?;
        let mut cmd = Command::new(&prometheus);
        cmd.arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1d")
            // Alerts go to Alertmanager every second, not every minute.
            .arg("--rules.alert.resend-delay=1s")
            .arg("--log.level=warn");
        let (url, ready) = spawn_ready("prometheus", &mut cmd, dir, port, &mut procs).await?;
        let mut stack = Self {
            client: api::Client::new(&url)?,
            prometheus_url: url.clone(),
            alertmanager_url: am_addr.map(|(u, _)| u),
            setup: String::new(),
            targets: targets.to_vec(),
            procs,
        };
        if let Err(e) = ready {
            stack.stop().await;
            return Err(e);
        }
        stack.setup = format!(
            "{} on {url}, scraping {} instance(s)' `/metrics` every {} (job `commerce`, data in `{}`); {}; {}",
            version(&prometheus).await,
            targets.len(),
            config::format_duration(SCRAPE_INTERVAL),
            dir.join("data").display(),
            RULE_SCALE.describe(RULES_SOURCE),
            notes.join("; ")
        );
        Ok(stack)
    }

    /// Waits (bounded) until every target has been scraped successfully
    /// and no alert is pending or firing. A fresh Prometheus evaluates its
    /// rules before its first scrape: `absent(up)` then holds for a moment,
    /// and under the scaled rules `AllInstancesDown` can fire before the
    /// run has begun. The run's window starts once that has cleared.
    pub async fn wait_ready_to_watch(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let targets = self.client.targets().await.unwrap_or_default();
            let up = targets.iter().filter(|(_, up, _)| *up).count();
            if up >= self.targets.len() && !targets.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let errors: Vec<String> = targets
                    .iter()
                    .filter(|(_, up, _)| !up)
                    .map(|(i, _, e)| format!("{i}: {e}"))
                    .collect();
                bail!(
                    "{up} of {} targets up after {limit:?} ({})",
                    self.targets.len(),
                    errors.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        loop {
            let alerts = self.client.query("ALERTS", unix_now()).await;
            match alerts {
                Ok(a) if a.is_empty() => return Ok(()),
                _ if Instant::now() > deadline => {
                    let names: Vec<String> = alerts
                        .map(|a| a.iter().map(|s| s.label("alertname").to_owned()).collect())
                        .unwrap_or_default();
                    bail!(
                        "every target up, but alerts still pending or firing after {limit:?}: {}",
                        names.join(", ")
                    );
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// The processes, for a caller that stops them with its own (the load
    /// test's children list: stopped on exit, on error and on Ctrl-C).
    pub fn take_procs(&mut self) -> Vec<Managed> {
        std::mem::take(&mut self.procs)
    }

    /// Prometheus, then Alertmanager (bounded each).
    pub async fn stop(&mut self) {
        while let Some(mut m) = self.procs.pop() {
            m.stop(Duration::from_secs(10)).await;
        }
    }

    /// `127.0.0.1:port` → `#i` for the report.
    pub fn instance_name(&self, instance: &str) -> String {
        match self.targets.iter().position(|t| t == instance) {
            Some(i) => format!("#{i}"),
            None => instance.to_owned(),
        }
    }
}

/// Unix time now (seconds).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A load test's Prometheus and Alertmanager (its processes are in the
/// run's children, stopped with them) and the webhook Alertmanager posts to.
pub struct LoadMonitor {
    stack: Result<Stack, String>,
    webhook: Option<crate::chaos::stub::Receiver>,
    /// Unix time of the webhook's clock origin.
    t0_unix: f64,
}

impl LoadMonitor {
    /// Starts both beside the instances on `ports`; never fails the run.
    pub async fn start(
        root: &Path,
        run_dir: &Path,
        ports: &[u16],
        children: &mut crate::procs::Children,
    ) -> Self {
        let t0 = Instant::now();
        let t0_unix = unix_now();
        let webhook = crate::chaos::stub::Receiver::start(t0).await.ok();
        let targets: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let hook = webhook.as_ref().map(|w| w.url("/alertmanager"));
        let stack = match Stack::start(root, &run_dir.join("prometheus"), &targets, hook.as_deref())
            .await
        {
            Ok(mut s) => {
                for m in s.take_procs() {
                    children.push(m);
                }
                if let Err(e) = s.wait_ready_to_watch(Duration::from_secs(20)).await {
                    crate::base::log(format!("Prometheus: {e:#}"));
                }
                crate::base::log(format!("Prometheus on {}", s.prometheus_url));
                Ok(s)
            }
            Err(e) => {
                crate::base::log(format!("no Prometheus for this run: {e:#}"));
                Err(format!("{e:#}"))
            }
        };
        Self {
            stack,
            webhook,
            t0_unix,
        }
    }

    /// The report's section on `start`..`end` (unix seconds): figures,
    /// alerts, Alertmanager's notifications and the dashboard check. Waits
    /// two scrapes first so the last requests are in.
    pub async fn section(&self, root: &Path, start: f64, end: f64) -> String {
        let mut o = String::from("\n## What Prometheus saw\n\n");
        let stack = match &self.stack {
            Ok(s) => s,
            Err(e) => {
                o.push_str(&format!(
                    "No Prometheus in this run: {e}. The figures above come from k6 and the servers' `/metrics` only.\n"
                ));
                return o;
            }
        };
        tokio::time::sleep(SCRAPE_INTERVAL * 2 + Duration::from_millis(500)).await;
        let step = SCRAPE_INTERVAL.as_secs_f64();
        let figures = render::collect(&stack.client, start, end, step).await;
        let name = |i: &str| stack.instance_name(i);
        let t = |u: f64| u - start;
        o.push_str(&format!("{}.\n\n", stack.setup));
        o.push_str(&format!(
            "Window: the scenario's k6 runs, from {} to {} UTC ({} s; the ceiling bursts' `GET /health/live` and any extra dashboard burst fall inside it), every query evaluated at its end.\n\n",
            clock_text(start),
            clock_text(end),
            figures.window_s
        ));
        o.push_str(&render::figures_markdown(&figures, &name));
        o.push_str("\n### Alerts (scaled rules)\n\n");
        o.push_str(&render::alerts_markdown(
            &figures.alerts,
            &figures.alerts_expr,
            step,
            &name,
            &t,
        ));
        if stack.alertmanager_url.is_some() {
            let notes = self
                .webhook
                .as_ref()
                .map(|w| w.received())
                .unwrap_or_default();
            o.push_str(&format!(
                "\nAlertmanager posted {} notification(s) to the run's webhook{}\n",
                notes.len(),
                if notes.is_empty() { "." } else { ":" }
            ));
            if !notes.is_empty() {
                o.push_str("\n| t (s) | status | alerts |\n|---|---|---|\n");
            }
            for n in &notes {
                let at = t(self.t0_unix + n.at.as_secs_f64());
                let (status, text) = render::notification_text(&n.body, &name)
                    .unwrap_or_else(|| ("?".into(), n.body.replace('|', "\\|")));
                o.push_str(&format!("| {at:.1} | {status} | {text} |\n"));
            }
        }
        o.push_str("\n### Dashboard panels against this Prometheus\n\n");
        let checked = dashboard::check(root, &stack.prometheus_url, end, figures.window_s)
            .await
            .map_err(|e| format!("{e:#}"));
        o.push_str(&render::dashboard_markdown(&checked, figures.window_s));
        o
    }
}

/// `HH:MM:SS` of a unix time.
fn clock_text(unix: f64) -> String {
    chrono::DateTime::from_timestamp(unix.floor() as i64, 0)
        .map(|d| d.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| format!("{unix:.0}"))
}

/// What a chaos run's Prometheus saw, for the summary of every fault.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// The alerts that fired (scaled rules), each name once, in the order
    /// they first fired.
    pub fired: Vec<String>,
    /// Dashboard queries that returned data, and all of them (`None`: the
    /// check did not run).
    pub panels: Option<(usize, usize)>,
}

/// A chaos run's view of its Prometheus: waits (bounded by `limit`) for
/// the firing alerts to resolve and Alertmanager to say so, then returns
/// the report's section and the timeline's events (run clock, ms).
/// `unix0_ms` is the run clock's 0 in unix ms, `origin_ms` the timeline's 0
/// on the run clock; `notifications` reads what Alertmanager posted (each
/// with its run-clock time, ms, and body).
pub async fn chaos_section(
    root: &Path,
    stack: &Stack,
    unix0_ms: f64,
    origin_ms: f64,
    limit: Duration,
    notifications: &dyn Fn() -> Vec<(f64, String)>,
) -> (String, Vec<(f64, String)>, Seen) {
    // Resolution first: nothing firing, and as many resolved notifications
    // as firing ones (Alertmanager groups by alert and instance).
    let deadline = Instant::now() + limit;
    loop {
        let firing = stack
            .client
            .query("ALERTS{alertstate=\"firing\"}", unix_now())
            .await
            .map(|s| s.len())
            .unwrap_or(0);
        // Alertmanager's last word (if it said any) is "resolved".
        let last = notifications()
            .last()
            .and_then(|(_, b)| render::notification_text(b, &|i| i.to_owned()))
            .map(|(status, _)| status);
        if firing == 0 && last.as_deref().is_none_or(|s| s == "resolved") {
            break;
        }
        if Instant::now() > deadline {
            crate::base::log(format!(
                "Prometheus: {firing} alert(s) still firing after {limit:?}; reporting them as such"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(SCRAPE_INTERVAL * 2).await;

    let step = SCRAPE_INTERVAL.as_secs_f64();
    let start = (unix0_ms + origin_ms) / 1000.0;
    let end = unix_now();
    let figures = render::collect(&stack.client, start, end, step).await;
    let name = |i: &str| stack.instance_name(i);
    let t = |u: f64| (u * 1000.0 - unix0_ms - origin_ms) / 1000.0;
    let mut events = Vec::new();
    let mut seen = Seen::default();
    if let Ok(spans) = &figures.alerts {
        for a in spans.iter().filter(|a| a.state == "firing") {
            if !seen.fired.contains(&a.alertname) {
                seen.fired.push(a.alertname.clone());
            }
            let who = a
                .labels
                .get("instance")
                .map(|i| format!(" {}", name(i)))
                .unwrap_or_default();
            let what = a
                .labels
                .get("name")
                .or_else(|| a.labels.get("route_group"))
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let run_ms = |u: f64| u * 1000.0 - unix0_ms;
            events.push((
                run_ms(a.from),
                format!("Prometheus: **{}**{who}{what} firing", a.alertname),
            ));
            if !a.open {
                events.push((
                    run_ms(a.to + step),
                    format!("Prometheus: {}{who}{what} resolved", a.alertname),
                ));
            }
        }
    }
    let notes = notifications();
    for (at_ms, body) in &notes {
        if let Some((status, text)) = render::notification_text(body, &name) {
            events.push((
                *at_ms,
                format!("Alertmanager → webhook: {} {text}", status.to_uppercase()),
            ));
        }
    }

    let mut o = String::from("\n## What Prometheus saw\n\n");
    o.push_str(&format!("{}.\n\n", stack.setup));
    o.push_str(&format!(
        "Window: from the load's first request (t = 0) to {:.1} s, after the settle and the wait for alerts to resolve; times on the timeline's clock.\n\n",
        t(end)
    ));
    o.push_str("### Alerts (scaled rules)\n\n");
    o.push_str(&render::alerts_markdown(
        &figures.alerts,
        &figures.alerts_expr,
        step,
        &name,
        &t,
    ));
    if stack.alertmanager_url.is_some() {
        o.push_str(&format!(
            "\n### Alertmanager's notifications to the webhook\n\n{}",
            if notes.is_empty() {
                "None.\n".to_owned()
            } else {
                "| t (s) | status | alerts |\n|---|---|---|\n".to_owned()
            }
        ));
        for (at_ms, body) in &notes {
            let (status, text) = render::notification_text(body, &name)
                .unwrap_or_else(|| ("?".into(), body.replace('|', "\\|")));
            o.push_str(&format!(
                "| {:.2} | {status} | {text} |\n",
                (at_ms - origin_ms) / 1000.0
            ));
        }
    }
    o.push_str("\n### Figures over the run\n\n");
    o.push_str(&render::figures_markdown(&figures, &name));
    // A fault run moves the panels a calm load test leaves empty (breaker
    // transitions, the local limiter, errors by code).
    o.push_str("\n### Dashboard panels against this Prometheus\n\n");
    let checked = dashboard::check(root, &stack.prometheus_url, end, figures.window_s)
        .await
        .map_err(|e| format!("{e:#}"));
    o.push_str(&render::dashboard_markdown(&checked, figures.window_s));
    seen.panels = checked.ok().map(|rows| {
        let data = rows.iter().filter(|r| r.status == "data").count();
        (data, rows.len())
    });
    (o, events, seen)
}
