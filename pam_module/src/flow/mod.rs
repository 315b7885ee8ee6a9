//! The login flow: who is asked, what they see, and what is decided. Generic over
//! [`Conversation`], so every prompt and message is unit-tested without libpam.

use twofactor_core::audit::{self, Reason, Severity};
use twofactor_core::auth::{CodeResult, Purpose};
use twofactor_core::backend::{self, Backend, BackendError, Opening, UserFacts, Verified};
use twofactor_core::config::{BackendKind, Config};
use twofactor_core::login::{self, LoginFacts, Read, ResolveError, Resolved, Step};
use twofactor_core::one_prompt::{self, Split};
use twofactor_core::policy::{Directory, LookupError};
use twofactor_core::random::{Random, RandomError};
use twofactor_core::ssh_factor::{self, NotProven};
use twofactor_core::trusted::RemoteHost;

use subtle::ConstantTimeEq;

use crate::conversation::{ConvError, Conversation};
use crate::decision::{Decision, ErrorKind};

mod enroll;
mod messages;

pub use messages::{
    BROKEN_CONFIG_MESSAGE, CODE_PROMPT, ENROLL_PROMPT, ONE_PROMPT, PASSWORD_AT_CODE_PROMPT,
    UNAVAILABLE_MESSAGE, backup_codes_text, enrollment_text,
};

/// Tries per login, for codes and for enrollment.
pub const MAX_TRIES: usize = 3;

/// Who is logging in, from where.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// PAM_USER.
    pub user: &'a str,
    /// PAM_SERVICE.
    pub service: &'a str,
    /// PAM_RHOST, if set and not empty.
    pub rhost: Option<&'a str>,
    /// PAM_SILENT: show no information or error messages.
    pub silent: bool,
    /// PAM_AUTHTOK, the password an earlier module checked, if any: an answer equal to
    /// it is the password fed to the code prompt, not a code guess.
    pub password: Option<&'a [u8]>,
    /// Where the code comes from.
    pub code_from: CodeFrom<'a>,
    /// `SSH_AUTH_INFO_0` from the PAM environment (never the process's): what sshd says
    /// the login passed so far.
    pub ssh_auth_info: Option<&'a str>,
    /// The login session whose code covers this service now (`[after_login]`), as the
    /// caller found it in the kernel and the session records.
    pub after_login: Option<twofactor_core::after_login::Covered>,
}

/// Where a login's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeFrom<'a> {
    /// The code prompt asks for it.
    Prompt,
    /// It was typed after the password in one prompt and kept aside by the `split` line
    /// (`None`: nothing was split off). Nothing more can be asked.
    OnePrompt(Option<&'a str>),
}

/// Where decisions go: the decision, the account's canonical name, and the database
/// server that decided it.
pub type AuditSink<'a> = dyn FnMut(&Decision, Option<&str>, Option<&str>) + 'a;

/// Everything the flow uses from the outside world.
pub struct Env<'a> {
    /// The validated config.
    pub config: &'a Config,
    /// Group membership.
    pub directory: &'a dyn Directory,
    /// How the store is opened: the owner its files must have (root in production), the
    /// clock (which the flow reads too) and the backup-code hash cost.
    pub store: Opening,
    /// Randomness for secrets and backup codes.
    pub rng: &'a mut dyn Random,
    /// This machine's name, for the account label.
    pub host: String,
    /// Receives each decision as it is made, with the account's canonical name: every
    /// recorded failure at once (a disconnect after it must not lose the audit line),
    /// and the final decision; with the database server that decided it, if one did.
    pub audit: &'a mut AuditSink<'a>,
    /// The database server that answered the last verify (a fleet's), for the audit.
    pub served_by: Option<String>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Messages to the user, quiet under PAM_SILENT.
struct Ui<'c> {
    conv: &'c mut dyn Conversation,
    silent: bool,
    /// The decision last sent to the audit log, so the final one is not logged twice.
    logged: Option<Decision>,
}

