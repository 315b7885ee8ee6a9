//! The module's entry points above libpam: authentication, and the session hooks of
//! `[after_login]`. Each runs on a [`PamHandler`], which `ffi.rs` implements on the
//! handle libpam passes in, so no code here touches C.

use std::ffi::CStr;
use std::path::Path;

use pam::constants::PamResultCode;
use twofactor_core::after_login::{self, Covered, Pending, Proc, Record, Records};
use twofactor_core::audit::{self, Reason, Severity};
use twofactor_core::backend::Opening;
use twofactor_core::clock::{Clock, SystemClock};
use twofactor_core::config::Config;
use twofactor_core::enroll::host_name;
use twofactor_core::last_good::{self, Loaded};
use twofactor_core::module_args::ModuleArgs;
use twofactor_core::policy::Nss;
use twofactor_core::random::OsRandom;
use zeroize::Zeroizing;

use crate::conversation::Conversation;
use crate::decision::{Decision, ErrorKind, pam_code};
use crate::flow::{self, CodeFrom, Env, Login};

/// syslog ident of every line the module writes.
pub(crate) const IDENT: &str = "pam_twofactor";

/// What the module asks of libpam, for one call.
pub(crate) trait PamHandler {
    /// PAM_USER, asked for through the conversation if unset.
    fn user(&mut self) -> Result<String, String>;
    /// PAM_SERVICE, if set and not empty.
    fn service(&mut self) -> Option<String>;
    /// PAM_RHOST, if set and not empty.
    fn rhost(&mut self) -> Option<String>;
    /// PAM_AUTHTOK, a copy that is wiped when dropped.
    fn authtok(&mut self) -> Option<Zeroizing<Vec<u8>>>;
    /// Hands `password` on to the next module as PAM_AUTHTOK.
    fn set_authtok(&mut self, password: &str) -> Result<(), PamResultCode>;
    /// A variable of the PAM environment, never the process's: in a setuid program
    /// such as sudo, the process environment is the caller's to set.
    fn env(&mut self, name: &str) -> Option<String>;
    /// Sets (`NAME=value`) or removes (`NAME`) a PAM environment variable.
    fn set_env(&mut self, name_value: &str) -> bool;
    /// Keeps `aside` for the checking line of this `pam_authenticate`.
    fn keep_aside(&mut self, aside: Aside) -> Result<(), PamResultCode>;
    /// Takes what the split line kept aside, so a code is checked at most once.
    /// `Ok(None)`: no split line ran in this `pam_authenticate`.
    fn take_aside(&mut self) -> Result<Option<Option<Zeroizing<String>>>, PamResultCode>;
    /// The application's conversation function.
    fn conversation(&mut self) -> Box<dyn Conversation + '_>;
}

/// The config for a session hook: `None` (and nothing done) when it cannot be read or
/// `[after_login]` is off.
fn session_config(args: &[&CStr]) -> Option<Config> {
    let text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let parsed = ModuleArgs::parse(text.iter().map(String::as_str)).ok()?;
    let config = load_config(&parsed).ok()?;
    (!config.after_login.services.is_empty()).then_some(config)
}

