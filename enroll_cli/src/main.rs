//! `twofactor`: the command-line tool for users (enroll, backup codes, new phone) and
//! administrators (status, explain, reset, unlock, import).

#![deny(unsafe_code)]

mod audit_log;
mod cli;
mod context;
mod docs;
mod doctor;
mod edit;
mod enroll;
mod files;
mod fleet;
// The command's only unsafe: libc calls about this machine, and about the process.
#[allow(unsafe_code)]
mod host;
mod import;
mod manage;
mod paper;
mod password;
mod prompt;
mod report;
#[allow(unsafe_code)]
mod sys;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, FleetCommand, TrustCommand};
use crate::context::{Ctx, Error};

fn main() -> ExitCode {
    // First, before anything can read it: clear the environment and what else a caller
    // hands a setuid program (limits, signals, dumpability, group).
    let taken = sys::take_environment();
    if let Err(e) = sys::harden_process() {
        eprintln!("twofactor: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match run(cli, taken) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twofactor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, taken: sys::Taken) -> Result<(), Error> {
    let env_config = taken.config;
    // Commands that need no config, or only its path.
    match &cli.command {
        Command::EditConfig => return edit::run(&cli, env_config, &taken.editor),
        Command::GenerateDocs { dir } => return docs::generate(dir),
        Command::CheckConfig { path } => {
            return report::check_config(&cli, path.as_deref(), env_config);
        }
        Command::Doctor(args) => return doctor::run(&cli, args, env_config),
        Command::Fleet(FleetCommand::Init(args)) => return fleet::init(args, cli.json),
        Command::Fleet(FleetCommand::RotateKey(args)) => return fleet::rotate_key(args, cli.json),
        Command::Fleet(FleetCommand::AddHost(args)) => return fleet::add_host(args, cli.json),
        Command::Fleet(FleetCommand::Hosts(args)) => return fleet::hosts(args, cli.json),
        Command::Fleet(FleetCommand::RemoveHost(args)) => {
            return fleet::remove_host(args, cli.json);
        }
        _ => {}
    }
    let ctx = Ctx::new(&cli, env_config)?;
    match cli.command {
        Command::Enroll(args) => enroll::run(&ctx, &args),
        Command::Status { user, all } => report::status(&ctx, user.as_deref(), all),
        Command::Explain {
            user,
            service,
            from,
        } => report::explain(&ctx, user.as_deref(), service.as_deref(), from.as_deref()),
        Command::BackupCodes(args) => manage::backup_codes(&ctx, &args),
        Command::Disable { user, remove } => manage::disable(&ctx, user.user.as_deref(), remove),
        Command::Enable(u) => manage::enable(&ctx, u.user.as_deref()),
        Command::Reset { user } => manage::reset(&ctx, &user),
        Command::Unlock { user } => manage::unlock(&ctx, &user),
        Command::Trust(TrustCommand::List(u)) => manage::trust_list(&ctx, u.user.as_deref()),
        Command::Trust(TrustCommand::Revoke { user, id, all }) => {
            manage::trust_revoke(&ctx, user.user.as_deref(), id.as_deref(), all)
        }
        Command::ImportGoogleAuthenticator(args) => import::run(&ctx, &args),
        Command::Tidy { dry_run } => manage::tidy(&ctx, dry_run),
        Command::Fleet(FleetCommand::Import(args)) => fleet::import(&ctx, &args),
        Command::Log(args) => audit_log::run(&ctx, &args),
        Command::GenerateDocs { .. }
        | Command::CheckConfig { .. }
        | Command::EditConfig
        | Command::Fleet(_)
        | Command::Doctor(_) => Ok(()),
    }
}
