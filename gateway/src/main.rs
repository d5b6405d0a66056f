//! The gateway binary: settings -> telemetry -> build -> serve until stopped -> flush.

use std::process::ExitCode;

use gateway::configuration::Settings;
use gateway::startup::{Application, shutdown_signal};
use gateway::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("gateway: invalid settings: {error}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match telemetry::init(settings.log.format) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("gateway: cannot set up telemetry: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = serve(settings).await;
    // Flushing blocks (and retries against an unreachable collector): off the runtime.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), String> {
    let application = Application::build(settings)
        .await
        .map_err(|e| error_chain(&e))?;
    // A stable line for scripts and the test harness.
    println!("gateway listening on http://{}", application.address());
    tracing::info!(address = %application.address(), "gateway listening");
    application.run_until_stopped(shutdown_signal()).await;
    Ok(())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
