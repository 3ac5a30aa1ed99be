//! `loadtest chaos <fault>` and `loadtest chaos all`: one real fault under a
//! mixed load, against a deployment of the run's own (a disposable
//! PostgreSQL cluster and Redis on free loopback ports, in Kafka mode a
//! broker too, two instances, nginx), then every rule checked and an
//! incident timeline written. See
//! `loadtests/README.md`, section "Chaos".

mod all;
mod checks;
mod deploy;
mod faults;
mod figures;
mod infra;
mod monitor;
mod plan;
mod report;
mod run;
pub(crate) mod stub;
mod timeline;

// The test kit's TCP fault proxy (latency for redis-slow and pg-slow).
#[path = "../../../testkit/src/chaos.rs"]
#[allow(dead_code)]
mod proxy;

use crate::base::{self, Paths};
use crate::{procs, server_bin};
use anyhow::{Context, Result};
use plan::log;
pub use plan::{ChaosOptions, Fault};
use run::run_one;

pub const USAGE: &str = "\
usage: cargo run -p loadtest --release -- chaos <fault>|all [options]

Starts a deployment of its own (a disposable PostgreSQL cluster and Redis on free
loopback ports, in Kafka mode a tansu broker too, two commerce-server instances,
nginx, a local alert webhook and data-platform receiver), drives a mixed load
(product reads and order + payment at a constant rate; a coupon burst and a flash
sale when the fault lands), injects one real fault, lets it heal, checks every rule
and writes loadtests/reports/chaos-<fault>-<date>.md with a timeline (.svg). `all`
runs every fault in turn and ends with loadtests/reports/chaos-all-<date>.md.

faults:
  redis-kill          Redis SIGKILLed, restarted empty on the same port
  instance-kill       one instance SIGKILLed mid-payment, started again
  redis-stall         Redis frozen (SIGSTOP), then resumed (SIGCONT)
  redis-flush         every Redis key wiped (FLUSHALL)
  pg-restart          pg_ctl restart -m fast
  pg-connections      the service's PostgreSQL connections terminated, again and again
  data-platform-down  the data platform's receiver stops listening
  data-platform-slow  the data platform answers after 3 s (the service waits 2 s)
  redis-slow          250 ms added to every Redis read and write (TCP proxy)
  pg-slow             100 ms added to every PostgreSQL read and write (TCP proxy)
  lock-holder-stall   an instance holding payment locks frozen past the lease (13 s)
  broker-down         Kafka mode: the broker SIGKILLed, restarted on the same port and storage
  broker-stall        Kafka mode: the broker frozen (SIGSTOP), then resumed (SIGCONT)

options:
  --short             the CI form: 22 s of load, a 5 s fault, fewer users
  --kafka             Kafka mode for every fault: a broker of the run's own (tansu, from
                      TANSU_BIN, PATH or ~/.cargo/bin), events relayed through it; the
                      broker-* faults are always in Kafka mode (report: chaos-<fault>-kafka-…)
  --server-bin PATH   use this commerce-server binary instead of building one
  --set KEY=VALUE     server setting for every instance (as for scenarios)
  --label TEXT        report name: chaos-<fault>-<label>-<date>.md

exit codes: 0 every rule held, no 500, every acknowledged write in PostgreSQL, every
breaker closed at the end and within 3 s of its dependency's return (and, after a
broker fault, every event published and applied by every consumer group); 1 run
error; 2 usage; 5 any of those broke.";
/// `chaos <fault>` or `chaos all`: the exit code.
pub async fn main(opts: ChaosOptions, argv: Vec<String>) -> u8 {
    match main_inner(&opts, &argv).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("[loadtest] error: {e:#}");
            base::EXIT_ERROR
        }
    }
}

async fn main_inner(opts: &ChaosOptions, argv: &[String]) -> Result<u8> {
    let started = chrono::Utc::now();
    let paths = Paths::locate()?;
    procs::raise_nofile_limit();
    let binary = server_bin::resolve_server(opts.server_bin.as_deref(), &paths.root).await?;
    let binary = if opts.all && opts.server_bin.is_none() {
        let dir = paths
            .results
            .join(format!("chaos-all-{}", started.format("%Y%m%d-%H%M%S")));
        server_bin::pin_binary(binary, &dir, &paths.root)
    } else {
        binary
    };
    let mut outcomes = Vec::new();
    let mut errors = Vec::new();
    for fault in &opts.faults {
        log(format!("=== {} ===", fault.name()));
        match run_one(*fault, opts, argv, &binary, &paths).await {
            Ok(o) => {
                log(format!(
                    "{}: {} ({})",
                    fault.name(),
                    if o.passed { "PASS" } else { "FAIL" },
                    base::rel(&paths.root, &o.report)
                ));
                outcomes.push(o);
            }
            Err(e) => {
                eprintln!("[loadtest] chaos {}: error: {e:#}", fault.name());
                errors.push((*fault, format!("{e:#}")));
            }
        }
    }
    let failed = outcomes.iter().any(|o| !o.passed);
    let run_errors = !errors.is_empty();
    if opts.all {
        let date = started.format("%Y-%m-%d").to_string();
        let name = match &opts.label {
            Some(l) => format!("chaos-all-{l}-{date}.md"),
            None => format!("chaos-all-{date}.md"),
        };
        let path = paths.reports.join(name);
        let text = all::render_all(
            &outcomes,
            &errors,
            &format!("cargo run -p loadtest --release -- {}", argv.join(" ")),
            &started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            &binary.text,
            &paths.root,
        );
        std::fs::create_dir_all(&paths.reports)?;
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        println!("\n{}", all::table(&outcomes, &errors, &paths.root));
        log(format!("summary {}", base::rel(&paths.root, &path)));
    }
    Ok(if failed {
        base::EXIT_RULES
    } else if run_errors {
        base::EXIT_ERROR
    } else {
        base::EXIT_OK
    })
}
