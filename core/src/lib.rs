//! twofactor-core: every decision twofactor makes, shared by the PAM module and the CLI.
//!
//! The module and the CLI are thin adapters: they read the [`config::Config`], ask the
//! [`policy::Policy`] whether a user must use a second factor, ask
//! [`login::next_step`] what happens next, and read or change user state only through
//! the [`backend::Backend`] trait, so a login and the command line always agree.

#![forbid(unsafe_code)]

pub mod after_login;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod backup_codes;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod enroll;
mod fsutil;
pub mod import;
pub mod last_good;
pub mod lockout;
pub mod login;
pub mod module_args;
pub mod net;
pub mod one_prompt;
pub mod policy;
pub mod qr;
pub mod random;
pub mod ssh_factor;
pub mod store;
#[cfg(test)]
mod testing;
pub mod text;
pub mod totp;
pub mod trusted;

/// Where the config lives unless the module's `config=` or the CLI's `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/twofactor/config.toml";