impl Ui<'_> {
    fn info(&mut self, text: &str) -> Result<(), ConvError> {
        if self.silent {
            Ok(())
        } else {
            self.conv.info(text)
        }
    }
    fn error(&mut self, text: &str) -> Result<(), ConvError> {
        if self.silent {
            Ok(())
        } else {
            self.conv.error(text)
        }
    }
}

/// An error that ends the flow: the one error path, carried by `?`, and refused.
enum Stop {
    /// The conversation with the user failed (hung up, no conversation function).
    Conv(ConvError),
    /// State, the name service or randomness could not be had.
    Unavailable(String),
    /// The fleet database could not be reached.
    Unreachable(String),
}

impl From<ConvError> for Stop {
    fn from(e: ConvError) -> Self {
        Self::Conv(e)
    }
}

macro_rules! unavailable_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Stop {
            fn from(e: $t) -> Self {
                Self::Unavailable(e.to_string())
            }
        }
    )*};
}
unavailable_from!(LookupError, RandomError);

impl From<BackendError> for Stop {
    fn from(e: BackendError) -> Self {
        if e.is_unreachable() {
            Self::Unreachable(e.to_string())
        } else {
            Self::Unavailable(e.to_string())
        }
    }
}

impl From<Stop> for Decision {
    fn from(s: Stop) -> Self {
        match s {
            Stop::Conv(e) => Decision::Error(
                ErrorKind::Conversation,
                format!("conversation failed: {}", e.0),
            ),
            Stop::Unavailable(e) => Decision::Error(ErrorKind::Unavailable, e),
            Stop::Unreachable(e) => Decision::Error(ErrorKind::Unreachable, e),
        }
    }
}

/// Runs the whole second-factor step for one login. Returns the decision and, once it
/// was resolved, the account's canonical name (for the audit line).
pub fn authenticate(
    conv: &mut dyn Conversation,
    login: &Login<'_>,
    env: &mut Env<'_>,
) -> (Decision, Option<String>) {
    let mut ui = Ui {
        conv,
        silent: login.silent,
        logged: None,
    };
    let mut account = None;
    let decision = match run(&mut ui, login, env, &mut account) {
        Ok(d) => d,
        Err(stop) => stop.into(),
    };
    conclude(&mut ui, env, decision, account)
}

/// Tells the user of an error that was not their doing, and logs the final decision
/// unless it was logged as it was made.
fn conclude(
    ui: &mut Ui<'_>,
    env: &mut Env<'_>,
    decision: Decision,
    account: Option<String>,
) -> (Decision, Option<String>) {
    // The user cannot fix these, but must learn that it was not their code. A failing
    // conversation cannot change the decision.
    match &decision {
        Decision::Error(ErrorKind::Unreachable, _) => {
            let _ = ui.error(messages::SERVER_UNREACHABLE_MESSAGE);
        }
        Decision::Error(ErrorKind::Unavailable | ErrorKind::Config, _) => {
            let _ = ui.error(UNAVAILABLE_MESSAGE);
        }
        _ => {}
    }
    if ui.logged.as_ref() != Some(&decision) {
        (env.audit)(&decision, account.as_deref(), env.served_by.as_deref());
    }
    (decision, account)
}

/// The `split` line: whether `input`, typed into the one prompt, ends in a code, and
/// where. Only for a user whose login asks for a code (one with an enabled
/// authenticator); everyone else's password goes through whole, even if it ends in
/// digits. State is only read, since the password is not checked yet. An error that
/// would refuse the login at the checking line refuses it here, with the same message
/// and log line, before the password module runs.
pub fn split(
    conv: &mut dyn Conversation,
    login: &Login<'_>,
    env: &mut Env<'_>,
    input: &str,
) -> Result<Option<Split>, Decision> {
    let mut account = None;
    match digits_to_split(login, env, &mut account) {
        Ok(digits) => Ok(digits.and_then(|d| one_prompt::split(input, d))),
        Err(stop) => {
            let mut ui = Ui {
                conv,
                silent: login.silent,
                logged: None,
            };
            Err(conclude(&mut ui, env, stop.into(), account).0)
        }
    }
}

