//! The login step: from the config, the user's requirement, their state and the facts of
//! one login, what happens next. Pure, so the PAM module acts on it, `twofactor explain`
//! prints it and `twofactor doctor` checks it, and all three agree.
//!
//! A login is one API: [`resolve`] takes it as typed up to the user's state, asking in
//! stages so that it reads no more than it must (the service before any lookup, a
//! break-glass name before the name service, the requirement before the store), and
//! [`Account::next_step`] says what happens next. `next_step` repeats the early stages,
//! so a caller with everything at hand needs only it.

use std::fmt;

use thiserror::Error;

use crate::after_login::Covered;
use crate::backend::{Backend, BackendError, UserFacts};
use crate::config::Config;
use crate::policy::{Directory, LookupError, Reason, Requirement};
use crate::ssh_factor::Proof;
use crate::trusted::RemoteHost;

/// What a login looks like from the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFacts<'a> {
    /// PAM_SERVICE; `None` for "a service in scope" (`explain` without `--service`).
    pub service: Option<&'a str>,
    /// PAM_RHOST, if any: `None` is a local login (console, su, sudo).
    pub rhost: Option<&'a str>,
    /// PAM_SILENT: no messages may be shown, so no QR code either.
    pub silent: bool,
    /// The password and code came in one prompt (the `split` layout): nothing more can
    /// be asked, so no enrollment either.
    pub one_prompt: bool,
    /// The ssh certificate that already proved a second factor (`[ssh_factor]`).
    pub ssh_factor: Option<&'a Proof>,
    /// The login session whose code covers this service now (`[after_login]`).
    pub after_login: Option<Covered>,
}

/// What happens next in a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The service is not in `enforce.services`: the module stands aside (PAM_IGNORE).
    OutOfScope,
    /// An exemption rule: stands aside before any state is read.
    Exempt(Reason),
    /// The name service knows no such account: refused before any state is read.
    UnknownAccount,
    /// No rule requires the user and they have no authenticator: stands aside.
    NotRequired(Reason),
    /// No rule requires the user and their authenticator is turned off: stands aside.
    Disabled,
    /// Too many wrong codes: refused without a prompt for this many more seconds.
    Locked {
        /// Seconds left on the lock.
        seconds: u64,
    },
    /// The remote host is trusted for this service: allowed without a code.
    Trusted,
    /// The ssh login used a certificate `[ssh_factor]` trusts as the second factor.
    SshCertificate(Proof),
    /// A code typed at this session's login covers this service still (`[after_login]`).
    AfterLogin(Covered),
    /// Ask for a code from the authenticator (or a backup code).
    AskCode {
        /// The authenticator's period, for "wait for the next code".
        period: u64,
    },
    /// Required, no authenticator: set one up now, in this login.
    Enroll,
    /// Required, no authenticator, no enrollment here: allowed this time without a code.
    Grace {
        /// Grace logins left after this one.
        left: u32,
    },
    /// Required, no authenticator, no enrollment here and no grace left: refused.
    NoGraceLeft {
        /// Enrollment at login is on, but not for this login (its network, or PAM_SILENT):
        /// the user can set up elsewhere. Otherwise an administrator must.
        enroll_elsewhere: bool,
    },
}

impl fmt::Display for Step {
    /// The step in words, as `explain` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfScope => {
                f.write_str("not asked: the service is not in enforce.services (PAM_IGNORE)")
            }
            Self::Exempt(r) => write!(f, "not asked: {r} (PAM_IGNORE)"),
            Self::UnknownAccount => f.write_str("refused: the name service knows no such account"),
            Self::NotRequired(r) => {
                write!(f, "not asked: {r}, and no authenticator is set up (PAM_IGNORE)")
            }
            Self::Disabled => f.write_str(
                "not asked: not required, and the authenticator is turned off (PAM_IGNORE)",
            ),
            Self::Locked { seconds } => write!(
                f,
                "refused without a prompt: locked for {seconds} more seconds (twofactor unlock)"
            ),
            Self::Trusted => f.write_str("allowed without a code: the host is trusted"),
            Self::AfterLogin(c) => write!(
                f,
                "allowed without a code: the code typed at this session's login ({} s ago, session {}) covers it",
                c.age, c.session
            ),
            Self::SshCertificate(p) => write!(
                f,
                "allowed without a code: the ssh certificate {:?} (serial {}) from CA {} was the second factor",
                p.key_id, p.serial, p.ca
            ),
            Self::AskCode { .. } => f.write_str("asked for a code (or a backup code)"),
            Self::Enroll => f.write_str(
                "sets up an authenticator during the login (QR code, then a code from it)",
            ),
            Self::Grace { left } => write!(
                f,
                "allowed without a code as a grace login ({left} left after it), and told to run twofactor enroll"
            ),
            Self::NoGraceLeft {
                enroll_elsewhere: true,
            } => f.write_str(
                "refused: no authenticator, no grace logins left, and enrolment at login is not allowed for this login (enroll.at_login_networks, or a client that shows no messages)",
            ),
            Self::NoGraceLeft {
                enroll_elsewhere: false,
            } => f.write_str(
                "refused: no authenticator, no grace logins left, and enrolment at login is off (an administrator must enrol the user)",
            ),
        }
    }
}

