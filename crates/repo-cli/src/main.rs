//! `bulwark-repo`: administration of a repository, run on the repository host as the service
//! user. Exit codes: 0 ok, 1 damage found, 2 operational error.

/// `outln!` / `out!`: printing that survives a closed standard output (`… | head`).
#[macro_use]
extern crate bulwark_cli_common;

mod cmd;

use clap::{Parser, Subcommand};

bulwark_cli_common::cli_args! {
    /// Administer a Bulwark repository on its host.
    struct Cli {}
}

#[derive(Subcommand)]
enum Command {
    /// Check the host's hardening: service user, modes, immutability service, clock, ports, ssh.
    Audit(cmd::audit::Args),
    /// Create a repository in a new, empty folder.
    Init(cmd::init::Args),
    /// Set up a fresh host as root: service user, guarded repository, immutability service
    /// configuration, nftables snippet (port 6162 only), units enabled and started.
    Install(cmd::install::Args),
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
    /// Write the repository as one self-contained HTML page: jobs, lock timeline, space, alerts.
    Report(cmd::report::Args),
    /// Moved to `bulwark-tier`, so that this binary (the transport on 6162) links no S3 SDK.
    #[command(hide = true)]
    Tier {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the transport service (TLS on port 6162) as the unprivileged service user.
    Serve(cmd::serve::Args),
    /// Print a single-use enrollment token for a new client.
    Enroll(cmd::enroll::Args),
    /// List enrolled clients; revoke a client's certificates.
    Clients(cmd::clients::Args),
}

fn main() {
    let cli = Cli::parse();
    // The service logs every connection by default; the admin commands only warnings.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    bulwark_cli_common::log_to_stderr(default_level);
    let res = match cli.command {
        Command::Audit(a) => cmd::audit::run(a, cli.json),
        Command::Init(a) => cmd::init::run(a, cli.json),
        Command::Install(a) => cmd::install::run_install(a, cli.json),
        Command::Status(a) => cmd::status::run(a, cli.json),
        Command::Verify(a) => cmd::verify::run(a, cli.json),
        Command::Serve(a) => cmd::serve::run(a, cli.json),
        Command::Enroll(a) => cmd::enroll::run(a, cli.json),
        Command::Clients(a) => cmd::clients::run(a, cli.json),
        Command::Policy(a) => cmd::policy::run(a, cli.json),
        Command::Retention(a) => cmd::retention::run(a, cli.json),
        Command::Synthesize(a) => cmd::synthesize::run(a, cli.json),
        Command::Space(a) => cmd::space::run(a, cli.json),
        Command::Report(a) => cmd::report::run(a, cli.json),
        Command::Tier { args } => {
            eprintln!(
                "error: the S3 tier has its own command now: run `bulwark-tier {}`",
                args.join(" ")
            );
            Ok(2)
        }
    };
    bulwark_cli_common::exit_with(res)
}
