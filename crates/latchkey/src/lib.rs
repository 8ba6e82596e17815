//! The `latchkey` binary's library half: configuration, the CLI and the server builder, so
//! that `latchkey-testkit` starts exactly what `main` starts.

pub mod cli;
pub mod config;
pub mod outbound_http;
pub mod server;
pub mod smtp;
