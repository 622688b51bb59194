//! The `corral` command: a thin shell over the daemon (`corral_daemon`) and the library
//! (`corral`). See `corral --help`.

fn main() -> std::process::ExitCode {
    corral_daemon::main()
}
