//! The warpwatch binary: all behaviour lives in the library (see src/lib.rs).

fn main() -> std::process::ExitCode {
    warpwatch::cli::main(std::env::args_os().skip(1).collect())
}
