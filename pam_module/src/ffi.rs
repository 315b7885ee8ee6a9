//! The C boundary: libpam's entry points and conversation, through pam-bindings.
//!
//! pam-bindings generates the `extern "C"` functions; its guard turns a panic into
//! `PAM_ABORT`. We catch panics ourselves as well, so a panic never unwinds into libpam
//! whatever the binding does, and the answer is then a failure.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use pam::constants::{
    PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_SILENT, PAM_TEXT_INFO, PamFlag,
    PamResultCode,
};
use pam::conv::Conv;
use pam::items::{AuthTok, RHost, Service};
use pam::module::{PamHandle, PamHooks};
use pam::pam_hooks;
use twofactor_core::after_login::{self, Covered, Pending, Record, Records};
use twofactor_core::audit::{self, Reason, Severity};
use twofactor_core::backup_codes::HashCost;
use twofactor_core::clock::Clock;
use twofactor_core::clock::SystemClock;
use twofactor_core::config::Config;
use twofactor_core::enroll::host_name;
use twofactor_core::last_good::{self, Loaded};
use twofactor_core::module_args::ModuleArgs;
use twofactor_core::policy::Nss;
use twofactor_core::random::OsRandom;
use zeroize::Zeroizing;

use crate::conversation::{ConvError, Conversation};
use crate::decision::{Decision, ErrorKind, pam_code};
use crate::flow::{self, CodeFrom, Env, Login};

/// syslog ident of every line the module writes.
const IDENT: &str = "pam_twofactor";

struct TwoFactor;
// The entry points libpam calls: this generates the exported `pam_sm_authenticate`,
// `pam_sm_setcred`, `pam_sm_acct_mgmt`, `pam_sm_open_session`, `pam_sm_close_session`
// and `pam_sm_chauthtok`, each calling the `PamHooks` method of the same name below
// (the ones not written out return PAM_IGNORE).
pam_hooks!(TwoFactor);

impl PamHooks for TwoFactor {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        catch_unwind(AssertUnwindSafe(|| authenticate(pamh, &args, flags))).unwrap_or_else(|_| {
            audit::syslog(
                IDENT,
                Severity::Error,
                "internal error (panic); login refused",
            );
            PamResultCode::PAM_AUTH_ERR
        })
    }

    /// No credentials to set; succeeds so `auth` stacks behave as with pam_unix.
    fn sm_setcred(_: &mut PamHandle, _: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }

    /// `[after_login]`: records the session a verified login opens. Never fails a session.
    fn sm_open_session(pamh: &mut PamHandle, args: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        catch_unwind(AssertUnwindSafe(|| open_session(pamh, &args)))
            .unwrap_or(PamResultCode::PAM_IGNORE)
    }

    /// `[after_login]`: forgets the session when the stack that opened it closes it.
    fn sm_close_session(pamh: &mut PamHandle, args: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        catch_unwind(AssertUnwindSafe(|| close_session(pamh, &args)))
            .unwrap_or(PamResultCode::PAM_IGNORE)
    }
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

