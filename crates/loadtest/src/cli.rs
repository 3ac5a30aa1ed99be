//! Command line (clap): `loadtest <scenario> [options]`, `loadtest all
//! [options]`, `loadtest list`, `loadtest help`, `loadtest chaos …`.
//!
//! The help texts are the hand-written `USAGE` and `chaos::USAGE` (the
//! README quotes them); clap's own help and version flags are off. Every
//! option that takes a value takes the next word whatever it looks like
//! (`--k6-nice -5`, `--vu-scale -1` is then refused by its check), and a
//! repeated option overrides the earlier one, as the hand parser did.

use crate::chaos::{self, ChaosOptions, Fault};
use crate::options::{Balancer, K6Cpus, RunOptions};
use crate::scenarios;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand};
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

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help,
    List,
    Run(Box<RunOptions>),
    /// Every scenario in turn; `scenario` is "all".
    All(Box<RunOptions>),
    /// `chaos <fault>|all`: see `crate::chaos`.
    Chaos(Box<ChaosOptions>),
    ChaosHelp,
}

/// The first word: a subcommand, else a scenario name.
#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    disable_help_flag = true,
    disable_help_subcommand = true,
    disable_version_flag = true,
    allow_external_subcommands = true
)]
struct Cli {
    #[arg(short = 'h', long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(subcommand)]
    command: Option<Top>,
}

#[derive(Subcommand, Debug)]
enum Top {
    /// `help`: the usage (the words after it are ignored, as before).
    Help(Ignored),
    /// `list`: the scenarios (the words after it are ignored, as before).
    List(Ignored),
    Chaos(ChaosArgs),
    All(RunArgs),
    /// `<scenario> [options]`: parsed again by [`ScenarioLine`].
    #[command(external_subcommand)]
    Scenario(Vec<String>),
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
struct Ignored {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _rest: Vec<String>,
}

/// `<scenario> [options]`.
#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
struct ScenarioLine {
    scenario: String,
    #[command(flatten)]
    run: RunArgs,
}

/// The options of a scenario run and of `all`.
#[derive(Args, Debug)]
#[command(disable_help_flag = true, args_override_self = true)]
struct RunArgs {
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = instances)]
    instances: Option<usize>,
    #[arg(long, value_name = "F", allow_hyphen_values = true, value_parser = vu_scale)]
    vu_scale: Option<f64>,
    #[arg(long, value_name = "F", allow_hyphen_values = true, value_parser = duration_scale)]
    duration_scale: Option<f64>,
    #[arg(long, value_name = "F", allow_hyphen_values = true, value_parser = think_scale)]
    think_scale: Option<f64>,
    #[arg(long)]
    quick: bool,
    #[arg(long)]
    keep_running: bool,
    #[arg(long)]
    no_ceiling: bool,
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = ceiling_runs)]
    ceiling_runs: Option<usize>,
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = bursts)]
    bursts: Option<usize>,
    #[arg(long)]
    force: bool,
    #[arg(long, value_name = "B", allow_hyphen_values = true, value_parser = balancer)]
    balancer: Option<Balancer>,
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = workers)]
    workers: Option<usize>,
    #[arg(long, value_name = "C", allow_hyphen_values = true, value_parser = K6Cpus::parse)]
    k6_cpus: Option<K6Cpus>,
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = k6_nice)]
    k6_nice: Option<i32>,
    #[arg(long, value_name = "PATH", allow_hyphen_values = true)]
    server_bin: Option<PathBuf>,
    #[arg(long, value_name = "NAME", allow_hyphen_values = true, value_parser = database)]
    database: Option<String>,
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true, value_parser = label)]
    label: Option<String>,
    /// Repeatable, in order (a later one wins).
    #[arg(long = "set", value_name = "KEY=VALUE", allow_hyphen_values = true,
          action = clap::ArgAction::Append, value_parser = setting)]
    settings: Vec<(String, String)>,
    #[arg(long, value_name = "a,b", allow_hyphen_values = true,
          action = clap::ArgAction::Append, value_parser = only)]
    only: Vec<Names>,
    #[arg(long, value_name = "a,b", allow_hyphen_values = true,
          action = clap::ArgAction::Append, value_parser = skip)]
    skip: Vec<Names>,
    #[arg(short = 'h', long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// `chaos <fault>|all [options]`.