/// A login resolved as far as the store: decided already, or an account to step.
#[derive(Debug)]
pub enum Resolved {
    /// Out of scope, exempt or unknown: decided without the store.
    Decided(Step),
    /// An account that may need a code.
    Account(Account),
}

/// An account a login resolved to, with its state.
#[derive(Debug)]
pub struct Account {
    /// The account's canonical name (`getpwnam`): policy and state are keyed by it.
    pub name: String,
    /// Whether a rule requires it, and why.
    pub requirement: Requirement,
    /// Its store.
    pub backend: Box<dyn Backend>,
    /// Its state as the store had it.
    pub state: UserFacts,
}

impl Account {
    /// What happens next in this login.
    pub fn next_step(&self, config: &Config, login: &LoginFacts<'_>, now: u64) -> Step {
        next_step(config, &self.requirement, &self.state, login, now)
    }
}

/// How [`resolve`] reads the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// For a login: a shared store records that this host requires the user.
    Login,
    /// Only to look (`explain`): nothing is recorded.
    Look,
}

/// Why a login could not be resolved: the answer is unknown, so the login is refused.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// The name service failed; after the account was found, for its requirement.
    #[error("{error}")]
    Lookup {
        /// The canonical name, when the lookup got that far.
        account: Option<String>,
        /// What failed.
        error: LookupError,
    },
    /// The store could not be opened or read.
    #[error("{error}")]
    Backend {
        /// The canonical name.
        account: String,
        /// What failed.
        error: BackendError,
    },
}

impl ResolveError {
    /// The account's canonical name, when it was found before the failure: for the
    /// audit line.
    pub fn account(&self) -> Option<&str> {
        match self {
            Self::Lookup { account, .. } => account.as_deref(),
            Self::Backend { account, .. } => Some(account),
        }
    }
}

/// Resolves a login of `typed` (PAM_USER as typed) through `service` up to the user's
/// state. `open` opens the store, only once the login needs it, so break-glass
/// accounts work on a full or broken disk and with the database down.
pub fn resolve(
    config: &Config,
    directory: &dyn Directory,
    service: Option<&str>,
    typed: &str,
    read: Read,
    open: impl FnOnce() -> Result<Box<dyn Backend>, BackendError>,
) -> Result<Resolved, ResolveError> {
    if let Some(step) = scope_step(config, service) {
        return Ok(Resolved::Decided(step));
    }
    // Break-glass accounts are decided by the name as typed, with no lookup, so they
    // still work when a remote directory is down.
    if config.policy.exempts_name(typed) {
        return Ok(Resolved::Decided(Step::Exempt(Reason::ExemptUser)));
    }
    // Everything else is keyed by the account's one canonical name, so an alias
    // (ALICE, alice@corp.example) gets neither other rules nor other state.
    let found = directory
        .account(typed)
        .map_err(|error| ResolveError::Lookup {
            account: None,
            error,
        })?;
    let Some(name) = found else {
        return Ok(Resolved::Decided(Step::UnknownAccount));
    };
    let requirement = match config.policy.requires(&name, directory) {
        Ok(r) => r,
        Err(error) => {
            return Err(ResolveError::Lookup {
                account: Some(name),
                error,
            });
        }
    };
    if let Some(step) = exempt_step(&requirement) {
        return Ok(Resolved::Decided(step));
    }
    let read_state = || {
        let backend = open()?;
        let state = match read {
            Read::Login => backend.login_facts(&name, requirement.required)?,
            Read::Look => backend.facts(&name)?,
        };
        Ok::<_, BackendError>((backend, state))
    };
    let (backend, state) = match read_state() {
        Ok(v) => v,
        Err(error) => {
            return Err(ResolveError::Backend {
                account: name,
                error,
            });
        }
    };
    Ok(Resolved::Account(Account {
        name,
        requirement,
        backend,
        state,
    }))
}

