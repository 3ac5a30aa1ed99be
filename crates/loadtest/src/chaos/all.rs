//! `chaos all`'s summary: one row per fault's run, and what each run's
//! Prometheus saw.

use super::figures::{rules_text, secs, to_close_text, to_open_text, Summary};
use super::plan::Fault;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One finished run, for `chaos all`'s table.
pub struct Outcome {
    pub fault: Fault,
    pub summary: Summary,
    /// What the run's Prometheus saw (empty without one).
    pub seen: crate::prom::Seen,
    pub report: PathBuf,
    pub passed: bool,
}

/// `chaos all`'s table.
pub fn table(outcomes: &[Outcome], errors: &[(Fault, String)], root: &Path) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| fault | errors during | errors after | 500s | time to open | time to close after recovery | backlog drain | rules | verdict | report |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for out in outcomes {
        let s = &out.summary;
        let _ = writeln!(
            o,
            "| {} | {} of {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            out.fault.name(),
            s.errors_during,
            s.answers_during,
            s.errors_after,
            s.internal_500,
            to_open_text(s),
            to_close_text(s),
            secs(s.drain_s),
            rules_text(s),
            if out.passed { "PASS" } else { "FAIL" },
            crate::base::rel(root, &out.report)
                .rsplit('/')
                .next()
                .unwrap_or_default()
        );
    }
    for (f, e) in errors {
        let _ = writeln!(
            o,
            "| {} | – | – | – | – | – | – | – | {} | – |",
            f.name(),
            e.replace('|', "\\|").replace('\n', " ")
        );
    }
    o
}

pub fn render_all(
    outcomes: &[Outcome],
    errors: &[(Fault, String)],
    command: &str,
    started: &str,
    server: &str,
    root: &Path,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Chaos: every fault ({started})\n");
    let _ = writeln!(o, "Command: `{command}`; server: {server}.\n");
    let _ = writeln!(
        o,
        "Each fault is a run of its own (fresh PostgreSQL cluster, Redis, two instances, nginx), with its report beside this file. \
         *Errors* are answers that were a 5xx or none at all; *time to close* is the slowest instance's, from when the dependency \
         accepted connections again (breakers polled every 200 ms: ±0.2 s).\n"
    );
    o.push_str(&table(outcomes, errors, root));
    o.push_str(&monitoring_table(outcomes));
    o
}

/// Per fault: the alerts the run's Prometheus fired (scaled rules) and
/// how many dashboard queries had data.
pub fn monitoring_table(outcomes: &[Outcome]) -> String {
    let mut o = String::from(
        "\n## What Prometheus saw per fault\n\nAlerts that fired under the runs' scaled rules (every `for:` and range window divided by 30), \
         and the dashboard's panel queries that returned data over the run (each report lists them).\n\n\
         | fault | alerts fired | dashboard queries with data |\n|---|---|---|\n",
    );
    for out in outcomes {
        let fired = if out.seen.fired.is_empty() {
            "none".to_owned()
        } else {
            out.seen.fired.join(", ")
        };
        let panels = out
            .seen
            .panels
            .map(|(d, n)| format!("{d} of {n}"))
            .unwrap_or_else(|| "not checked".to_owned());
        let _ = writeln!(o, "| {} | {fired} | {panels} |", out.fault.name());
    }
    o
}
