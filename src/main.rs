use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = slipway::cli::Cli::parse();
    let verbose = cli.verbose > 0;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(slipway::run(cli));
    // Blocking tasks still running after an interrupted run only hash or pack a context (read
    // only): don't wait for them to get through a large one.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    // Whatever a stopped task was still writing into a temporary directory.
    slipway::leftovers::remove_own_dirs();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let daemon = slipway::docker::endpoint().host;
            let timeout = slipway::docker::request_timeout().as_secs();
            eprint!(
                "{}",
                slipway::error::render_for(&err, Some((&daemon, timeout)), verbose)
            );
            ExitCode::from(slipway::error::exit_and_hint(&err).0.code())
        }
    }
}