/// The step decided by the service alone: out of scope, or `None` to go on.
pub fn scope_step(config: &Config, service: Option<&str>) -> Option<Step> {
    service
        .filter(|s| !config.policy.applies_to_service(s))
        .map(|_| Step::OutOfScope)
}

/// The step decided by the requirement alone: exempt, or `None` to go on.
pub fn exempt_step(requirement: &Requirement) -> Option<Step> {
    matches!(
        requirement.reason,
        Reason::ExemptUser | Reason::ExemptGroup(_)
    )
    .then(|| Step::Exempt(requirement.reason.clone()))
}

/// What happens next in a login of a user with `requirement` and `state`, at `now`.
pub fn next_step(
    config: &Config,
    requirement: &Requirement,
    state: &UserFacts,
    login: &LoginFacts<'_>,
    now: u64,
) -> Step {
    if let Some(step) = scope_step(config, login.service).or_else(|| exempt_step(requirement)) {
        return step;
    }
    match &state.authenticator {
        Some(a) if a.enabled => {}
        Some(_) if !requirement.required => return Step::Disabled,
        None if !requirement.required => return Step::NotRequired(requirement.reason.clone()),
        _ => {
            // The certificate is a second factor of its own: no authenticator needed.
            if let Some(proof) = login.ssh_factor
                && state.lockout.locked_for(now).is_none()
            {
                return Step::SshCertificate(proof.clone());
            }
            return not_enrolled(config, state, login);
        }
    }
    // A lock holds for trusted hosts too: trust saves typing, it is not a way around a lock.
    if let Some(seconds) = state.lockout.locked_for(now) {
        return Step::Locked { seconds };
    }
    if let Some(proof) = login.ssh_factor {
        return Step::SshCertificate(proof.clone());
    }
    if let Some(covered) = login.after_login {
        return Step::AfterLogin(covered);
    }
    let trust = config.trusted_devices;
    if trust.enabled
        && let (Some(service), Some(host)) =
            (login.service, login.rhost.and_then(RemoteHost::parse))
        && state
            .trusted_devices
            .is_trusted(service, &host, trust.allow_host_names, now)
    {
        return Step::Trusted;
    }
    Step::AskCode {
        period: state.authenticator.as_ref().map_or(30, |a| a.params.period),
    }
}

