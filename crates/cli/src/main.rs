//! `bulwark`: the client. Backs up disk images and block devices, restores, lists, verifies.
//!
//! Exit codes: 0 all is well; 1 damage was found (verify, or a restore that met a bad block);
//! 2 an operational error (bad arguments, unreadable source, full disk, …).

/// `outln!` / `out!`: printing that survives a closed standard output (`… | head`).
#[macro_use]
extern crate bulwark_cli_common;

mod cmd;
mod notify;
mod output;
mod repo;

use clap::{Parser, Subcommand};

bulwark_cli_common::cli_args! {
    /// Bulwark: image-level backups into a hardened, immutable repository.
    struct Cli {
        /// Folder of the client's credentials (default $BULWARK_CONFIG_DIR, else
        /// $XDG_CONFIG_HOME/bulwark or ~/.config/bulwark).
        #[arg(long, global = true)]
        config_dir: Option<std::path::PathBuf>,
    }
}

#[derive(Subcommand)]
enum Command {
    /// Back up a raw disk image or block device as a new restore point of a job.
    Backup(cmd::backup::Args),
    /// Restore a restore point to a file or block device, byte-identical.
    Restore(cmd::restore::Args),
    /// List jobs, chains and restore points.
    List(cmd::list::Args),
    /// Re-read every stored block and report damaged restore points (exit 1 if any).
    Verify(cmd::verify::Args),
    /// Keys of encrypted backups: create, show, passwd, rotate, paper, unpaper.
    Key(cmd::key::Args),
    /// Enroll with a repository service using a single-use token: generates this client's key
    /// and stores its certificate.
    Enroll(cmd::enroll::Args),
    /// Copy restore points to a second repository (off-site), or compare both with --verify.
    Copy(cmd::copy::Args),
    /// Scheduled jobs from a job file: `job run FILE`, `job plan FILE`, `job check FILES`.
    Job(cmd::job::Args),
    /// Serve a restore point as an NBD export (read-only, or writable through an overlay).
    Export(cmd::export::Args),
    /// Show a restore point's disk as a read-only file through FUSE and, as root, mount its
    /// partitions read-only under DIR/partN (file-level restore).
    Mount(cmd::mount::Args),
    /// Undo `bulwark mount DIR`: partition mounts, loop devices, the FUSE disk file.
    Umount(cmd::mount::UmountArgs),
    /// Serve this client's jobs as a live, read-only web page (loopback by default).
    Dashboard(cmd::dashboard::Args),
    /// Run a complete tour in ./bulwark-demo: repository, disk image, full, incremental, restore, verify.
    Demo(bulwark_demo::Args),
}

fn main() {
    bulwark_cli_common::log_to_stderr("warn");
    let cli = Cli::parse();
    let config_dir = bulwark_remote::config_dir(cli.config_dir.as_deref());
    let out = output::Output { json: cli.json };
    let res = match cli.command {
        Command::Backup(a) => cmd::backup::run(a, &config_dir, &out),
        Command::Restore(a) => cmd::restore::run(a, &config_dir, &out),
        Command::List(a) => cmd::list::run(a, &config_dir, &out),
        Command::Verify(a) => cmd::verify::run(a, &config_dir, &out),
        Command::Export(a) => cmd::export::run(a, &config_dir, &out),
        Command::Mount(a) => cmd::mount::run(a, &config_dir, &out),
        Command::Umount(a) => cmd::mount::run_umount(a, &out),
        Command::Demo(a) => bulwark_demo::run(a, &out),
        Command::Dashboard(a) => cmd::dashboard::run(a, &config_dir, &out),
        Command::Key(a) => cmd::key::run(a, &out),
        Command::Enroll(a) => cmd::enroll::run(a, &config_dir, &out),
        Command::Copy(a) => cmd::copy::run(a, &config_dir, &out),
        Command::Job(a) => cmd::job::run(a, &config_dir, &out),
    };
    bulwark_cli_common::exit_with(res)
}
