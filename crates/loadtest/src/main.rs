//! `loadtest`: runs one seed scenario against N release instances of
//! commerce-server and writes its report beside the seed's figures.
//! See `loadtests/README.md`.

mod cli;
mod k6;
mod nginx;
mod probe;
mod procs;
mod report;
mod rules;
mod run;
mod scenarios;
mod seeds;
mod setup;
mod summary;

use cli::Command;
use procs::Children;
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

fn list() {
    println!("{:<14} {:<5} what", "scenario", "seed");
    for s in scenarios::SCENARIOS {
        println!("{:<14} {:<5} {}", s.name, s.seed, s.what);
        let needs: Vec<String> = s
            .needs
            .iter()
            .map(|e| format!("{} {}", e.method, e.path))
            .collect();
        println!("{:<20} needs: {}", "", needs.join(", "));
    }
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

async fn main_async(opts: cli::RunOptions, argv: Vec<String>) -> u8 {
    let mut children = Children::default();
    let outcome = tokio::select! {
        r = run::run(&opts, &argv, &mut children) => Some(r),
        sig = stop_signal() => {
            run::log(format!("{sig}: stopping"));
            None
        }
    };
    let code = match outcome {
        None => 130,
        Some(Ok(done)) => {
            if opts.keep_running && !children.is_empty() {
                run::log(format!(
                    "--keep-running: serving on {}; Ctrl-C stops everything",
                    done.entry.unwrap_or_default()
                ));
                for c in children.describe() {
                    run::log(format!("  {c}"));
                }
                let sig = stop_signal().await;
                run::log(format!("{sig}: stopping"));
            }
            done.exit
        }
        Some(Err(e)) => {
            eprintln!("[loadtest] error: {e:#}");
            run::EXIT_ERROR
        }
    };
    if !children.is_empty() {
        run::log("stopping servers and nginx");
        children.stop_all().await;
    }
    code
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let opts = match cli::parse(&argv) {
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::List) => {
            list();
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(opts)) => *opts,
        Err(e) => {
            eprintln!("loadtest: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the async runtime: {e}");
            return ExitCode::from(run::EXIT_ERROR);
        }
    };
    ExitCode::from(runtime.block_on(main_async(opts, argv)))
}