/// A required user with no (enabled) authenticator.
fn not_enrolled(config: &Config, state: &UserFacts, login: &LoginFacts<'_>) -> Step {
    // Enrollment shows a QR code and asks for a code, so it needs a conversation: not
    // under PAM_SILENT, nor after one prompt.
    if !login.silent && !login.one_prompt && config.enroll.at_login_allowed_from(login.rhost) {
        return Step::Enroll;
    }
    let allowed = config.enroll.grace_logins;
    if state.grace_logins_used < allowed {
        return Step::Grace {
            left: allowed - state.grace_logins_used - 1,
        };
    }
    Step::NoGraceLeft {
        enroll_elsewhere: config.enroll.at_login,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lockout::Lockout;
    use crate::net::Cidr;
    use crate::random::SeededRandom;
    use crate::store::Authenticator;
    use crate::store::UserState;
    use crate::totp::{SecretKey, TotpParams};

    const NOW: u64 = 1_750_000_000;

    fn required(reason: Reason) -> Requirement {
        Requirement {
            required: true,
            reason,
        }
    }

    fn not_required(reason: Reason) -> Requirement {
        Requirement {
            required: false,
            reason,
        }
    }

    fn authenticator(enabled: bool) -> Authenticator {
        let mut rng = SeededRandom::new(1);
        Authenticator {
            secret: SecretKey::generate(&mut rng).unwrap(),
            params: TotpParams::default(),
            enabled,
            enrolled_at: NOW,
            last_step: None,
            window: None,
        }
    }

    /// One combination of the inputs that matter.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        in_scope: bool,
        exempt: bool,
        required: bool,
        /// 0: no authenticator, 1: on, 2: turned off.
        auth: u8,
        locked: bool,
        trusted: bool,
        at_login: bool,
        networks: bool,
        silent: bool,
        grace_used: u32,
    }

    impl Case {
        /// Case `n` of the 1,536: nine yes-or-no inputs from `n`'s bits, then the
        /// authenticator (none, on, off) from what is left.
        fn nth(mut n: u32) -> Self {
            let mut bit = || {
                let b = n % 2 == 1;
                n /= 2;
                b
            };
            let (in_scope, exempt, required) = (bit(), bit(), bit());
            let (locked, trusted, at_login, networks, silent) = (bit(), bit(), bit(), bit(), bit());
            let grace_used = if bit() { 2 } else { 0 };
            Self {
                in_scope,
                exempt,
                required,
                auth: u8::try_from(n % 3).unwrap(),
                locked,
                trusted,
                at_login,
                networks,
                silent,
                grace_used,
            }
        }

        /// The step it must give, worked out independently of `next_step`.
        fn expected(self) -> Step {
            let can_enroll = self.at_login && !self.networks && !self.silent;
            if !self.in_scope {
                return Step::OutOfScope;
            }
            if self.exempt {
                return Step::Exempt(Reason::ExemptUser);
            }
            match (self.auth, self.required) {
                (1, _) if self.locked => Step::Locked { seconds: 60 },
                (1, _) if self.trusted => Step::Trusted,
                (1, _) => Step::AskCode { period: 30 },
                (2, false) => Step::Disabled,
                (_, false) => Step::NotRequired(Reason::NoRule),
                (_, true) if can_enroll => Step::Enroll,
                (_, true) if self.grace_used < 2 => Step::Grace { left: 1 },
                (_, true) => Step::NoGraceLeft {
                    enroll_elsewhere: self.at_login,
                },
            }
        }
    }

    /// Every combination of the inputs that matter, against an independent expectation.
    #[test]
    fn every_combination() {
        let host = "192.0.2.7";
        let mut rng = SeededRandom::new(2);
        for n in 0..1536 {
            let c = Case::nth(n);
            let mut config = Config::default();
            config.policy.services = vec!["sshd".into()];
            config.enroll.at_login = c.at_login;
            config.enroll.grace_logins = 2;
            config.trusted_devices.enabled = true;
            if c.networks {
                config.enroll.at_login_networks = vec!["10.0.0.0/8".parse::<Cidr>().unwrap()];
            }
            let requirement = match (c.exempt, c.required) {
                (true, _) => not_required(Reason::ExemptUser),
                (false, true) => required(Reason::UserList),
                (false, false) => not_required(Reason::NoRule),
            };
            let mut state = UserState {
                grace_logins_used: c.grace_used,
                authenticator: match c.auth {
                    0 => None,
                    a => Some(authenticator(a == 1)),
                },
                ..UserState::default()
            };
            if c.locked {
                state.lockout = Lockout {
                    failures: 0,
                    locked_until: Some(NOW + 60),
                    locks: 1,
                };
            }
            if c.trusted {
                let remote = RemoteHost::parse(host).unwrap();
                state
                    .trusted_devices
                    .add("sshd", &remote, NOW, 30, &mut rng)
                    .unwrap();
            }
            let facts = LoginFacts {
                service: Some(if c.in_scope { "sshd" } else { "sudo" }),
                rhost: Some(host),
                silent: c.silent,
                one_prompt: false,
                ssh_factor: None,
                after_login: None,
            };
            let step = next_step(&config, &requirement, &(&state).into(), &facts, NOW);
            assert_eq!(step, c.expected(), "{c:?}");
        }
    }

    #[test]
    fn an_ssh_certificate_stands_for_the_code_but_not_for_a_lock() {
        let config = Config::default();
        let proof = Proof {
            ca: "SHA256:x".into(),
            key_id: "alice@sso".into(),
            serial: 7,
        };
        let login = LoginFacts {
            service: Some("sshd"),
            rhost: Some("192.0.2.1"),
            silent: false,
            one_prompt: false,
            ssh_factor: Some(&proof),
            after_login: None,
        };
        let req = required(Reason::AllUsers);
        let mut state = UserState {
            authenticator: Some(authenticator(true)),
            ..UserState::default()
        };
        let ssh = Step::SshCertificate(proof.clone());
        assert_eq!(next_step(&config, &req, &(&state).into(), &login, NOW), ssh);
        // No authenticator needed: the certificate is a second factor of its own.
        assert_eq!(
            next_step(&config, &req, &UserFacts::default(), &login, NOW),
            ssh
        );
        // Not required and not enrolled: nothing to prove.
        let free = not_required(Reason::NoRule);
        assert!(matches!(
            next_step(&config, &free, &UserFacts::default(), &login, NOW),
            Step::NotRequired(_)
        ));
        state.lockout = Lockout {
            failures: 0,
            locked_until: Some(NOW + 60),
            locks: 1,
        };
        assert_eq!(
            next_step(&config, &req, &(&state).into(), &login, NOW),
            Step::Locked { seconds: 60 }
        );
    }

    #[test]
    fn enrollment_follows_the_remote_address() {
        let mut config = Config::default();
        config.enroll.at_login_networks = vec!["10.0.0.0/8".parse::<Cidr>().unwrap()];
        let req = required(Reason::AllUsers);
        let state = UserFacts::default();
        let from = |rhost| LoginFacts {
            service: Some("sshd"),
            rhost,
            silent: false,
            one_prompt: false,
            ssh_factor: None,
            after_login: None,
        };
        assert_eq!(
            next_step(&config, &req, &state, &from(Some("10.1.2.3")), NOW),
            Step::Enroll
        );
        assert_eq!(
            next_step(&config, &req, &state, &from(Some("192.0.2.1")), NOW),
            Step::NoGraceLeft {
                enroll_elsewhere: true
            }
        );
        // A local login has no address, so it is outside every network.
        assert_eq!(
            next_step(&config, &req, &state, &from(None), NOW),
            Step::NoGraceLeft {
                enroll_elsewhere: true
            }
        );
    }

    #[test]
    fn one_prompt_never_enrolls_but_grace_still_counts() {
        let mut config = Config::default();
        let req = required(Reason::AllUsers);
        let mut state = UserFacts::default();
        let one_prompt = LoginFacts {
            service: Some("openvpn"),
            rhost: None,
            silent: false,
            one_prompt: true,
            ssh_factor: None,
            after_login: None,
        };
        assert_eq!(
            next_step(&config, &req, &state, &one_prompt, NOW),
            Step::NoGraceLeft {
                enroll_elsewhere: true
            }
        );
        config.enroll.grace_logins = 2;
        state.grace_logins_used = 1;
        assert_eq!(
            next_step(&config, &req, &state, &one_prompt, NOW),
            Step::Grace { left: 0 }
        );
        // The same login through a conversation enrolls.
        let asked = LoginFacts {
            one_prompt: false,
            ssh_factor: None,
            after_login: None,
            ..one_prompt
        };
        assert_eq!(next_step(&config, &req, &state, &asked, NOW), Step::Enroll);
    }

    #[test]
    fn without_a_service_the_login_counts_as_in_scope() {
        let mut config = Config::default();
        config.policy.services = vec!["sshd".into()];
        assert_eq!(scope_step(&config, None), None);
        assert_eq!(scope_step(&config, Some("sudo")), Some(Step::OutOfScope));
        assert_eq!(scope_step(&config, Some("sshd")), None);
    }

    #[test]
    fn every_step_reads_as_a_sentence() {
        for step in [
            Step::OutOfScope,
            Step::Exempt(Reason::ExemptUser),
            Step::NotRequired(Reason::NoRule),
            Step::Disabled,
            Step::Locked { seconds: 5 },
            Step::Trusted,
            Step::AskCode { period: 30 },
            Step::Enroll,
            Step::Grace { left: 0 },
            Step::NoGraceLeft {
                enroll_elsewhere: false,
            },
        ] {
            let text = step.to_string();
            assert!(
                text.starts_with("not asked")
                    || text.starts_with("refused")
                    || text.starts_with("allowed")
                    || text.starts_with("asked")
                    || text.starts_with("sets up"),
                "{text}"
            );
        }
    }
}
