//! `commerce-server` serves (migrating first); `commerce-server migrate`
//! applies migrations and exits.

use commerce_server::{app, telemetry, Application, Settings};
use std::process::ExitCode;

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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "commerce-server failed");
            eprintln!("commerce-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
