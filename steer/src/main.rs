//! `steer`: the one user-facing binary. All the work is in the crate's library; this prints errors.

fn main() -> std::process::ExitCode {
    steer::cli::main()
}
