//! What a run will run: the scenario, k6 and the scenario's shape scaled by
//! the options, the users it needs; and whether the server has its routes.

use crate::base::{log, Paths};
use crate::k6;
use crate::options::RunOptions;
use crate::probe;
use crate::scenarios::{self, Scenario, Shape};
use crate::setup::Api;
use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;

/// The scenario named on the command line.
pub fn scenario(name: &str) -> Result<&'static Scenario> {
    scenarios::find(name).ok_or_else(|| {
        let names: Vec<&str> = scenarios::SCENARIOS.iter().map(|s| s.name).collect();
        anyhow!("unknown scenario `{}`; one of: {}", name, names.join(", "))
    })
}

/// k6 and the scenario's scaled shape.
pub struct Plan {
    pub k6: PathBuf,
    /// How the report describes k6.
    pub k6_version: String,
    pub script: PathBuf,
    /// `VU_SCALE`, `DURATION_SCALE`, `THINK_SCALE` for every k6 run.
    pub scale_vars: Vec<(String, String)>,
    pub shape: Shape,
    /// Users to seed: at least one per VU.
    pub users: usize,
}

impl Plan {
    pub async fn make(opts: &RunOptions, scenario: &Scenario, paths: &Paths) -> Result<Self> {
        let k6 = k6::ensure().await?;
        let k6_version = format!("{} ({})", k6::version(&k6).await, k6::tuning_text());
        let script = paths.k6_dir.join(scenario.script);
        let scale_vars = vec![
            ("VU_SCALE".to_owned(), opts.vu_scale.to_string()),
            ("DURATION_SCALE".to_owned(), opts.duration_scale.to_string()),
            ("THINK_SCALE".to_owned(), opts.think_scale.to_string()),
        ];
        let shape = k6::inspect(&k6, &script, &scale_vars).await?;
        log(format!("shape: {}", shape.describe()));
        // At least one user per VU (scripts give each VU its own user).
        let users = opts
            .users
            .max(usize::try_from(shape.peak_vus()).unwrap_or(usize::MAX));
        Ok(Self {
            k6,
            k6_version,
            script,
            scale_vars,
            shape,
            users,
        })
    }
}

/// Are the scenario's routes there? Without them the run stops (exit 3)
/// unless `--force`.
pub async fn routes_there(api: &Api, scenario: &Scenario, force: bool) -> Result<bool> {
    let openapi = api
        .get_json("/openapi.json")
        .await
        .context("GET /openapi.json")?;
    let missing = probe::missing(scenario.needs, &probe::routes(&openapi));
    if missing.is_empty() {
        return Ok(true);
    }
    if force {
        log(format!(
            "--force: going on without {} route(s)",
            missing.len()
        ));
        return Ok(true);
    }
    eprintln!("{}", unavailable_message(scenario, &missing));
    Ok(false)
}

/// The message for a scenario whose routes have not landed.
pub fn unavailable_message(s: &Scenario, missing: &[scenarios::Endpoint]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|e| format!("  {} {}", e.method, e.path))
        .collect();
    format!(
        "scenario `{}` is not available yet: the server does not list these routes in /openapi.json:\n{}\n\
         (they are in the HTTP contract, docs/api.md; run with --force to try anyway)",
        s.name,
        list.join("\n")
    )
}
