//! The `boundary-realtime` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    boundary_realtime::cli::main()
}