pub(crate) fn open_session(pam: &mut dyn PamHandler, args: &[&CStr]) -> PamResultCode {
    // The ticket leaves the PAM environment whatever happens, so it never reaches the
    // session's environment.
    let ticket = pam.env(after_login::TICKET_VAR);
    if ticket.is_some() {
        pam.set_env(after_login::TICKET_VAR);
    }
    let (Some(ticket), Some(_config)) = (ticket, session_config(args)) else {
        return PamResultCode::PAM_IGNORE;
    };
    let user = pam.user().unwrap_or_default();
    let (Ok(records), Some(me)) = (Records::open(Path::new(after_login::RUN_DIR)), Proc::me())
    else {
        return PamResultCode::PAM_IGNORE;
    };
    // Spent even when no record follows: a ticket works once, and only in the process
    // it was left for.
    let Some(pending) = records.spend(&ticket, SystemClock.now(), &me) else {
        audit::syslog(
            IDENT,
            Severity::Warning,
            &format!(
                "{} no session recorded: the ticket in the PAM environment is unknown, stale, or was left for another login's processes",
                audit::kv("user", &user)
            ),
        );
        return PamResultCode::PAM_IGNORE;
    };
    let Some(session) = after_login::started_here() else {
        audit::syslog(
            IDENT,
            Severity::Info,
            &format!(
                "{} no session recorded: this stack did not start a new audit session (pam_loginuid before pam_twofactor, and a kernel that lets it set the login uid)",
                audit::kv("user", &user)
            ),
        );
        return PamResultCode::PAM_IGNORE;
    };
    let uid = after_login::account(&user).map(|(_, uid)| uid);
    if uid != Some(pending.uid) {
        return PamResultCode::PAM_IGNORE;
    }
    let record = Record {
        session,
        uid: pending.uid,
        user: pending.user.clone(),
        service: pending.service,
        verified_at: pending.verified_at,
        leader_pid: me.pid,
        leader_start: me.start,
    };
    match records.record(&record) {
        Ok(true) => {
            audit::syslog(
                IDENT,
                Severity::Info,
                &format!(
                    "{} session {session} recorded: its code covers [after_login] services",
                    audit::kv("user", &pending.user)
                ),
            );
            PamResultCode::PAM_SUCCESS
        }
        Ok(false) => {
            audit::syslog(
                IDENT,
                Severity::Warning,
                &format!(
                    "{} session {session} not recorded: another live session holds that id, or the account has too many recorded sessions",
                    audit::kv("user", &pending.user)
                ),
            );
            PamResultCode::PAM_IGNORE
        }
        Err(e) => {
            audit::syslog(
                IDENT,
                Severity::Warning,
                &format!("cannot record session {session}: {e}"),
            );
            PamResultCode::PAM_IGNORE
        }
    }
}

pub(crate) fn close_session(args: &[&CStr]) -> PamResultCode {
    if session_config(args).is_none() {
        return PamResultCode::PAM_IGNORE;
    }
    // Only the stack that started the session ends its record: su and sudo -i run
    // common-session too, inside it.
    if let (Some(session), Ok(records)) = (
        after_login::started_here(),
        Records::open(Path::new(after_login::RUN_DIR)),
    ) {
        records.close(session, std::process::id());
    }
    PamResultCode::PAM_IGNORE
}

/// Whether a code typed at this session's login covers `service` now: the session's
/// live record, for this account, which must also be the session's login uid.
fn session_covered(config: &Config, items: &Items) -> Option<Covered> {
    let settings = &config.after_login;
    // A remote login is a new login, never part of a session: its daemon's process may
    // carry the session it was started from (doctor also reports such a service).
    if !settings.services.contains(&items.service) || items.rhost.is_some() {
        return None;
    }
    let session = after_login::session_id(None)?;
    let records = Records::open(Path::new(after_login::RUN_DIR)).ok()?;
    let record = records.live(session)?;
    // Only the login's own processes: a server it started that left it (tmux, screen)
    // keeps the session id, and runs whatever any later login of the user asks.
    if !after_login::descends_from(std::process::id(), &record.leader()) {
        return None;
    }
    let (_, uid) = after_login::account(&items.user)?;
    if after_login::login_uid() != Some(uid) {
        return None;
    }
    let age = after_login::covers(&record, uid, settings.minutes, SystemClock.now())?;
    Some(Covered { session, age })
}

/// After a verified code, leaves the hand-off for this login's session.
fn leave_for_session(
    pam: &mut dyn PamHandler,
    config: &Config,
    items: &Items,
    decision: &Decision,
) {
    let verified = matches!(
        decision,
        Decision::Allow(Reason::Totp | Reason::BackupCode { .. })
    );
    let settings = &config.after_login;
    // Only services that start logins: su's or a VPN's PAM environment reaches a command
    // or no session at all.
    if !verified || settings.services.is_empty() || !settings.from.contains(&items.service) {
        return;
    }
    let Some((name, uid)) = after_login::account(&items.user) else {
        return;
    };
    let pending = Pending {
        user: name,
        uid,
        service: items.service.clone(),
        verified_at: SystemClock.now(),
        openers: Pending::openers_here(),
    };
    let left = Records::open(Path::new(after_login::RUN_DIR))
        .and_then(|r| r.leave(&pending, &mut OsRandom));
    match left {
        Ok(ticket) => {
            pam.set_env(&format!("{}={ticket}", after_login::TICKET_VAR));
        }
        Err(e) => audit::syslog(
            IDENT,
            Severity::Warning,
            &format!("cannot leave the [after_login] hand-off: {e}"),
        ),
    }
}

