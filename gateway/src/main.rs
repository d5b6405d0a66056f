//! The gateway binary: settings -> telemetry -> build -> serve until stopped -> flush;
//! or, as `gateway purge --keep N`, one retention pass over the store, then flush.

use std::process::ExitCode;

use gateway::configuration::Settings;
use gateway::purge::{self, PurgeArgs};
use gateway::startup::{Application, shutdown_signal};
use gateway::telemetry;
use tracing::Instrument;

/// What the command line asks for.
enum Command {
    /// No arguments: serve.
    Serve,
    /// `purge --keep N`.
    Purge(PurgeArgs),
}

/// What `--help` prints; settings come from `GATEWAY__*` and `OTEL_*` variables.
const USAGE: &str = "usage: gateway [purge --keep N]
  (no command)     serve the API (settings: GATEWAY__* variables, gateway/README.md)
  purge --keep N   delete the stored predictions of every model run but the live one
                   and the N newest others, then print a JSON summary";

// One thread for the main runtime: connections are served on the serving threads'
// runtimes (`serving_threads.rs`); this one runs start-up, misses' computations,
// write-behind retries and the exporters' connections.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let command = match args.split_first() {
        None => Command::Serve,
        Some((first, rest)) if first == "purge" => match PurgeArgs::parse(rest) {
            Ok(args) => Command::Purge(args),
            Err(error) => {
                eprintln!("gateway purge: {error}\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        Some((first, _)) => {
            eprintln!("gateway: unknown command {first:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
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
    let result = match command {
        Command::Serve => serve(settings).await,
        Command::Purge(args) => run_purge(settings, args).await,
    };
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

async fn run_purge(settings: Settings, args: PurgeArgs) -> Result<(), String> {
    let summary = purge::purge(&settings, args)
        .instrument(tracing::info_span!("gateway purge"))
        .await
        .map_err(|e| error_chain(&e))?;
    // The last stdout line, for the scheduler's log and scripts.
    println!("{}", serde_json::json!(summary));
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
