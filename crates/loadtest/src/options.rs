//! What a run was asked for: the options of a scenario run (or of `all`),
//! parsed by `cli`, read by every stage. Imports nothing of the crate.

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancer {
    Auto,
    Nginx,
    K6,
}

/// The CPUs k6 is pinned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum K6Cpus {
    /// The first half (rounded up) of the CPUs the runner may use.
    Half,
    /// No pinning: k6 and the service share every CPU.
    All,
    /// These CPU numbers.
    List(Vec<usize>),
}

impl K6Cpus {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "half" => return Ok(Self::Half),
            "all" => return Ok(Self::All),
            _ => {}
        }
        let bad = || format!("--k6-cpus is half, all or a CPU list such as 0,2-3, got `{text}`");
        let mut cpus = Vec::new();
        for part in text.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: usize = a.trim().parse().map_err(|_| bad())?;
            let b: usize = b.trim().parse().map_err(|_| bad())?;
            // cpu_set_t holds CPUs 0..1024.
            if a > b || b >= 1024 {
                return Err(bad());
            }
            cpus.extend(a..=b);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(Self::List(cpus))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    pub scenario: String,
    pub instances: usize,
    pub vu_scale: f64,
    pub duration_scale: f64,
    pub think_scale: f64,
    pub quick: bool,
    pub keep_running: bool,
    pub ceiling: bool,
    /// Ceiling measurements (None: one per burst).
    pub ceiling_runs: Option<usize>,
    /// Runs of a burst scenario (None: 7 for a burst, else 1).
    pub bursts: Option<usize>,
    pub balancer: Balancer,
    pub workers: Option<usize>,
    /// Where k6 runs (ceiling included).
    pub k6_cpus: K6Cpus,
    /// k6's scheduling priority (nice, -20..=19; ceiling included).
    pub k6_nice: i32,
    pub server_bin: Option<PathBuf>,
    pub database: String,
    pub label: Option<String>,
    pub force: bool,
    pub users: usize,
    pub products: usize,
    /// `--set KEY=VALUE`: server settings, in the order given (a later one wins).
    pub settings: Vec<(String, String)>,
    /// `all --only`: scenario names (empty: every scenario).
    pub only: Vec<String>,
    /// `all --skip`: scenario names.
    pub skip: Vec<String>,
}

impl RunOptions {
    pub fn new(scenario: String) -> Self {
        Self {
            scenario,
            instances: 2,
            vu_scale: 1.0,
            duration_scale: 1.0,
            think_scale: 1.0,
            quick: false,
            keep_running: false,
            ceiling: true,
            ceiling_runs: None,
            bursts: None,
            balancer: Balancer::Auto,
            workers: None,
            k6_cpus: K6Cpus::Half,
            k6_nice: -10,
            server_bin: None,
            database: "commerce_load".to_owned(),
            label: None,
            force: false,
            users: 10_000,
            products: 10_000,
            settings: Vec::new(),
            only: Vec::new(),
            skip: Vec::new(),
        }
    }

    /// `--quick` folded into the scales and data sizes.
    pub fn apply_quick(&mut self) {
        if self.quick {
            self.vu_scale *= 0.2;
            self.duration_scale *= 0.1;
            self.users = 1_000;
            self.products = 1_000;
        }
    }
}

/// The environment variable a server setting travels in: the server reads
/// `COMMERCE__` + the key path with `__` between levels.
pub fn env_name(key: &str) -> String {
    format!("COMMERCE__{}", key.to_ascii_uppercase().replace('.', "__"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert_eq!(
            env_name("catalog.detail_cache"),
            "COMMERCE__CATALOG__DETAIL_CACHE"
        );
        assert_eq!(env_name("http.workers"), "COMMERCE__HTTP__WORKERS");
        assert_eq!(env_name("a_1"), "COMMERCE__A_1");
    }
}
