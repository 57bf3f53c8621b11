//! `bulwark-repo`: administration of a repository, run on the repository host as the service
//! user. Exit codes: 0 ok, 1 damage found, 2 operational error.

mod cmd;

use clap::{Parser, Subcommand};

/// Administer a Bulwark repository on its host.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a repository in a new, empty folder.
    Init(cmd::init::Args),
    /// Show the repository's settings, jobs, and files waiting to be sealed.
    Status(cmd::status::Args),
    /// Show or set a job's retention policy (days, points, GFS weekly/monthly/yearly).
    Policy(cmd::policy::Args),
    /// Show and apply the retention plan: which restore points are kept, and why.
    Retention(cmd::retention::Args),
    /// Build a new full from a job's newest restore point by cloning its blocks.
    Synthesize(cmd::synthesize::Args),
    /// Logical, physical and shared bytes per job and chain, and what is locked until when.
    Space(cmd::space::Args),
    /// Re-read every stored block of every restore point (exit 1 if damage is found).
    Verify(cmd::verify::Args),
    /// Copies in S3 Object Lock storage: add, sync, verify, import.
    Tier(cmd::tier::Args),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BULWARK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Init(a) => cmd::init::run(a, cli.json),
        Command::Status(a) => cmd::status::run(a, cli.json),
        Command::Verify(a) => cmd::verify::run(a, cli.json),
        Command::Policy(a) => cmd::policy::run(a, cli.json),
        Command::Retention(a) => cmd::retention::run(a, cli.json),
        Command::Synthesize(a) => cmd::synthesize::run(a, cli.json),
        Command::Space(a) => cmd::space::run(a, cli.json),
        Command::Tier(a) => cmd::tier::run(a, cli.json),
    };
    match res {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let damage = e.chain().any(|c| {
                c.downcast_ref::<bulwark_repository::RepoError>()
                    .is_some_and(|r| r.is_damage())
            });
            std::process::exit(if damage { 1 } else { 2 });
        }
    }
}
