//! The `corral` command: a thin shell over the daemon (`corral_daemon`) and the library
//! (`corral`). See `corral --help`.

mod cli;
mod invoke;
mod new;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