fn open_session(pamh: &mut PamHandle, args: &[&CStr]) -> PamResultCode {
    // The ticket leaves the PAM environment whatever happens, so it never reaches the
    // session's environment.
    let name = CString::new(after_login::TICKET_VAR).unwrap_or_default();
    let ticket = pam_env(pamh, &name);
    if ticket.is_some() {
        pam_set_env(pamh, after_login::TICKET_VAR);
    }
    let (Some(ticket), Some(_config)) = (ticket, session_config(args)) else {
        return PamResultCode::PAM_IGNORE;
    };
    let user = pamh.get_user(None).unwrap_or_default();
    let Ok(records) = Records::open(Path::new(after_login::RUN_DIR)) else {
        return PamResultCode::PAM_IGNORE;
    };
    // Spent even when no record follows: a ticket works once.
    let pending = records.spend(&ticket, SystemClock.now());
    let Some(session) = after_login::started_here() else {
        audit::syslog(
            IDENT,
            Severity::Info,
            &format!(
                "user={user} no session recorded: this stack did not start a new audit session (pam_loginuid before pam_twofactor, and a kernel that lets it set the login uid)"
            ),
        );
        return PamResultCode::PAM_IGNORE;
    };
    let uid = after_login::account(&user).map(|(_, uid)| uid);
    let Some(pending) = pending.filter(|p| uid == Some(p.uid)) else {
        return PamResultCode::PAM_IGNORE;
    };
    let leader = std::process::id();
    let Some(leader_start) = after_login::start_time(leader) else {
        return PamResultCode::PAM_IGNORE;
    };
    let record = Record {
        session,
        uid: pending.uid,
        user: pending.user.clone(),
        service: pending.service,
        verified_at: pending.verified_at,
        leader_pid: leader,
        leader_start,
    };
    match records.record(&record) {
        Ok(true) => {
            audit::syslog(
                IDENT,
                Severity::Info,
                &format!(
                    "user={} session {session} recorded: its code covers [after_login] services",
                    pending.user
                ),
            );
            PamResultCode::PAM_SUCCESS
        }
        Ok(false) => {
            audit::syslog(
                IDENT,
                Severity::Warning,
                &format!(
                    "user={} session {session} not recorded: another live session holds that id",
                    pending.user
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

fn close_session(_pamh: &mut PamHandle, args: &[&CStr]) -> PamResultCode {
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
    let (_, uid) = after_login::account(&items.user)?;
    if after_login::login_uid() != Some(uid) {
        return None;
    }
    let age = after_login::covers(&record, uid, settings.minutes, SystemClock.now())?;
    Some(Covered { session, age })
}

/// After a verified code, leaves the hand-off for this login's session.
fn leave_for_session(pamh: &mut PamHandle, config: &Config, items: &Items, decision: &Decision) {
    let verified = matches!(
        decision,
        Decision::Allow(Reason::Totp | Reason::BackupCode { .. })
    );
    let settings = &config.after_login;
    if !verified || settings.services.is_empty() || settings.services.contains(&items.service) {
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
    };
    let left = Records::open(Path::new(after_login::RUN_DIR))
        .and_then(|r| r.leave(&pending, &mut OsRandom));
    match left {
        Ok(ticket) => {
            pam_set_env(pamh, &format!("{}={ticket}", after_login::TICKET_VAR));
        }
        Err(e) => audit::syslog(
            IDENT,
            Severity::Warning,
            &format!("cannot leave the [after_login] hand-off: {e}"),
        ),
    }
}

/// libpam's conversation function.
struct PamConv<'a>(Option<Conv<'a>>);

impl PamConv<'_> {
    fn send(&mut self, style: i32, text: &str) -> Result<Option<Zeroizing<String>>, ConvError> {
        let conv = self
            .0
            .as_ref()
            .ok_or_else(|| ConvError("the application set no conversation function".into()))?;
        match conv.send(style, text) {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => {
                let text = bytes
                    .as_str()
                    .map_err(|_| ConvError("response is not UTF-8".into()))?;
                Ok(Some(Zeroizing::new(text.to_string())))
            }
            Err(code) => Err(ConvError(format!("{code:?}"))),
        }
    }
}

impl Conversation for PamConv<'_> {
    fn ask_hidden(&mut self, prompt: &str) -> Result<Option<Zeroizing<String>>, ConvError> {
        self.send(PAM_PROMPT_ECHO_OFF, prompt)
    }
    fn ask_visible(&mut self, prompt: &str) -> Result<Option<String>, ConvError> {
        Ok(self
            .send(PAM_PROMPT_ECHO_ON, prompt)?
            .map(|s| s.to_string()))
    }
    fn info(&mut self, text: &str) -> Result<(), ConvError> {
        self.send(PAM_TEXT_INFO, text).map(drop)
    }
    fn error(&mut self, text: &str) -> Result<(), ConvError> {
        self.send(PAM_ERROR_MSG, text).map(drop)
    }
}

fn item_string(c: Option<&CStr>) -> Option<String> {
    c.map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}

/// The `pam_set_data` name of what the split line leaves for the checking line.
const ASIDE: &str = "pam_twofactor_one_prompt";

/// What the split line leaves for the checking line. Lives until `pam_end`, so the
/// code is zeroized when replaced or dropped.
enum Aside {
    /// Nothing: the checking line asks for its code itself.
    Nothing,
    /// The password came in one prompt, with this code after it (or none).
    OnePrompt(Option<Zeroizing<String>>),
}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_set_item(pamh: *mut PamHandle, item_type: c_int, item: *const c_void) -> c_int;
}

/// `PAM_AUTHTOK` from `<security/_pam_types.h>`.
const PAM_AUTHTOK: c_int = 6;

/// Hands `password` on to the next module as PAM_AUTHTOK (libpam keeps its own copy).
/// pam-bindings cannot build the item from our bytes, so this calls libpam directly.
fn set_authtok(pamh: &mut PamHandle, password: &str) -> Result<(), PamResultCode> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(password.len() + 1));
    bytes.extend_from_slice(password.as_bytes());
    if bytes.contains(&0) {
        return Err(PamResultCode::PAM_AUTHTOK_ERR);
    }
    bytes.push(0);
    // SAFETY: `pamh` is the handle libpam passed in, and `bytes` is NUL-terminated and
    // outlives the call; libpam copies the string.
    let rc = unsafe { pam_set_item(pamh, PAM_AUTHTOK, bytes.as_ptr().cast()) };
    if rc == PamResultCode::PAM_SUCCESS as c_int {
        Ok(())
    } else {
        Err(PamResultCode::PAM_SYSTEM_ERR)
    }
}

