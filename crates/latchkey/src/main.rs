//! The `latchkey` binary: parses the command line and runs it (see `cli.rs`).

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the request path allocates small buffers at a
/// high rate (perf showed glibc malloc/free at ~8% of a loaded core).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    latchkey::cli::main().await
}