/// What the split line leaves for the checking line. Lives until `pam_end`, so the
/// code is zeroized when replaced or dropped.
pub(crate) enum Aside {
    /// Nothing: the checking line asks for its code itself.
    Nothing,
    /// The password came in one prompt, with this code after it (or none).
    OnePrompt(Option<Zeroizing<String>>),
}

/// Who is logging in, from PAM's items.
struct Items {
    user: String,
    service: String,
    rhost: Option<String>,
    silent: bool,
}

impl Items {
    fn read(pam: &mut dyn PamHandler, silent: bool) -> Result<Self, PamResultCode> {
        let service = pam.service().unwrap_or_else(|| "unknown".into());
        let rhost = pam.rhost();
        match pam.user() {
            Ok(user) if !user.is_empty() => Ok(Self {
                user,
                service,
                rhost,
                silent,
            }),
            other => {
                let why = format!(
                    "{} no user name: {}",
                    audit::kv("service", &service),
                    audit::kv("error", &format!("{:?}", other.err()))
                );
                audit::syslog(IDENT, Severity::Error, &why);
                Err(PamResultCode::PAM_USER_UNKNOWN)
            }
        }
    }

    /// Logs `decision` and returns its PAM code.
    fn finish(&self, decision: &Decision, account: Option<&str>) -> PamResultCode {
        decision
            .event(&self.user, account, &self.service, self.rhost.as_deref())
            .log(IDENT);
        pam_code(decision)
    }
}

/// The config the module enforces: the file, or its last good copy if it broke. `Err`:
/// why no config can be enforced, and every login is refused.
fn load_config(args: &ModuleArgs) -> Result<Config, String> {
    match last_good::load(&args.config, 0) {
        Loaded::Good { config, text } => {
            if let Err(e) = last_good::remember(&config, &text, 0) {
                audit::syslog(
                    IDENT,
                    Severity::Warning,
                    &format!(
                        "cannot keep a copy of the valid config {}: {e}; if it breaks later, logins have no last good copy to enforce",
                        args.config.display()
                    ),
                );
            }
            Ok(*config)
        }
        Loaded::Broken(fallback) => {
            audit::syslog(IDENT, Severity::Error, &fallback.to_string());
            Ok(fallback.config)
        }
        Loaded::Unusable { error, looked } => Err(format!(
            "config {error}; no last good copy to enforce ({}), so every login is refused; fix the file with: twofactor edit-config",
            looked.join("; ")
        )),
    }
}

