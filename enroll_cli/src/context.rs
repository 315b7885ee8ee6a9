//! Who is calling, which config applies, and the checks every command shares: root-only
//! options, acting on one's own account, and confirming identity before a change.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use nix::unistd::{User, getuid};
use twofactor_core::audit::{Event, Outcome, Reason};
use twofactor_core::auth::{CodeResult, Purpose};
use twofactor_core::backend::{self, Authority, Backend, BackendError, UserFacts, postgresql};
use twofactor_core::config::{BackendKind, Config};
use twofactor_core::policy::{Directory, Nss, Requirement};
use twofactor_core::store::{Store, StoreError};

use crate::cli::Cli;
use crate::{password, prompt};

/// syslog ident of the command's audit lines.
pub const IDENT: &str = "twofactor";
/// PAM service used to confirm the caller's password.
pub const PAM_SERVICE: &str = "twofactor";

/// A one-line failure reason for stderr.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! from_display {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self(e.to_string())
            }
        }
    )*};
}
from_display!(
    StoreError,
    twofactor_core::store::FileError,
    twofactor_core::config::ConfigError,
    twofactor_core::policy::LookupError,
    BackendError,
    twofactor_core::random::RandomError,
    twofactor_core::backup_codes::GenerateError,
    std::io::Error,
    serde_json::Error,
    String
);

impl From<&str> for Error {
    fn from(e: &str) -> Self {
        Self(e.to_string())
    }
}

/// The real user running the command.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Real uid (never the effective one, never `$USER`).
    pub uid: u32,
    /// Their login name.
    pub name: String,
}

impl Caller {
    /// Root may act on anyone and skips the identity checks.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// The caller, from the real uid.
pub fn caller() -> Result<Caller, Error> {
    let uid = getuid();
    let user = User::from_uid(uid)
        .map_err(|e| Error(format!("cannot look up uid {uid}: {e}")))?
        .ok_or_else(|| Error(format!("uid {uid} has no user name")))?;
    Ok(Caller {
        uid: uid.as_raw(),
        name: user.name,
    })
}

/// The config path: `--config` or `TWOFACTOR_CONFIG` for root, the default otherwise.
pub fn config_path(
    cli: &Cli,
    caller: &Caller,
    env_config: Option<OsString>,
) -> Result<PathBuf, Error> {
    let chosen = cli.config.clone().or_else(|| env_config.map(PathBuf::from));
    match chosen {
        Some(_) if !caller.is_root() => {
            Err("--config and TWOFACTOR_CONFIG are for root only".into())
        }
        Some(p) => Ok(p),
        None => Ok(PathBuf::from(twofactor_core::DEFAULT_CONFIG_PATH)),
    }
}

/// Everything a command needs.
#[derive(Debug)]
pub struct Ctx {
    /// Who runs the command.
    pub caller: Caller,
    /// The validated config.
    pub config: Config,
    /// `--json`.
    pub json: bool,
}

impl Ctx {
    /// Loads the config and checks that the command can reach the root-owned store.
    pub fn new(cli: &Cli, env_config: Option<OsString>) -> Result<Self, Error> {
        let caller = caller()?;
        if !nix::unistd::geteuid().is_root() {
            return Err("twofactor must run as root: use sudo, or install it setuid root as the packages do".into());
        }
        let path = config_path(cli, &caller, env_config)?;
        let config = Config::load(&path, 0)?;
        Ok(Self {
            caller,
            config,
            json: cli.json,
        })
    }

    /// Where user state lives, as the config says: every read and change of a user's
    /// state goes through it.
    pub fn backend(&self) -> Result<Box<dyn Backend>, Error> {
        Ok(backend::open(&self.config, 0)?)
    }

    /// The backend as an administrator: the same file store, or on a fleet the database
    /// as `twofactor_admin`, which only the admin config's certificate can be.
    pub fn admin_backend(&self) -> Result<Box<dyn Backend>, Error> {
        Ok(backend::open_admin(&self.config, 0)?)
    }

    /// On a fleet, as root with an administrator's certificate: the database as
    /// `twofactor_admin`, which sees every host's reports. `None` on a host (its
    /// certificate is not an administrator's) and with the file store.
    pub fn fleet_admin_view(&self) -> Option<postgresql::Postgresql> {
        if !self.caller.is_root() || self.config.storage.backend != BackendKind::Postgresql {
            return None;
        }
        let admin = backend::fleet_admin(&self.config).ok()?;
        admin.session_role().ok().map(|_| admin)
    }

    /// The backend for a change by this caller: root changes take no code, so on a fleet
    /// they need the admin role; a user's own go through the host with a current code.
    pub fn backend_for_change(&self) -> Result<Box<dyn Backend>, Error> {
        if self.caller.is_root() {
            self.admin_backend()
        } else {
            self.backend()
        }
    }

    /// The file store itself, for the maintenance only files need (`tidy`).
    pub fn store(&self) -> Result<Store, Error> {
        Ok(Store::open(&self.config.storage.state_dir)?)
    }

