//! Command line: `loadtest <scenario> [options]`, `loadtest all [options]`,
//! `loadtest list`, `loadtest help`.

use crate::scenarios;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: cargo run -p loadtest --release -- <scenario> [options]
       cargo run -p loadtest --release -- all [options] [--only a,b] [--skip a,b]
       cargo run -p loadtest --release -- list
       cargo run -p loadtest --release -- chaos <fault>|all [--short] [--kafka]   (chaos --help)

Builds commerce-server (release), starts N instances behind nginx against a fresh
database, seeds 10 000 users (and what the scenario needs), runs the scenario's k6
script and the /health/live ceiling with the same VU shape, checks the rules in
SQL and writes loadtests/reports/<scenario>-<date>.md.

`all` runs every scenario in turn (plus product-detail again with
catalog.detail_cache=false, labelled nocache), each a normal run with its own
report, building the server once, and writes one summary table to
loadtests/reports/all-<date>.md. The options below apply to every entry.

options:
  --instances N         server instances (default 2)
  --vu-scale F          multiply VU counts and arrival rates (default 1)
  --duration-scale F    multiply durations and per-VU iterations (default 1)
  --think-scale F       multiply think times; 0 removes them (default 1)
  --quick               smoke run: 1 000 users and products, VUs x0.2, durations x0.1
  --set KEY=VALUE       server setting for every instance, as COMMERCE__KEY (dots become
                        __, upper case): --set catalog.detail_cache=false; repeatable
  --keep-running        leave servers and nginx up after the report (Ctrl-C stops them;
                        not with all)
  --no-ceiling          skip the /health/live ceiling run
  --bursts N            a burst scenario (one iteration per VU) runs N times, each on fresh
                        data (a new coupon, new last-unit products) and each followed by a
                        ceiling burst; the report shows every burst and compares the medians
                        (default 7; 1 for other shapes)
  --ceiling-runs N      measure the ceiling N times and report the median run (default: one
                        per burst, else 1)
  --balancer B          auto (nginx when installed, else k6 spreads), nginx, or k6
  --workers N           actix workers per instance (default: cores / instances, at least 1)
  --k6-cpus C           CPUs k6 may run on: half (default: the first half of this process's
                        CPUs, rounded up, so the service keeps the rest, as with k6 on its own
                        machine), all, or a list such as 0 or 0,2-3; ceiling runs alike
  --k6-nice N           k6's priority, -20..19 (default -10: the service gets the CPU k6 leaves,
                        so k6 reads each answer when it comes, as on a machine of its own;
                        needs root, else 0); ceiling runs alike
  --server-bin PATH     use this commerce-server binary instead of building one
  --database NAME       database to drop and recreate (default commerce_load)
  --label TEXT          report name suffix: <scenario>-<label>-<date>.md (all-<label>-<date>.md)
  --force               run even when the server does not list the scenario's endpoints
  --only a,b            all: only these scenarios (repeatable)
  --skip a,b            all: leave these scenarios out (repeatable)

