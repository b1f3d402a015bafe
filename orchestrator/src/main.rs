//! `steer`: the one user-facing binary. All the work is in the library; this prints errors.

fn main() -> std::process::ExitCode {
    orchestrator::cli::main()
}
