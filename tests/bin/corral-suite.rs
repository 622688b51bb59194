//! The `corral` command, as the integration suite and the daemon benchmarks run it: the
//! same `corral_daemon::main` as the `corral` binary, built by the same `cargo test` (or
//! `cargo bench`) as the suite, so a run compiles the library and the daemon once rather
//! than twice with two sets of features. `corral_test_guests::corral_exe` finds it.

fn main() -> std::process::ExitCode {
    corral_daemon::main()
}