exit codes: 0 passed; 1 run error; 2 usage; 3 scenario not available yet;
            4 k6 thresholds crossed; 5 a rule broke (SQL checks).
            all: 5 if any rule broke, else 1 if any entry failed to run (3 included),
            else 4 if any threshold was crossed, else 0; 130 on Ctrl-C";

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
    /// Runs of a burst scenario (None: 5 for a burst, else 1).
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
    fn new(scenario: String) -> Self {
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
    fn apply_quick(&mut self) {
        if self.quick {
            self.vu_scale *= 0.2;
            self.duration_scale *= 0.1;
            self.users = 1_000;
            self.products = 1_000;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help,
    List,
    Run(Box<RunOptions>),
    /// Every scenario in turn; `scenario` is "all".
    All(Box<RunOptions>),
    /// `chaos <fault>|all`: see `crate::chaos`.
    Chaos(Box<crate::chaos::ChaosOptions>),
    ChaosHelp,
}

/// The environment variable a server setting travels in: the server reads
/// `COMMERCE__` + the key path with `__` between levels.
pub fn env_name(key: &str) -> String {
    format!("COMMERCE__{}", key.to_ascii_uppercase().replace('.', "__"))
}

/// `catalog.detail_cache=false` -> (`catalog.detail_cache`, `false`).
fn setting(raw: &str) -> Result<(String, String), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("--set takes KEY=VALUE, got `{raw}`"))?;
    let key_ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..");
    if !key_ok {
        return Err(format!(
            "--set: the key takes a-z, 0-9, _ and single dots between names \
             (catalog.detail_cache), got `{key}`"
        ));
    }
    if value.is_empty() {
        return Err(format!("--set {key}= needs a value"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `a,b` -> [a, b], each a known scenario.
fn scenario_list(flag: &str, raw: &str) -> Result<Vec<String>, String> {
    raw.split(',')
        .map(str::trim)
        .map(|name| match scenarios::find(name) {
            Some(s) => Ok(s.name.to_owned()),
            None => {
                let names: Vec<&str> = scenarios::SCENARIOS.iter().map(|s| s.name).collect();
                Err(format!(
                    "{flag}: unknown scenario `{name}`; one of: {}",
                    names.join(", ")
                ))
            }
        })
        .collect()
}

fn value<'a>(flag: &str, it: &mut impl Iterator<Item = &'a String>) -> Result<&'a String, String> {
    it.next().ok_or_else(|| format!("{flag} needs a value"))
}

fn scale(flag: &str, raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{flag} must be a non-negative number, got `{raw}`")),
    }
}

fn positive(flag: &str, raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("{flag} must be a positive integer, got `{raw}`")),
    }
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter();
    let first = match it.next() {
        None => return Ok(Command::Help),
        Some(s) => s.as_str(),
    };
    match first {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "list" => return Ok(Command::List),
        "chaos" => {
            let rest: Vec<String> = it.cloned().collect();
            if rest.first().is_some_and(|a| a == "-h" || a == "--help") {
                return Ok(Command::ChaosHelp);
            }
            return crate::chaos::parse(&rest).map(|o| Command::Chaos(Box::new(o)));
        }
        s if s.starts_with('-') => return Err(format!("the scenario comes first, got `{s}`")),
        _ => {}
    }
    let all = first == "all";
    let mut o = RunOptions::new(first.to_owned());
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--instances" => o.instances = positive(flag, value(flag, &mut it)?)?,
            "--vu-scale" => o.vu_scale = scale(flag, value(flag, &mut it)?)?,
            "--duration-scale" => o.duration_scale = scale(flag, value(flag, &mut it)?)?,
            "--think-scale" => o.think_scale = scale(flag, value(flag, &mut it)?)?,
            "--quick" => o.quick = true,
            "--keep-running" => o.keep_running = true,
            "--no-ceiling" => o.ceiling = false,
            "--ceiling-runs" => o.ceiling_runs = Some(positive(flag, value(flag, &mut it)?)?),
            "--bursts" => o.bursts = Some(positive(flag, value(flag, &mut it)?)?),
            "--force" => o.force = true,
            "--balancer" => {
                o.balancer = match value(flag, &mut it)?.as_str() {
                    "auto" => Balancer::Auto,
                    "nginx" => Balancer::Nginx,
                    "k6" => Balancer::K6,
                    other => return Err(format!("--balancer is auto, nginx or k6, got `{other}`")),
                }
            }
            "--workers" => o.workers = Some(positive(flag, value(flag, &mut it)?)?),
            "--k6-cpus" => o.k6_cpus = K6Cpus::parse(value(flag, &mut it)?)?,
            "--k6-nice" => {
                let v = value(flag, &mut it)?;
                o.k6_nice = v
                    .parse()
                    .ok()
                    .filter(|n| (-20..=19).contains(n))
                    .ok_or_else(|| format!("--k6-nice is a number from -20 to 19, got `{v}`"))?;
            }
            "--server-bin" => o.server_bin = Some(PathBuf::from(value(flag, &mut it)?)),
            "--database" => {
                let db = value(flag, &mut it)?;
                if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "--database takes letters, digits and _, got `{db}`"
                    ));
                }
                o.database = db.clone();
            }
            "--label" => {
                let label = value(flag, &mut it)?;
                if label.is_empty()
                    || !label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(format!(
                        "--label takes letters, digits, - and _, got `{label}`"
                    ));
                }
                o.label = Some(label.clone());
            }
            "--set" => o.settings.push(setting(value(flag, &mut it)?)?),
            "--only" => o.only.extend(scenario_list(flag, value(flag, &mut it)?)?),
            "--skip" => o.skip.extend(scenario_list(flag, value(flag, &mut it)?)?),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if o.vu_scale == 0.0 || o.duration_scale == 0.0 {
        return Err("--vu-scale and --duration-scale must be greater than 0".to_owned());
    }
    o.apply_quick();
    if !all {
        if !o.only.is_empty() || !o.skip.is_empty() {
            return Err("--only and --skip go with `all`".to_owned());
        }
        return Ok(Command::Run(Box::new(o)));
    }
    // Each entry's servers stop before the next one starts.
    if o.keep_running {
        return Err("--keep-running does not go with `all`".to_owned());
    }
    if crate::table::plan(&o.only, &o.skip).is_empty() {
        return Err("--only and --skip leave no scenario to run".to_owned());
    }
    Ok(Command::All(Box::new(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn run(s: &str) -> RunOptions {
        match parse(&args(s)) {
            Ok(Command::Run(o)) => *o,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = run("charge");
        assert_eq!(o.scenario, "charge");
        assert_eq!(o.instances, 2);
        assert_eq!(o.vu_scale, 1.0);
        assert_eq!(o.users, 10_000);
        assert!(o.ceiling);
        assert!(!o.keep_running);
        assert_eq!(o.balancer, Balancer::Auto);
        assert_eq!(o.database, "commerce_load");
        assert_eq!(o.k6_cpus, K6Cpus::Half);
    }

    #[test]
    fn k6_cpus() {
        assert_eq!(run("coupon-peak --k6-cpus all").k6_cpus, K6Cpus::All);
        assert_eq!(run("coupon-peak").k6_nice, -10);
        assert_eq!(run("coupon-peak --k6-nice 0").k6_nice, 0);
        for bad in ["-21", "20", "x"] {
            assert!(
                parse(&args(&format!("coupon-peak --k6-nice {bad}"))).is_err(),
                "--k6-nice {bad} accepted"
            );
        }
        assert_eq!(run("coupon-peak --k6-cpus half").k6_cpus, K6Cpus::Half);
        assert_eq!(
            run("coupon-peak --k6-cpus 3,0-1,1").k6_cpus,
            K6Cpus::List(vec![0, 1, 3])
        );
        for bad in ["", "x", "2-1", "0,", "1024", "-1"] {
            assert!(K6Cpus::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn options() {
        let o = run("coupon-peak --instances 3 --vu-scale 0.5 --duration-scale 0.17 --keep-running --no-ceiling --balancer k6 --workers 2 --label x1 --ceiling-runs 5 --bursts 7");
        assert_eq!(o.instances, 3);
        assert_eq!(o.vu_scale, 0.5);
        assert_eq!(o.duration_scale, 0.17);
        assert!(o.keep_running);
        assert!(!o.ceiling);
        assert_eq!(o.balancer, Balancer::K6);
        assert_eq!(o.workers, Some(2));
        assert_eq!(o.ceiling_runs, Some(5));
        assert_eq!(o.bursts, Some(7));
        assert_eq!(o.label.as_deref(), Some("x1"));
    }

    #[test]
    fn quick_scales_down() {
        let o = run("charge --quick --vu-scale 0.5");
        assert!((o.vu_scale - 0.1).abs() < 1e-9);
        assert!((o.duration_scale - 0.1).abs() < 1e-9);
        assert_eq!(o.users, 1_000);
    }

    #[test]
    fn errors() {
        assert!(parse(&args("charge --instances 0")).is_err());
        assert!(parse(&args("charge --vu-scale -1")).is_err());
        assert!(parse(&args("charge --vu-scale 0")).is_err());
        assert!(parse(&args("charge --bogus")).is_err());
        assert!(parse(&args("charge --instances")).is_err());
        assert!(parse(&args("--instances 2")).is_err());
        assert!(parse(&args("charge --database a;b")).is_err());
        assert_eq!(parse(&args("list")), Ok(Command::List));
        assert_eq!(parse(&[]), Ok(Command::Help));
    }

    #[test]
    fn settings() {
        let o = run(
            "product-detail --set catalog.detail_cache=false --set http.workers=3 --set a_1.b=x=y",
        );
        assert_eq!(
            o.settings,
            vec![
                ("catalog.detail_cache".to_owned(), "false".to_owned()),
                ("http.workers".to_owned(), "3".to_owned()),
                ("a_1.b".to_owned(), "x=y".to_owned()),
            ]
        );
        assert!(run("charge").settings.is_empty());
    }

    #[test]
    fn setting_errors() {
        for bad in [
            "--set",
            "--set catalog",
            "--set =false",
            "--set catalog.detail_cache=",
            "--set Catalog.cache=1",
            "--set catalog-cache=1",
            "--set .catalog=1",
            "--set catalog.=1",
            "--set catalog..cache=1",
            "--set cat%20log=1",
        ] {
            assert!(
                parse(&args(&format!("charge {bad}"))).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn env_names() {
        assert_eq!(
            env_name("catalog.detail_cache"),
            "COMMERCE__CATALOG__DETAIL_CACHE"
        );
        assert_eq!(env_name("http.workers"), "COMMERCE__HTTP__WORKERS");
        assert_eq!(env_name("a_1"), "COMMERCE__A_1");
    }

    fn all(s: &str) -> RunOptions {
        match parse(&args(s)) {
            Ok(Command::All(o)) => *o,
            other => panic!("expected all, got {other:?}"),
        }
    }

    #[test]
    fn all_takes_run_options_and_filters() {
        let o = all("all --quick --instances 3 --set a.b=c --label nightly");
        assert_eq!(o.scenario, "all");
        assert!(o.quick);
        assert!((o.vu_scale - 0.2).abs() < 1e-9);
        assert_eq!(o.instances, 3);
        assert_eq!(o.settings, vec![("a.b".to_owned(), "c".to_owned())]);
        assert_eq!(o.label.as_deref(), Some("nightly"));
        assert!(o.only.is_empty() && o.skip.is_empty());

        let o = all("all --only charge,product-detail --only order --skip stress,spike");
        assert_eq!(o.only, vec!["charge", "product-detail", "order"]);
        assert_eq!(o.skip, vec!["stress", "spike"]);
    }

    #[test]
    fn all_errors() {
        assert!(parse(&args("all --only nope")).is_err());
        assert!(parse(&args("all --only charge,")).is_err());
        assert!(parse(&args("all --skip")).is_err());
        assert!(parse(&args("all --keep-running")).is_err());
        assert!(parse(&args("all --only charge --skip charge")).is_err());
        assert!(parse(&args("charge --only charge")).is_err());
        assert!(parse(&args("charge --skip order")).is_err());
    }
}