/// The length of the user's TOTP codes if a code is to be split off: through the same
/// stages as the check ([`resolve`]), so the split and the check agree on who has
/// two-factor login.
fn digits_to_split(
    login: &Login<'_>,
    env: &Env<'_>,
    account: &mut Option<String>,
) -> Result<Option<u8>, Stop> {
    Ok(match resolve(login, env, account)? {
        Resolved::Decided(_) => None,
        Resolved::Account(a) => a
            .state
            .authenticator
            .filter(|a| a.enabled)
            .map(|a| a.params.digits),
    })
}

/// Resolves the login through core ([`login::resolve`]); the account's canonical name,
/// once known, goes to `account` for the audit line.
fn resolve(
    typed: &Login<'_>,
    env: &Env<'_>,
    account: &mut Option<String>,
) -> Result<Resolved, Stop> {
    let (config, opening) = (env.config, &env.store);
    let resolved = login::resolve(
        config,
        env.directory,
        Some(typed.service),
        typed.user,
        Read::Login,
        || open_store(config, opening),
    );
    match resolved {
        Ok(r) => {
            if let Resolved::Account(a) = &r {
                *account = Some(a.name.clone());
            }
            Ok(r)
        }
        Err(e) => {
            *account = e.account().map(str::to_string);
            Err(match e {
                ResolveError::Lookup { error, .. } => error.into(),
                ResolveError::Backend { error, .. } => error.into(),
            })
        }
    }
}

/// The store `config` names. The fleet client comes from its plugin, so that the
/// module links neither TLS nor the PostgreSQL client; tests of the flow, which run in
/// one process with everything linked, open the database directly.
fn open_store(config: &Config, opening: &Opening) -> Result<Box<dyn Backend>, BackendError> {
    match config.storage.backend {
        BackendKind::Files => Ok(Box::new(backend::open_files(config, opening)?)),
        #[cfg(not(test))]
        BackendKind::Postgresql => crate::plugin::open_fleet(config, opening.owner),
        #[cfg(test)]
        BackendKind::Postgresql => backend::open_with(config, opening),
    }
}

fn run(
    ui: &mut Ui<'_>,
    typed: &Login<'_>,
    env: &mut Env<'_>,
    account: &mut Option<String>,
) -> Result<Decision, Stop> {
    let config = env.config;
    // The decisions are core's (`login::resolve`, then the account's next step); this
    // renders them.
    let account = match resolve(typed, env, account)? {
        Resolved::Decided(step) => return Ok(decided(typed, step)),
        Resolved::Account(a) => a,
    };
    let name = &account.name;
    let login = &Login {
        user: name,
        ..*typed
    };
    let proof = match ssh_factor::check(
        &config.ssh_factor,
        login.service,
        name,
        login.ssh_auth_info,
        env.store.clock.now(),
    ) {
        Ok(proof) => Some(proof),
        Err(NotProven::Refused(why)) => {
            // Said, since the user was asked for a code they thought they had covered.
            audit::syslog(
                "pam_twofactor",
                Severity::Info,
                &format!(
                    "{} ssh certificate not taken as the second factor: {why}",
                    audit::kv("user", name)
                ),
            );
            None
        }
        Err(_) => None,
    };
    let facts = LoginFacts {
        service: Some(login.service),
        rhost: login.rhost,
        silent: login.silent,
        one_prompt: matches!(login.code_from, CodeFrom::OnePrompt(_)),
        ssh_factor: proof.as_ref(),
        after_login: login.after_login,
    };
    let step = account.next_step(config, &facts, env.store.clock.now());
    render(ui, login, env, (&*account.backend, &account.state), step)
}

/// The decision of a step taken before the store was read.
fn decided(login: &Login<'_>, step: Step) -> Decision {
    match step {
        Step::OutOfScope => Decision::NotApplicable(Reason::OutOfScope {
            service: login.service.to_string(),
        }),
        Step::Exempt(r) => Decision::NotApplicable(Reason::Exempt(r)),
        Step::UnknownAccount => Decision::Deny(Reason::UnknownAccount),
        other => Decision::Error(
            ErrorKind::Unavailable,
            format!("a step that needs the store came before it: {other:?}"),
        ),
    }
}

