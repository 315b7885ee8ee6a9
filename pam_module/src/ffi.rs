//! The C boundary: libpam's entry points and conversation, through pam-bindings.
//!
//! pam-bindings generates the `extern "C"` functions; its guard turns a panic into
//! `PAM_ABORT`. We catch panics ourselves as well, so a panic never unwinds into libpam
//! whatever the binding does, and the answer is then a failure.

use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pam::constants::{
    PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_SILENT, PAM_TEXT_INFO, PamFlag,
    PamResultCode,
};
use pam::conv::Conv;
use pam::items::{AuthTok, RHost, Service};
use pam::module::{PamHandle, PamHooks};
use pam::pam_hooks;
use twofactor_core::audit::{self, Severity};
use twofactor_core::backup_codes::HashCost;
use twofactor_core::clock::SystemClock;
use twofactor_core::enroll::host_name;
use twofactor_core::last_good::{self, Loaded};
use twofactor_core::module_args::ModuleArgs;
use twofactor_core::policy::Nss;
use twofactor_core::random::OsRandom;
use zeroize::Zeroizing;

use crate::conversation::{ConvError, Conversation};
use crate::decision::{Decision, ErrorKind, pam_code};
use crate::flow::{self, Env, Login};

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

fn authenticate(pamh: &mut PamHandle, args: &[&CStr], flags: PamFlag) -> PamResultCode {
    let service = pamh
        .get_item::<Service>()
        .ok()
        .flatten()
        .and_then(|s| item_string(Some(s.0)));
    let service = service.unwrap_or_else(|| "unknown".into());
    let rhost = pamh
        .get_item::<RHost>()
        .ok()
        .flatten()
        .and_then(|h| item_string(Some(h.0)));
    let user = match pamh.get_user(None) {
        Ok(u) if !u.is_empty() => u,
        other => {
            let why = format!("service={service} no user name: {:?}", other.err());
            audit::syslog(IDENT, Severity::Error, &why);
            return PamResultCode::PAM_USER_UNKNOWN;
        }
    };
    let finish = |decision: Decision, account: Option<&str>| {
        decision
            .event(&user, account, &service, rhost.as_deref())
            .log(IDENT);
        pam_code(&decision)
    };

    let conv = pamh.get_item::<Conv>().ok().flatten();
    let mut conv = PamConv(conv);
    let silent = flags & PAM_SILENT != 0;
    let mut refuse_broken = |why: String| {
        if !silent {
            let _ = conv.error(flow::BROKEN_CONFIG_MESSAGE);
        }
        finish(Decision::Error(ErrorKind::Config, why), None)
    };

    let arg_text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = match ModuleArgs::parse(arg_text.iter().map(String::as_str)) {
        Ok(a) => a,
        Err(e) => {
            return refuse_broken(format!("module arguments: {e}"));
        }
    };
    let config = match last_good::load(&args.config, 0) {
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
            *config
        }
        Loaded::Broken(fallback) => {
            audit::syslog(IDENT, Severity::Error, &fallback.to_string());
            fallback.config
        }
        Loaded::Unusable { error, looked } => {
            return refuse_broken(format!(
                "config {error}; no last good copy to enforce ({}), so every login is refused; fix the file with: twofactor edit-config",
                looked.join("; ")
            ));
        }
    };
    // The password an earlier module checked, to tell it apart from a code; copied so
    // the copy can be zeroized.
    let password: Option<Zeroizing<Vec<u8>>> = pamh
        .get_item::<AuthTok>()
        .ok()
        .flatten()
        .map(|t| Zeroizing::new(t.as_bytes().to_vec()));
    let login = Login {
        user: &user,
        service: &service,
        rhost: rhost.as_deref(),
        silent,
        password: password.as_ref().map(|p| p.as_slice()),
    };
    let mut audit = |decision: &Decision, account: Option<&str>| {
        decision
            .event(&user, account, &service, rhost.as_deref())
            .log(IDENT);
    };
    let mut rng = OsRandom;
    let mut env = Env {
        config: &config,
        directory: &Nss,
        clock: &SystemClock,
        rng: &mut rng,
        host: host_name(),
        store_owner: 0,
        hash_cost: HashCost::DEFAULT,
        audit: &mut audit,
    };
    // The flow logs its decisions itself, as they are made.
    let (decision, _) = flow::authenticate(&mut conv, &login, &mut env);
    pam_code(&decision)
}
