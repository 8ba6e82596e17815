//! The `latchkey` binary: parses the command line and runs it (see `cli.rs`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    latchkey::cli::main().await
}