#[derive(Args, Debug)]
#[command(disable_help_flag = true, args_override_self = true)]
struct ChaosArgs {
    /// A fault's name or `all` (checked after parsing, for its message).
    target: Option<String>,
    #[arg(long)]
    short: bool,
    #[arg(long)]
    kafka: bool,
    #[arg(long, value_name = "PATH", allow_hyphen_values = true)]
    server_bin: Option<PathBuf>,
    #[arg(long = "set", value_name = "KEY=VALUE", allow_hyphen_values = true,
          action = clap::ArgAction::Append, value_parser = chaos_setting)]
    settings: Vec<(String, String)>,
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true, value_parser = label)]
    label: Option<String>,
    #[arg(short = 'h', long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// Scenario names of one `--only` or `--skip`.
#[derive(Debug, Clone)]
struct Names(Vec<String>);

impl RunArgs {
    /// The options, defaults filled in and `--quick` folded in.
    fn into_options(self, scenario: String) -> Result<RunOptions, String> {
        let mut o = RunOptions::new(scenario);
        o.instances = self.instances.unwrap_or(o.instances);
        o.vu_scale = self.vu_scale.unwrap_or(o.vu_scale);
        o.duration_scale = self.duration_scale.unwrap_or(o.duration_scale);
        o.think_scale = self.think_scale.unwrap_or(o.think_scale);
        o.quick = self.quick;
        o.keep_running = self.keep_running;
        o.ceiling = !self.no_ceiling;
        o.ceiling_runs = self.ceiling_runs;
        o.bursts = self.bursts;
        o.force = self.force;
        o.balancer = self.balancer.unwrap_or(o.balancer);
        o.workers = self.workers;
        o.k6_cpus = self.k6_cpus.unwrap_or(o.k6_cpus);
        o.k6_nice = self.k6_nice.unwrap_or(o.k6_nice);
        o.server_bin = self.server_bin;
        o.database = self.database.unwrap_or(o.database);
        o.label = self.label;
        o.settings = self.settings;
        o.only = self.only.into_iter().flat_map(|n| n.0).collect();
        o.skip = self.skip.into_iter().flat_map(|n| n.0).collect();
        if o.vu_scale == 0.0 || o.duration_scale == 0.0 {
            return Err("--vu-scale and --duration-scale must be greater than 0".to_owned());
        }
        o.apply_quick();
        Ok(o)
    }
}

impl ChaosArgs {
    fn into_options(self) -> Result<ChaosOptions, String> {
        let first = self
            .target
            .ok_or_else(|| format!("chaos needs a fault or `all`\n\n{}", chaos::USAGE))?;
        let (faults, all) = if first == "all" {
            (Fault::ALL.to_vec(), true)
        } else {
            let f = Fault::from_name(&first).ok_or_else(|| unknown_fault(&first))?;
            (vec![f], false)
        };
        Ok(ChaosOptions {
            faults,
            all,
            short: self.short,
            kafka: self.kafka,
            server_bin: self.server_bin,
            settings: self.settings,
            label: self.label,
        })
    }
}

fn unknown_fault(name: &str) -> String {
    let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
    format!("unknown fault `{name}`; one of: {}, all", names.join(", "))
}

/// Which command line clap's error came from (for its wording).
#[derive(Clone, Copy)]
enum Line {
    First,
    Scenario,
    Chaos,
}