/// Takes what the split line kept aside, so a code is checked at most once.
/// `Ok(None)`: no split line ran in this `pam_authenticate`.
fn take_aside(pamh: &mut PamHandle) -> Result<Option<Option<Zeroizing<String>>>, PamResultCode> {
    // SAFETY: only this module stores data under ASIDE, and always an `Aside`.
    let kept = match unsafe { pamh.get_data::<Aside>(ASIDE) } {
        Ok(Aside::OnePrompt(code)) => Some(code.clone()),
        Ok(Aside::Nothing) | Err(_) => None,
    };
    if kept.is_some() {
        pamh.set_data(ASIDE, Box::new(Aside::Nothing))?;
    }
    Ok(kept)
}

unsafe extern "C" {
    /// libpam's `pam_getenv(3)`: a variable of the handle's PAM environment.
    fn pam_getenv(pamh: *mut PamHandle, name: *const c_char) -> *const c_char;
    /// libpam's `pam_putenv(3)`: `NAME=value` sets, `NAME` alone removes.
    fn pam_putenv(pamh: *mut PamHandle, name_value: *const c_char) -> c_int;
}

/// Sets (`NAME=value`) or removes (`NAME`) a PAM environment variable.
fn pam_set_env(pamh: &mut PamHandle, name_value: &str) -> bool {
    let Ok(text) = CString::new(name_value) else {
        return false;
    };
    // SAFETY: `pamh` is the live handle libpam passed to this call and `text` is
    // NUL-terminated; libpam copies it.
    let code = unsafe { pam_putenv(pamh, text.as_ptr()) };
    code == 0
}

/// A variable of the PAM environment, never the process's: in a setuid program such as
/// sudo, the process environment is the caller's to set.
fn pam_env(pamh: &mut PamHandle, name: &CStr) -> Option<String> {
    // SAFETY: `pamh` is the live handle libpam passed to this call and `name` is
    // NUL-terminated; pam_getenv returns NULL or a NUL-terminated string that the handle
    // owns until its environment changes.
    let value = unsafe { pam_getenv(pamh, name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated and owned by the handle (above); copied at once.
    let text = unsafe { CStr::from_ptr(value) };
    Some(text.to_string_lossy().into_owned())
}

/// Who is logging in, from PAM's items.
struct Items {
    user: String,
    service: String,
    rhost: Option<String>,
    silent: bool,
}

impl Items {
    fn read(pamh: &mut PamHandle, flags: PamFlag) -> Result<Self, PamResultCode> {
        let service = pamh
            .get_item::<Service>()
            .ok()
            .flatten()
            .and_then(|s| item_string(Some(s.0)))
            .unwrap_or_else(|| "unknown".into());
        let rhost = pamh
            .get_item::<RHost>()
            .ok()
            .flatten()
            .and_then(|h| item_string(Some(h.0)));
        match pamh.get_user(None) {
            Ok(user) if !user.is_empty() => Ok(Self {
                user,
                service,
                rhost,
                silent: flags & PAM_SILENT != 0,
            }),
            other => {
                let why = format!("service={service} no user name: {:?}", other.err());
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

fn authenticate(pamh: &mut PamHandle, args: &[&CStr], flags: PamFlag) -> PamResultCode {
    let items = match Items::read(pamh, flags) {
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
        Ok(a) if a.split => pamh
            .set_data(ASIDE, Box::new(Aside::Nothing))
            .map(|()| None),
        _ => take_aside(pamh),
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
    let authtok: Option<Zeroizing<Vec<u8>>> = pamh
        .get_item::<AuthTok>()
        .ok()
        .flatten()
        .map(|t| Zeroizing::new(t.as_bytes().to_vec()));

    let ssh_auth_info = pam_env(pamh, c"SSH_AUTH_INFO_0");
    let conv = pamh.get_item::<Conv>().ok().flatten();
    let mut conv = PamConv(conv);
    let loaded = parsed
        .map_err(|e| format!("module arguments: {e}"))
        .and_then(|args| load_config(&args).map(|config| (args, config)));
    let (args, config) = match loaded {
        Ok(loaded) => loaded,
        Err(why) => {
            if !items.silent {
                let _ = conv.error(flow::BROKEN_CONFIG_MESSAGE);
            }
            return items.finish(&Decision::Error(ErrorKind::Config, why), None);
        }
    };
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
        store: twofactor_core::backend::Opening {
            owner: 0,
            clock: std::sync::Arc::new(SystemClock),
            hash_cost: HashCost::DEFAULT,
        },
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
        after_login: session_covered(&config, &items),
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
        let (decision, _) = flow::authenticate(&mut conv, &login, &mut env);
        drop(env);
        leave_for_session(pamh, &config, &items, &decision);
        return pam_code(&decision);
    }
    let outcome = one_prompt(
        &mut conv,
        &login,
        &mut env,
        authtok.as_ref().map(|t| t.as_slice()),
    );
    let (new_authtok, aside) = match outcome {
        Ok(outcome) => outcome,
        Err(code) => return code,
    };
    let handed_on = match &new_authtok {
        Some(password) => set_authtok(pamh, password),
        None => Ok(()),
    };
    if let Err(code) = handed_on.and_then(|()| pamh.set_data(ASIDE, Box::new(aside))) {
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
    conv: &mut PamConv<'_>,
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
