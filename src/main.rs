use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = slipway::cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(slipway::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprint!("{}", slipway::error::render(&err));
            ExitCode::from(slipway::error::exit_and_hint(&err).0.code())
        }
    }
}