/// clap's error in the words the runner has always used: a value's own
/// check speaks for itself, an unknown or valueless option is named.
fn message(e: &clap::Error, line: Line) -> String {
    let arg = || match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.split(' ').next().unwrap_or(s).to_owned()),
        _ => None,
    };
    match e.kind() {
        ErrorKind::ValueValidation => {
            if let Some(source) = std::error::Error::source(e) {
                return source.to_string();
            }
        }
        ErrorKind::UnknownArgument => {
            if let Some(a) = arg() {
                return match line {
                    Line::First => format!("the scenario comes first, got `{a}`"),
                    Line::Scenario => format!("unknown option `{a}`"),
                    Line::Chaos => format!("chaos: unknown option `{a}`\n\n{}", chaos::USAGE),
                };
            }
        }
        ErrorKind::InvalidValue | ErrorKind::NoEquals => {
            let empty = matches!(
                e.get(ContextKind::InvalidValue),
                None | Some(ContextValue::None)
            ) || matches!(e.get(ContextKind::InvalidValue), Some(ContextValue::String(v)) if v.is_empty());
            if let (true, Some(a)) = (empty, arg()) {
                return format!("{a} needs a value");
            }
        }
        _ => {}
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let cli = match Cli::try_parse_from(
        std::iter::once("loadtest").chain(args.iter().map(String::as_str)),
    ) {
        Ok(cli) => cli,
        Err(e) if e.kind() == ErrorKind::DisplayHelp => {
            // `chaos -h` is chaos's help; every other -h the runner's.
            return Ok(if args.first().is_some_and(|a| a == "chaos") {
                Command::ChaosHelp
            } else {
                Command::Help
            });
        }
        Err(e) => {
            let line = match args.first().map(String::as_str) {
                Some("chaos") => Line::Chaos,
                Some("all") => Line::Scenario,
                _ => Line::First,
            };
            return Err(message(&e, line));
        }
    };
    match cli.command {
        None | Some(Top::Help(_)) => Ok(Command::Help),
        Some(Top::List(_)) => Ok(Command::List),
        Some(Top::Chaos(c)) => {
            // The fault comes first: `chaos --short redis-kill` names no fault.
            if let Some(word) = args.get(1).filter(|w| w.starts_with('-')) {
                return Err(unknown_fault(word));
            }
            c.into_options().map(|o| Command::Chaos(Box::new(o)))
        }
        Some(Top::All(run)) => all(run.into_options("all".to_owned())?),
        Some(Top::Scenario(words)) => {
            let line = match ScenarioLine::try_parse_from(&words) {
                Ok(line) => line,
                Err(e) if e.kind() == ErrorKind::DisplayHelp => return Ok(Command::Help),
                Err(e) => return Err(message(&e, Line::Scenario)),
            };
            let o = line.run.into_options(line.scenario)?;
            if !o.only.is_empty() || !o.skip.is_empty() {
                return Err("--only and --skip go with `all`".to_owned());
            }
            Ok(Command::Run(Box::new(o)))
        }
    }
}

/// `all`'s own checks.
fn all(o: RunOptions) -> Result<Command, String> {
    // Each entry's servers stop before the next one starts.
    if o.keep_running {
        return Err("--keep-running does not go with `all`".to_owned());
    }
    if crate::all_plan::plan(&o.only, &o.skip).is_empty() {
        return Err("--only and --skip leave no scenario to run".to_owned());
    }
    Ok(Command::All(Box::new(o)))
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

/// `--set` of `chaos`: any non-empty KEY and VALUE.
fn chaos_setting(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw
        .split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .ok_or_else(|| format!("--set takes KEY=VALUE, got `{raw}`"))?;
    Ok((k.to_owned(), v.to_owned()))
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

fn only(raw: &str) -> Result<Names, String> {
    scenario_list("--only", raw).map(Names)
}

fn skip(raw: &str) -> Result<Names, String> {
    scenario_list("--skip", raw).map(Names)
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

fn instances(raw: &str) -> Result<usize, String> {
    positive("--instances", raw)
}

fn workers(raw: &str) -> Result<usize, String> {
    positive("--workers", raw)
}

fn ceiling_runs(raw: &str) -> Result<usize, String> {
    positive("--ceiling-runs", raw)
}

fn bursts(raw: &str) -> Result<usize, String> {
    positive("--bursts", raw)
}

fn vu_scale(raw: &str) -> Result<f64, String> {
    scale("--vu-scale", raw)
}

fn duration_scale(raw: &str) -> Result<f64, String> {
    scale("--duration-scale", raw)
}

fn think_scale(raw: &str) -> Result<f64, String> {
    scale("--think-scale", raw)
}

fn balancer(raw: &str) -> Result<Balancer, String> {
    match raw {
        "auto" => Ok(Balancer::Auto),
        "nginx" => Ok(Balancer::Nginx),
        "k6" => Ok(Balancer::K6),
        other => Err(format!("--balancer is auto, nginx or k6, got `{other}`")),
    }
}

fn k6_nice(raw: &str) -> Result<i32, String> {
    raw.parse()
        .ok()
        .filter(|n| (-20..=19).contains(n))
        .ok_or_else(|| format!("--k6-nice is a number from -20 to 19, got `{raw}`"))
}

fn database(db: &str) -> Result<String, String> {
    if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "--database takes letters, digits and _, got `{db}`"
        ));
    }
    Ok(db.to_owned())
}

