//! The C boundary: libpam's entry points, its conversation, items, data and environment,
//! through pam-bindings and a few libpam calls it lacks. What the module does lives in
//! `hooks.rs`, on the [`PamHandler`] this file implements.
//!
//! pam-bindings generates the `extern "C"` functions; its guard turns a panic into
//! `PAM_ABORT`. We catch panics ourselves as well, so a panic never unwinds into libpam
//! whatever the binding does, and the answer is then a failure.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
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
use zeroize::Zeroizing;

use crate::conversation::{ConvError, Conversation};
use crate::hooks::{self, Aside, IDENT, PamHandler};

struct TwoFactor;
// The entry points libpam calls: this generates the exported `pam_sm_authenticate`,
// `pam_sm_setcred`, `pam_sm_acct_mgmt`, `pam_sm_open_session`, `pam_sm_close_session`
// and `pam_sm_chauthtok`, each calling the `PamHooks` method of the same name below
// (the ones not written out return PAM_IGNORE).
pam_hooks!(TwoFactor);

impl PamHooks for TwoFactor {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        let silent = flags & PAM_SILENT != 0;
        catch_unwind(AssertUnwindSafe(|| {
            hooks::authenticate(&mut Handle(pamh), &args, silent)
        }))
        .unwrap_or_else(|_| {
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
        catch_unwind(AssertUnwindSafe(|| {
            hooks::open_session(&mut Handle(pamh), &args)
        }))
        .unwrap_or(PamResultCode::PAM_IGNORE)
    }

    /// `[after_login]`: forgets the session when the stack that opened it closes it.
    fn sm_close_session(_: &mut PamHandle, args: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        catch_unwind(AssertUnwindSafe(|| hooks::close_session(&args)))
            .unwrap_or(PamResultCode::PAM_IGNORE)
    }
}

/// libpam's handle for one call, as the module's [`PamHandler`].
struct Handle<'a>(&'a mut PamHandle);

impl PamHandler for Handle<'_> {
    fn user(&mut self) -> Result<String, String> {
        self.0.get_user(None).map_err(|e| format!("{e:?}"))
    }

    fn service(&mut self) -> Option<String> {
        let s = self.0.get_item::<Service>().ok().flatten()?;
        item_string(Some(s.0))
    }

    fn rhost(&mut self) -> Option<String> {
        let h = self.0.get_item::<RHost>().ok().flatten()?;
        item_string(Some(h.0))
    }

    fn authtok(&mut self) -> Option<Zeroizing<Vec<u8>>> {
        let t = self.0.get_item::<AuthTok>().ok().flatten()?;
        Some(Zeroizing::new(t.as_bytes().to_vec()))
    }

    fn set_authtok(&mut self, password: &str) -> Result<(), PamResultCode> {
        set_authtok(self.0, password)
    }

    fn env(&mut self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        pam_env(self.0, &name)
    }

    fn set_env(&mut self, name_value: &str) -> bool {
        pam_set_env(self.0, name_value)
    }

    fn keep_aside(&mut self, aside: Aside) -> Result<(), PamResultCode> {
        self.0.set_data(ASIDE, Box::new(aside))
    }

    fn take_aside(&mut self) -> Result<Option<Option<Zeroizing<String>>>, PamResultCode> {
        take_aside(self.0)
    }

    fn conversation(&mut self) -> Box<dyn Conversation + '_> {
        Box::new(PamConv(self.0.get_item::<Conv>().ok().flatten()))
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