pub(crate) fn authenticate(
    pam: &mut dyn PamHandler,
    args: &[&CStr],
    silent: bool,
) -> PamResultCode {
    let items = match Items::read(pam, silent) {
        Ok(items) => items,
        Err(code) => return code,
    };
    let arg_text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let parsed = ModuleArgs::parse(arg_text.iter().map(String::as_str));
    // One split per pam_authenticate, and sudo and sshd retry on one handle: the split
    // line drops what an earlier try kept, and the checking line takes this try's.
    let kept = match &parsed {
        Ok(a) if a.split => pam.keep_aside(Aside::Nothing).map(|()| None),
        _ => pam.take_aside(),
    };
    let kept = match kept {
        Ok(kept) => kept,
        Err(code) => {
            let why = format!("cannot keep the one-prompt code apart: {code:?}");
            return items.finish(&Decision::Error(ErrorKind::Unavailable, why), None);
        }
    };
    // The password an earlier module checked (or, on the split line, the one prompt's
    // answer given to an earlier module); copied so the copy can be zeroized.
    let authtok = pam.authtok();
    let ssh_auth_info = pam.env("SSH_AUTH_INFO_0");
    let loaded = parsed
        .map_err(|e| format!("module arguments: {e}"))
        .and_then(|args| load_config(&args).map(|config| (args, config)));
    let (args, config) = match loaded {
        Ok(loaded) => loaded,
        Err(why) => {
            if !items.silent {
                let _ = pam.conversation().error(flow::BROKEN_CONFIG_MESSAGE);
            }
            return items.finish(&Decision::Error(ErrorKind::Config, why), None);
        }
    };
    let after_login = session_covered(&config, &items);
    let mut conv = pam.conversation();
    let mut audit = |decision: &Decision, account: Option<&str>, server: Option<&str>| {
        decision
            .event(&items.user, account, &items.service, items.rhost.as_deref())
            .with_server(server)
            .log(IDENT);
    };
    let mut rng = OsRandom;
    let mut env = Env {
        config: &config,
        directory: &Nss,
        store: Opening::system(0),
        rng: &mut rng,
        host: host_name(),
        audit: &mut audit,
        served_by: None,
    };
    // Kept only where the policy may trust it; the flow checks the service again.
    let ssh_auth_info = ssh_auth_info.filter(|_| {
        config.ssh_factor.enabled() && config.ssh_factor.services.contains(&items.service)
    });
    let login = Login {
        user: &items.user,
        ssh_auth_info: ssh_auth_info.as_deref(),
        after_login,
        service: &items.service,
        rhost: items.rhost.as_deref(),
        silent: items.silent,
        password: authtok.as_ref().map(|p| p.as_slice()),
        code_from: match &kept {
            Some(code) => CodeFrom::OnePrompt(code.as_ref().map(|c| c.as_str())),
            None => CodeFrom::Prompt,
        },
    };
    if !args.split {
        // The flow logs its decisions itself, as they are made.
        let (decision, _) = flow::authenticate(&mut *conv, &login, &mut env);
        drop((env, conv));
        leave_for_session(pam, &config, &items, &decision);
        return pam_code(&decision);
    }
    let outcome = one_prompt(
        &mut *conv,
        &login,
        &mut env,
        authtok.as_ref().map(|t| t.as_slice()),
    );
    drop((env, conv));
    let (new_authtok, aside) = match outcome {
        Ok(outcome) => outcome,
        Err(code) => return code,
    };
    let handed_on = match &new_authtok {
        Some(password) => pam.set_authtok(password),
        None => Ok(()),
    };
    if let Err(code) = handed_on.and_then(|()| pam.keep_aside(aside)) {
        let why = format!("cannot hand the one-prompt password on: {code:?}");
        return items.finish(&Decision::Error(ErrorKind::Unavailable, why), None);
    }
    // The split line proves nothing itself: the password and checking lines decide.
    PamResultCode::PAM_IGNORE
}

/// The split line's conversation: the one prompt (unless an earlier module already
/// asked), and the split. Returns the PAM_AUTHTOK to set, if it changes, and what to keep
/// aside for the checking line.
fn one_prompt(
    conv: &mut dyn Conversation,
    login: &Login<'_>,
    env: &mut Env<'_>,
    authtok: Option<&[u8]>,
) -> Result<(Option<Zeroizing<String>>, Aside), PamResultCode> {
    let refuse = |why: &str| {
        let decision = Decision::Deny(Reason::NoCode);
        audit::syslog(
            IDENT,
            Severity::Notice,
            &format!(
                "{} ({why} at the one prompt)",
                decision.event(login.user, None, login.service, login.rhost)
            ),
        );
        PamResultCode::PAM_AUTH_ERR
    };
    // An earlier module's PAM_AUTHTOK is the one prompt's answer (try_first_pass).
    let (typed, asked) = match authtok.filter(|t| !t.is_empty()) {
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => (Zeroizing::new(text.to_string()), false),
            // Not text, so no code of ours at its end: it goes through as it is.
            Err(_) => return Ok((None, Aside::OnePrompt(None))),
        },
        None => match conv.ask_hidden(flow::ONE_PROMPT) {
            Ok(Some(text)) if !text.is_empty() => (text, true),
            Ok(_) => return Err(refuse("nothing typed")),
            Err(e) => {
                let decision = Decision::Error(
                    ErrorKind::Conversation,
                    format!("conversation failed: {}", e.0),
                );
                (env.audit)(&decision, None, None);
                return Err(pam_code(&decision));
            }
        },
    };
    match flow::split(conv, login, env, &typed) {
        Ok(Some(split)) => Ok((Some(split.password), Aside::OnePrompt(Some(split.code)))),
        Ok(None) => Ok((asked.then_some(typed), Aside::OnePrompt(None))),
        Err(decision) => Err(pam_code(&decision)),
    }
}