fn label(label: &str) -> Result<String, String> {
    if label.is_empty()
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "--label takes letters, digits, - and _, got `{label}`"
        ));
    }
    Ok(label.to_owned())
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

    fn chaos(s: &str) -> Result<ChaosOptions, String> {
        match parse(&args(&format!("chaos {s}"))) {
            Ok(Command::Chaos(o)) => Ok(*o),
            Ok(other) => panic!("expected chaos, got {other:?}"),
            Err(e) => Err(e),
        }
    }

    #[test]
    fn chaos_parses_faults_and_options() {
        let o = chaos("redis-kill --short --set a.b=c --label ci").unwrap();
        assert_eq!(o.faults, vec![Fault::RedisKill]);
        assert!(o.short && !o.all);
        assert_eq!(o.settings, vec![("a.b".to_owned(), "c".to_owned())]);
        assert_eq!(o.label.as_deref(), Some("ci"));
        let all = chaos("all").unwrap();
        assert!(all.all);
        assert_eq!(all.faults.len(), Fault::ALL.len());
        assert!(chaos("redis-kill --kafka").unwrap().kafka);
        assert!(chaos("nope").is_err());
        assert!(chaos("redis-kill --bogus").is_err());
        assert!(chaos("redis-kill --set =x").is_err());
        assert!(parse(&args("chaos")).is_err());
        assert!(chaos("--short redis-kill").is_err());
        assert_eq!(parse(&args("chaos --help")), Ok(Command::ChaosHelp));
    }

    /// The hand parser's messages, kept.
    #[test]
    fn messages() {
        let err = |s: &str| parse(&args(s)).unwrap_err();
        assert_eq!(err("charge --bogus"), "unknown option `--bogus`");
        assert_eq!(err("charge extra"), "unknown option `extra`");
        assert_eq!(err("charge --instances"), "--instances needs a value");
        assert_eq!(
            err("charge --instances 0"),
            "--instances must be a positive integer, got `0`"
        );
        assert_eq!(
            err("charge --vu-scale -1"),
            "--vu-scale must be a non-negative number, got `-1`"
        );
        assert_eq!(
            err("charge --label --a.b"),
            "--label takes letters, digits, - and _, got `--a.b`"
        );
        assert_eq!(
            err("--instances 2"),
            "the scenario comes first, got `--instances`"
        );
        assert_eq!(err("all --bogus"), "unknown option `--bogus`");
        assert!(err("chaos redis-kill --bogus").starts_with("chaos: unknown option `--bogus`"));
        assert_eq!(
            err("chaos nope").split(';').next(),
            Some("unknown fault `nope`")
        );
    }

    #[test]
    fn help_list_and_repeats() {
        for line in ["help", "-h", "--help", "help me", "charge --help", "all -h"] {
            assert_eq!(parse(&args(line)), Ok(Command::Help), "{line}");
        }
        assert_eq!(parse(&args("list extra")), Ok(Command::List));
        let o = run("charge --instances 2 --instances 3 --quick --quick");
        assert_eq!(o.instances, 3);
        assert_eq!(run("coupon-peak --k6-nice -5").k6_nice, -5);
        assert_eq!(
            run("charge --server-bin --weird").server_bin,
            Some(PathBuf::from("--weird"))
        );
    }
}
