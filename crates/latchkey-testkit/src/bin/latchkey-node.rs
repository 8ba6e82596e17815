//! The `latchkey` binary, built again inside the testkit so that its tests can start real
//! `latchkey serve` processes (Cargo gives a package's tests the paths of its own binaries
//! only, as `CARGO_BIN_EXE_<name>`). Same `main` as `crates/latchkey/src/main.rs`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    latchkey::cli::main().await
}
