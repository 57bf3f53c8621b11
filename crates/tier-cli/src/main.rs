//! `bulwark-tier`: copies of a repository's sealed restore points in S3 Object Lock storage,
//! run on the repository host as the service user. Its own binary, so that `bulwark-repo`
//! (whose `serve` listens on 6162) links no S3 SDK, no async runtime and no HTTP stack.
//! Exit codes: 0 ok, 1 damage found, 2 operational error.

/// `outln!` / `out!`: printing that survives a closed standard output (`… | head`).
#[macro_use]
extern crate bulwark_cli_common;

mod cmd;

use clap::{Parser, Subcommand};

bulwark_cli_common::cli_args! {
    /// Copies of a Bulwark repository's restore points in S3 Object Lock storage.
    struct Cli {}
}

#[derive(Subcommand)]
enum Command {
    /// Add a tier: checks the bucket has Object Lock and that the store enforces it.
    Add(cmd::add::Args),
    /// Upload restore points not copied yet, extend retention of grown chains, apply move mode.
    Sync(cmd::sync::Args),
    /// Check every copy's version, lock mode, retain-until and content hash (exit 1 if bad).
    Verify(cmd::verify::Args),
    /// Rebuild a repository's tier catalog from the bucket alone (the host was lost).
    Import(cmd::import::Args),
    /// Show each tier's copies from the local catalog (no request to the store).
    Status(cmd::status::Args),
}

fn main() {
    let cli = Cli::parse();
    bulwark_cli_common::log_to_stderr("warn");
    let res = match cli.command {
        Command::Add(a) => cmd::add::run(a, cli.json),
        Command::Sync(a) => cmd::sync::run(a, cli.json),
        Command::Verify(a) => cmd::verify::run(a, cli.json),
        Command::Import(a) => cmd::import::run(a, cli.json),
        Command::Status(a) => cmd::status::run(a, cli.json),
    };
    bulwark_cli_common::exit_with(res)
}