/// Carries out `step`: the prompts and messages it needs, and the state it changes.
fn render(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    env: &mut Env<'_>,
    (backend, state): (&dyn Backend, &UserFacts),
    step: Step,
) -> Result<Decision, Stop> {
    let decision = match step {
        early @ (Step::OutOfScope | Step::Exempt(_) | Step::UnknownAccount) => {
            decided(login, early)
        }
        Step::NotRequired(r) => Decision::NotApplicable(Reason::NotRequired(r)),
        Step::Disabled => Decision::NotApplicable(Reason::Disabled),
        Step::Locked { seconds } => {
            ui.error(&messages::locked(login.user, seconds))?;
            Decision::Deny(Reason::Locked { seconds })
        }
        Step::Trusted => Decision::Allow(Reason::Trusted),
        Step::AfterLogin(c) => Decision::Allow(Reason::AfterLogin {
            session: c.session,
            age: c.age,
        }),
        Step::SshCertificate(p) => Decision::Allow(Reason::SshCertificate {
            key_id: p.key_id,
            serial: p.serial,
            ca: p.ca,
        }),
        Step::AskCode { period } => {
            let decision = match login.code_from {
                CodeFrom::Prompt => ask_for_code(ui, login, env, backend, period)?,
                CodeFrom::OnePrompt(code) => {
                    check_typed_code(ui, login, env, backend, period, code)?
                }
            };
            if state.backup_codes_voided && matches!(decision, Decision::Allow(_)) {
                ui.info(messages::BACKUP_CODES_VOIDED)?;
            }
            return Ok(decision);
        }
        Step::Enroll => {
            return enroll::at_login(ui, login, env, backend, state);
        }
        Step::Grace { .. } => {
            return enroll::grace(ui, login, env, backend);
        }
        Step::NoGraceLeft { enroll_elsewhere } => {
            return enroll::refuse_unenrolled(ui, login, enroll_elsewhere);
        }
    };
    Ok(decision)
}

/// Whether `answer` is the password the stack already checked (in constant time).
fn is_the_password(login: &Login<'_>, answer: &str) -> bool {
    login
        .password
        .filter(|p| !p.is_empty())
        .is_some_and(|p| bool::from(p.ct_eq(answer.as_bytes())))
}

/// The password came back at the code prompt: sshd's password method answers every
/// prompt with it. Not a code guess, so not counted, but no code will ever come.
fn refuse_password(ui: &mut Ui<'_>) -> Result<Decision, Stop> {
    ui.error(PASSWORD_AT_CODE_PROMPT)?;
    Ok(Decision::Deny(Reason::PasswordAtCodePrompt))
}

fn ask_for_code(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    env: &mut Env<'_>,
    backend: &dyn Backend,
    period: u64,
) -> Result<Decision, Stop> {
    let mut last = Reason::NoCode;
    for _ in 0..MAX_TRIES {
        let Some(code) = ui.conv.ask_hidden(CODE_PROMPT)? else {
            return Ok(Decision::Deny(Reason::NoCode));
        };
        if code.trim().is_empty() {
            ui.error(messages::NO_CODE)?;
            last = Reason::NoCode;
            continue;
        }
        if is_the_password(login, &code) {
            return refuse_password(ui);
        }
        match judge(ui, login, env, backend, period, &code)? {
            Judged::Done(decision) => return Ok(decision),
            Judged::Again(reason) => last = reason,
        }
    }
    Ok(Decision::Deny(last))
}

/// The one-prompt layout: the code typed after the password gets its one try.
fn check_typed_code(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    env: &mut Env<'_>,
    backend: &dyn Backend,
    period: u64,
    code: Option<&str>,
) -> Result<Decision, Stop> {
    let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
        ui.error(messages::NO_CODE_AFTER_PASSWORD)?;
        return Ok(Decision::Deny(Reason::NoCode));
    };
    Ok(match judge(ui, login, env, backend, period, code)? {
        Judged::Done(decision) => decision,
        Judged::Again(reason) => Decision::Deny(reason),
    })
}