    /// Fails unless the caller is root.
    pub fn require_root(&self, what: &str) -> Result<(), Error> {
        if self.caller.is_root() {
            Ok(())
        } else {
            Err(Error(format!("{what} is for root only")))
        }
    }

    /// The user to act on, by the account's canonical name: `user` (root only, unless it
    /// is the caller) or the caller. An account the name service does not know is refused.
    pub fn target(&self, user: Option<&str>) -> Result<String, Error> {
        let Some(typed) = user else {
            return Ok(self.caller.name.clone());
        };
        let name = Nss.account(typed)?.ok_or_else(|| {
            Error(format!(
                "no account named {typed:?}; for state left behind by a deleted account, root can run 'twofactor reset {typed}'"
            ))
        })?;
        if name == self.caller.name || self.caller.is_root() {
            twofactor_core::store::validate_user_name(&name)?;
            Ok(name)
        } else {
            Err("you can only act on your own account (--user is for root)".into())
        }
    }

    /// As [`Ctx::target`], for root commands that must also reach state left under a
    /// name no account has any more.
    pub fn target_or_leftover(&self, typed: &str) -> Result<String, Error> {
        self.require_root("this command")?;
        match Nss.account(typed)? {
            Some(name) => Ok(name),
            None => {
                twofactor_core::store::validate_user_name(typed)?;
                Ok(typed.to_string())
            }
        }
    }

    /// Whether a rule requires two-factor authentication for `user`.
    pub fn requirement(&self, user: &str) -> Result<Requirement, Error> {
        Ok(self.config.policy.requires(user, &Nss)?)
    }

    /// Confirms the caller before a change, and returns the authority it is made with:
    /// root's is an administrator's and takes nothing more; a user's takes their
    /// password through PAM and, when the change touches an existing authenticator
    /// (enabled or temporarily disabled), a current code or backup code, whose proof
    /// the change then spends. `None`: a user's change that needs no proof (setting up
    /// a first authenticator).
    pub fn confirm(
        &self,
        backend: &dyn Backend,
        state: &UserFacts,
        needs_code: bool,
    ) -> Result<Option<Authority>, Error> {
        if self.caller.is_root() {
            return Ok(Some(Authority::Admin));
        }
        password::check(PAM_SERVICE, &self.caller.name)
            .map_err(|e| Error(format!("could not confirm your password: {e}")))?;
        if !(needs_code && state.is_enrolled()) {
            return Ok(None);
        }
        let code = prompt::read_hidden("Current authentication code (or a backup code): ")?
            .ok_or("no code entered; nothing was changed")?;
        let checked = backend.verify(&self.caller.name, &code, Purpose::Change, &self.config)?;
        match (checked.result, checked.proof) {
            (CodeResult::Totp | CodeResult::BackupCode { .. }, Some(proof)) => {
                Ok(Some(Authority::Verified(proof)))
            }
            (CodeResult::Totp | CodeResult::BackupCode { .. }, None) => {
                Err("the store accepted the code without proof of it; nothing was changed".into())
            }
            (CodeResult::Locked { seconds_left }, _) => Err(Error(format!(
                "two-factor login is locked for {} more seconds after too many wrong codes; nothing was changed",
                seconds_left
            ))),
            (CodeResult::VoidedBackupCode, _) => Err(
                "that is a backup code, but your backup codes no longer work (an administrator retired their key); nothing was changed: use a code from your authenticator"
                    .into(),
            ),
            (CodeResult::Replayed, _) => Err(
                "that code was already used; wait for the next code and run the command again"
                    .into(),
            ),
            (CodeResult::Wrong { .. }, _) => Err(
                "wrong code; nothing was changed. Check the phone's clock, or use a backup code"
                    .into(),
            ),
            (CodeResult::NotEnrolled, _) => Err(
                "the authenticator was removed while you were typing; nothing was changed".into(),
            ),
        }
    }

    /// [`Ctx::confirm`] for a change that always needs an authority: the user's
    /// authenticator exists, so a user confirms with a code from it.
    pub fn confirm_change(
        &self,
        backend: &dyn Backend,
        state: &UserFacts,
    ) -> Result<Authority, Error> {
        self.confirm(backend, state, true)?.ok_or_else(|| {
            Error(format!(
                "{} has no authenticator; run 'twofactor enroll' first",
                self.caller.name
            ))
        })
    }

    /// Logs one change to syslog (authpriv, ident `twofactor`).
    pub fn audit(&self, user: &str, action: &'static str) {
        Event {
            user: user.to_string(),
            account: None,
            service: IDENT.to_string(),
            rhost: None,
            outcome: Outcome::Success,
            reason: Reason::Admin {
                action,
                by: self.caller.name.clone(),
            },
            server: None,
        }
        .log(IDENT);
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) -> Result<(), Error> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Checks a config file at `path` as the module would (root-owned, strict).
pub fn load_config_at(path: &Path) -> Result<Config, twofactor_core::config::ConfigError> {
    Config::load(path, 0)
}
