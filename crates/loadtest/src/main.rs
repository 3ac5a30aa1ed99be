//! `loadtest`: runs one seed scenario (or `all` of them in turn) against N
//! release instances of commerce-server and writes its report beside the
//! seed's figures. See `loadtests/README.md`.

mod all_plan;
mod base;
mod bursts;
mod chaos;
mod cli;
mod data;
mod k6;
mod nginx;
mod options;
mod outcome;
mod plan;
mod probe;
mod procs;
mod prom;
mod report;
mod rules;
mod run;
mod run_report;
mod scenarios;
mod seeds;
mod server_bin;
mod servermetrics;
mod setup;
mod stack;
mod summary;
mod table;

use cli::Command;
use procs::Children;
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

/// The scenarios, one block each. Written with `writeln!`, not
/// `println!`: a reader that stops early (`list | head`) ends the listing
/// instead of panicking on the closed pipe.
fn list() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = (|| -> std::io::Result<()> {
        writeln!(out, "{:<15} {:<5} what", "scenario", "seed")?;
        for s in scenarios::SCENARIOS {
            writeln!(out, "{:<15} {:<5} {}", s.name, s.seed, s.what)?;
            writeln!(out, "{:<21} headline: {}", "", s.headline)?;
            let needs: Vec<String> = s
                .needs
                .iter()
                .map(|e| format!("{} {}", e.method, e.path))
                .collect();
            writeln!(out, "{:<21} needs: {}", "", needs.join(", "))?;
        }
        Ok(())
    })();
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() -> &'static str {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn main_async(opts: options::RunOptions, argv: Vec<String>) -> u8 {
    let mut children = Children::default();
    let mut server = None;
    let outcome = tokio::select! {
        r = run::run(&opts, &argv, &mut children, &mut server) => Some(r),
        sig = stop_signal() => {
            base::log(format!("{sig}: stopping"));
            None
        }
    };
    let code = match outcome {
        None => 130,
        Some(Ok(done)) => {
            if opts.keep_running && !children.is_empty() {
                base::log(format!(
                    "--keep-running: serving on {}; Ctrl-C stops everything",
                    done.entry.unwrap_or_default()
                ));
                for c in children.describe() {
                    base::log(format!("  {c}"));
                }
                let sig = stop_signal().await;
                base::log(format!("{sig}: stopping"));
            }
            done.exit
        }
        Some(Err(e)) => {
            eprintln!("[loadtest] error: {e:#}");
            base::EXIT_ERROR
        }
    };
    if !children.is_empty() {
        base::log("stopping servers and nginx");
        children.stop_all().await;
    }
    code
}

