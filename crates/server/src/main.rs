//! `commerce-server` serves (migrating first); `commerce-server migrate`
//! applies migrations and exits.

use commerce_server::{app, telemetry, Application, Settings};
use std::process::ExitCode;
use std::time::Duration;

// A request allocates many small short-lived buffers (headers, JSON, span
// fields) across threads; glibc malloc spent ~10 % of a worker's CPU in a
// coupon burst on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("commerce-server: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&settings.log.format, &settings.log.level);
    let command = std::env::args().nth(1);
    let result = match command.as_deref() {
        Some("migrate") => app::migrate(&settings).await.map(|applied| {
            tracing::info!(count = applied.len(), ?applied, "migrations applied");
        }),
        None | Some("serve") => serve(settings).await,
        Some(other) => {
            eprintln!("commerce-server: unknown command `{other}` (use `migrate` or no command)");
            return ExitCode::from(2);
        }
    };
    match result {
        // The runtime is not dropped: its drop waits for blocking calls
        // (a metadata probe, a client's destruction) a stalled broker can
        // hold; the outbox keeps whatever was not delivered.
        Ok(()) if command.as_deref() != Some("migrate") => std::process::exit(0),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "commerce-server failed");
            eprintln!("commerce-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let bound = Duration::from_secs(settings.http.shutdown_timeout_secs);
    let app = Application::build(settings).await?;
    arm_watchdog(bound);
    tracing::info!(port = app.port(), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Makes SIGTERM (or SIGINT) stop the process within `bound`, whatever a
/// dependency does: the server stops gracefully on its own, and this
/// thread, on a runtime of its own (so blocked workers cannot delay it),
/// ends the process once `bound` has passed since the signal. What a
/// stalled broker still held stays in the outbox, and is published again
/// later.
fn arm_watchdog(bound: Duration) {
    let spawned = std::thread::Builder::new()
        .name("shutdown-watchdog".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "shutdown watchdog not armed");
                    return;
                }
            };
            let signalled = runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return false;
                };
                tokio::select! {
                    _ = term.recv() => true,
                    _ = int.recv() => true,
                }
            });
            if !signalled {
                tracing::warn!("shutdown watchdog could not listen for signals");
                return;
            }
            std::thread::sleep(bound);
            tracing::error!(
                bound_secs = bound.as_secs(),
                "shutdown did not finish within http.shutdown_timeout_secs: exiting now"
            );
            eprintln!("commerce-server: shutdown timeout reached, exiting");
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "shutdown watchdog not armed");
    }
}