/// What one code led to.
enum Judged {
    /// The login is decided.
    Done(Decision),
    /// Refused and recorded; another code may be tried.
    Again(Reason),
}

/// Checks one code, which the backend records before it compares, and says so.
fn judge(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    env: &mut Env<'_>,
    backend: &dyn Backend,
    period: u64,
    code: &str,
) -> Result<Judged, Stop> {
    let checked = backend.verify(login.user, code, Purpose::Login, env.config)?;
    env.served_by = backend.served_by();
    let done = match (checked.result, checked.proof) {
        (CodeResult::Totp, Some(proof)) => {
            offer_trust(ui, login, env, backend, proof)?;
            Decision::Allow(Reason::Totp)
        }
        (CodeResult::BackupCode { left }, Some(proof)) => {
            ui.info(&messages::backup_code_accepted(left))?;
            offer_trust(ui, login, env, backend, proof)?;
            Decision::Allow(Reason::BackupCode { left })
        }
        // A backend's verify hands out proof with every right code.
        (CodeResult::Totp | CodeResult::BackupCode { .. }, None) => {
            return Err(Stop::Unavailable(
                "the store accepted the code without proof of it".into(),
            ));
        }
        (CodeResult::Replayed, _) => {
            let recorded = Decision::Deny(Reason::Replay);
            (env.audit)(&recorded, Some(login.user), env.served_by.as_deref());
            ui.logged = Some(recorded);
            ui.error(&messages::replayed(period))?;
            return Ok(Judged::Again(Reason::Replay));
        }
        (CodeResult::VoidedBackupCode, _) => {
            let recorded = Decision::Deny(Reason::VoidedBackupCode);
            (env.audit)(&recorded, Some(login.user), env.served_by.as_deref());
            ui.logged = Some(recorded);
            ui.error(messages::VOIDED_BACKUP_CODE)?;
            return Ok(Judged::Again(Reason::VoidedBackupCode));
        }
        (CodeResult::Wrong { locked_for }, _) => {
            // Logged now: the failure is recorded, and the user may hang up next.
            let recorded = Decision::Deny(Reason::WrongCode { locked_for });
            (env.audit)(&recorded, Some(login.user), env.served_by.as_deref());
            ui.logged = Some(recorded);
            if let Some(seconds) = locked_for {
                ui.error(&messages::locked(login.user, seconds))?;
                Decision::Deny(Reason::WrongCode { locked_for })
            } else {
                ui.error(messages::WRONG_CODE)?;
                return Ok(Judged::Again(Reason::WrongCode { locked_for: None }));
            }
        }
        (CodeResult::Locked { seconds_left }, _) => {
            ui.error(&messages::locked(login.user, seconds_left))?;
            Decision::Deny(Reason::Locked {
                seconds: seconds_left,
            })
        }
        // Reset or disabled by an admin while this login was in progress.
        (CodeResult::NotEnrolled, _) => Decision::Deny(Reason::Disabled),
    };
    Ok(Judged::Done(done))
}

fn offer_trust(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    env: &mut Env<'_>,
    backend: &dyn Backend,
    proof: Verified,
) -> Result<(), Stop> {
    let settings = env.config.trusted_devices;
    // After one prompt nothing more can be asked.
    let Some(host) = login
        .rhost
        .filter(|_| settings.enabled && login.code_from == CodeFrom::Prompt)
        .and_then(RemoteHost::parse)
        .filter(|h| h.may_be_trusted(settings.allow_host_names))
    else {
        return Ok(());
    };
    let question = messages::trust_question(login.service, &host.host, settings.days);
    let answer = ui.conv.ask_visible(&question)?.unwrap_or_default();
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        return Ok(());
    }
    backend.trust_host(proof, login.service, &host, settings.days)?;
    ui.info(&messages::trusted(login.service, &host.host, settings.days))?;
    Ok(())
}

#[cfg(test)]
mod script;
#[cfg(test)]
mod tests;