/// `loadtest all`: every entry of the plan as a normal run, one after the
/// other, then the summary table.
async fn run_all(base: options::RunOptions, argv: Vec<String>) -> u8 {
    let started = chrono::Utc::now();
    let wall = std::time::Instant::now();
    let plan = all_plan::plan(&base.only, &base.skip);
    // One listener for the whole loop: a Ctrl-C between two entries is kept
    // until the next poll rather than lost.
    let stop = stop_signal();
    tokio::pin!(stop);
    // The server, built once for every entry.
    let paths = match base::Paths::locate() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("[loadtest] error: {e:#}");
            return base::EXIT_ERROR;
        }
    };
    let resolved = tokio::select! {
        r = server_bin::server_binary(&base, &paths.root) => r,
        sig = &mut stop => {
            base::log(format!("{sig}: stopping"));
            return 130;
        }
    };
    let mut server = match resolved {
        Ok(bin) if base.server_bin.is_none() => {
            let dir = paths
                .results
                .join(format!("all-{}", started.format("%Y%m%d-%H%M%S")));
            Some(server_bin::pin_binary(bin, &dir, &paths.root))
        }
        Ok(bin) => Some(bin),
        Err(e) => {
            eprintln!("[loadtest] error: {e:#}");
            return base::EXIT_ERROR;
        }
    };
    let mut rows = Vec::new();
    let mut stopped = false;
    let count = plan.len();
    for (i, entry) in plan.into_iter().enumerate() {
        if stopped {
            rows.push(table::Row {
                entry,
                result: table::RowResult::NotRun,
            });
            continue;
        }
        let opts = entry.options(&base);
        let entry_argv = entry.argv(&argv, opts.label.as_deref());
        base::log(format!(
            "all {}/{count}: cargo run -p loadtest --release -- {}",
            i + 1,
            entry_argv.join(" ")
        ));
        // Each entry starts and stops its own servers and nginx.
        let mut children = Children::default();
        let outcome = tokio::select! {
            r = run::run(&opts, &entry_argv, &mut children, &mut server) => Some(r),
            sig = &mut stop => {
                base::log(format!("{sig}: stopping"));
                None
            }
        };
        if !children.is_empty() {
            base::log("stopping servers and nginx");
            children.stop_all().await;
        }
        let result = match outcome {
            None => {
                stopped = true;
                table::RowResult::NotRun
            }
            Some(Ok(done)) => table::RowResult::Done {
                exit: done.exit,
                outcome: done.outcome,
            },
            Some(Err(e)) => {
                eprintln!("[loadtest] error in {}: {e:#}", entry.scenario.name);
                table::RowResult::Error(format!("{e:#}"))
            }
        };
        rows.push(table::Row { entry, result });
    }

    let exit = if stopped {
        130
    } else {
        table::exit_code(&rows)
    };
    let date = started.format("%Y-%m-%d").to_string();
    let meta = table::Meta {
        date: date.clone(),
        started: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        finished: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        minutes: wall.elapsed().as_secs_f64() / 60.0,
        command: format!("cargo run -p loadtest --release -- {}", argv.join(" ")),
        server: server.map(|s| s.text),
        exit,
        stopped,
    };
    let path = paths
        .reports
        .join(table::file_name(base.label.as_deref(), &date));
    let written = std::fs::create_dir_all(&paths.reports)
        .and_then(|()| std::fs::write(&path, table::render(&rows, &meta)));
    println!("\n{}", table::table(&rows));
    match written {
        Ok(()) => base::log(format!("summary {} (exit {exit})", path.display())),
        Err(e) => {
            eprintln!("[loadtest] error: could not write the summary: {e:#}");
            // A lost summary is a run error unless a worse code stands.
            return if exit == base::EXIT_OK {
                base::EXIT_ERROR
            } else {
                exit
            };
        }
    }
    exit
}

/// `loadtest chaos …`: k6 on half the CPUs at a raised priority, as for
/// the scenarios; Ctrl-C stops the run (its processes and cluster go with it).
fn chaos_main(opts: chaos::ChaosOptions, argv: Vec<String>) -> ExitCode {
    if let Err(e) = k6::pin(&options::K6Cpus::Half).and_then(|()| k6::prioritise(-10)) {
        eprintln!("loadtest: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the async runtime: {e}");
            return ExitCode::from(base::EXIT_ERROR);
        }
    };
    let code = runtime.block_on(async move {
        tokio::select! {
            code = chaos::main(opts, argv) => code,
            sig = stop_signal() => {
                base::log(format!("{sig}: stopping"));
                130
            }
        }
    });
    // Dropping the runtime drops the run: its children are killed and its
    // PostgreSQL cluster stopped.
    drop(runtime);
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (opts, all) = match cli::parse(&argv) {
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::List) => {
            list();
            return ExitCode::SUCCESS;
        }
        Ok(Command::Chaos(opts)) => return chaos_main(*opts, argv),
        Ok(Command::ChaosHelp) => {
            println!("{}", chaos::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(opts)) => (*opts, false),
        Ok(Command::All(opts)) => (*opts, true),
        Err(e) => {
            eprintln!("loadtest: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    if let Err(e) = k6::pin(&opts.k6_cpus).and_then(|()| k6::prioritise(opts.k6_nice)) {
        eprintln!("loadtest: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the async runtime: {e}");
            return ExitCode::from(base::EXIT_ERROR);
        }
    };
    let code = if all {
        runtime.block_on(run_all(opts, argv))
    } else {
        runtime.block_on(main_async(opts, argv))
    };
    ExitCode::from(code)
}
