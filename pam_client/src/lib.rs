//! The one libpam client in twofactor, used by the command (to confirm the caller's
//! password) and by the benchmark (to drive logins): an owning [`Context`] whose `Drop`
//! calls `pam_end`, one conversation callback generic over [`Converse`], and a typed
//! [`PamError`]. All of its `unsafe` is here.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use nix::libc;
use zeroize::Zeroizing;

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_USER: c_int = 2;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;

/// `pam_authenticate` flag: an empty password is refused.
pub const DISALLOW_NULL_AUTHTOK: c_int = 0x0001;

/// What a module's message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A prompt whose answer is not echoed (a password, a code).
    Hidden,
    /// A prompt whose answer is echoed.
    Visible,
    /// An error message to show.
    Error,
    /// Information to show.
    Info,
}

impl Style {
    fn from_raw(style: c_int) -> Option<Self> {
        match style {
            PAM_PROMPT_ECHO_OFF => Some(Self::Hidden),
            PAM_PROMPT_ECHO_ON => Some(Self::Visible),
            PAM_ERROR_MSG => Some(Self::Error),
            PAM_TEXT_INFO => Some(Self::Info),
            _ => None,
        }
    }

    /// Whether the module waits for an answer.
    pub fn is_prompt(self) -> bool {
        matches!(self, Self::Hidden | Self::Visible)
    }
}

/// The conversation could not go on (the user gave up, the terminal is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvFailed;

/// The application's side of the conversation.
pub trait Converse {
    /// Answers one message: `Some` answer for a prompt, `None` for a message shown.
    fn converse(
        &mut self,
        style: Style,
        text: &str,
    ) -> Result<Option<Zeroizing<String>>, ConvFailed>;
}

/// A libpam call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PamError {
    /// The libpam return code.
    pub code: i32,
    /// `pam_strerror`'s text for it, or what went wrong before libpam was reached.
    pub message: String,
}

impl fmt::Display for PamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PamError {}

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: ConvFn,
    appdata_ptr: *mut c_void,
}

#[repr(C)]
struct PamHandle {
    _private: [u8; 0],
}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        pamh: *mut *mut PamHandle,
    ) -> c_int;
    fn pam_authenticate(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_acct_mgmt(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_get_item(pamh: *const PamHandle, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_end(pamh: *mut PamHandle, status: c_int) -> c_int;
    fn pam_strerror(pamh: *mut PamHandle, errnum: c_int) -> *const c_char;
}

/// A PAM transaction for one service and user. Dropping it ends the transaction.
pub struct Context<C: Converse> {
    handle: *mut PamHandle,
    /// The conversation libpam was given (from `Box::into_raw`, freed in Drop): a fixed
    /// address for as long as the handle lives, whether or not libpam copies it.
    conv: *mut PamConv,
    /// The application its callback reaches through `appdata_ptr` (likewise).
    app: *mut C,
    /// The status `pam_end` is told: the last call's.
    last: c_int,
    _owns: PhantomData<C>,
}

impl<C: Converse> fmt::Debug for Context<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl<C: Converse> Context<C> {
    /// `pam_start` for `service` and `user`, talking through `app`.
    pub fn start(service: &str, user: &str, app: C) -> Result<Self, PamError> {
        let bad = |what: &str| PamError {
            code: PAM_BUF_ERR,
            message: format!("{what} contains a NUL byte"),
        };
        let service = CString::new(service).map_err(|_| bad("the service name"))?;
        let user = CString::new(user).map_err(|_| bad("the user name"))?;
        let app = Box::into_raw(Box::new(app));
        let conv = Box::into_raw(Box::new(PamConv {
            conv: converse::<C>,
            appdata_ptr: app.cast(),
        }));
        // Owned from here on: Drop frees `conv` and `app`, and ends a started handle.
        let mut context = Self {
            handle: ptr::null_mut(),
            conv,
            app,
            last: PAM_SUCCESS,
            _owns: PhantomData,
        };
        // SAFETY: NUL-terminated strings, a conversation that lives as long as the
        // handle (both are owned by `context`), and an out-pointer.
        let rc = unsafe { pam_start(service.as_ptr(), user.as_ptr(), conv, &mut context.handle) };
        if rc != PAM_SUCCESS || context.handle.is_null() {
            context.handle = ptr::null_mut();
            return Err(PamError {
                code: rc,
                message: format!("cannot start PAM service {service:?} (code {rc})"),
            });
        }
        Ok(context)
    }

    /// `pam_authenticate` with `flags` (for example [`DISALLOW_NULL_AUTHTOK`]).
    pub fn authenticate(&mut self, flags: c_int) -> Result<(), PamError> {
        // SAFETY: `handle` is live until Drop.
        let rc = unsafe { pam_authenticate(self.handle, flags) };
        self.check(rc)
    }

    /// `pam_acct_mgmt`: is the account usable now (expired, locked)?
    pub fn acct_mgmt(&mut self) -> Result<(), PamError> {
        // SAFETY: `handle` is live until Drop.
        let rc = unsafe { pam_acct_mgmt(self.handle, 0) };
        self.check(rc)
    }

    /// PAM_USER now: a module may have changed it during the transaction.
    pub fn user(&self) -> Result<Option<String>, PamError> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: `handle` is live; `item` receives a pointer owned by libpam.
        let rc = unsafe { pam_get_item(self.handle, PAM_USER, &mut item) };
        if rc != PAM_SUCCESS {
            return Err(self.error(rc));
        }
        if item.is_null() {
            return Ok(None);
        }
        // SAFETY: PAM_USER is a NUL-terminated string owned by libpam, alive until the
        // next call on the handle; it is copied at once.
        let name = unsafe { CStr::from_ptr(item.cast::<c_char>()) };
        Ok(Some(name.to_string_lossy().into_owned()))
    }

    fn check(&mut self, rc: c_int) -> Result<(), PamError> {
        self.last = rc;
        if rc == PAM_SUCCESS {
            Ok(())
        } else {
            Err(self.error(rc))
        }
    }

    fn error(&self, rc: c_int) -> PamError {
        // SAFETY: pam_strerror returns a static string (or null) for any code.
        let text = unsafe { pam_strerror(self.handle, rc) };
        let message = if text.is_null() {
            format!("PAM error {rc}")
        } else {
            // SAFETY: non-null, NUL-terminated and static.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        PamError { code: rc, message }
    }
}

impl<C: Converse> Drop for Context<C> {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: ends the live handle exactly once; nothing uses it afterwards.
            unsafe { pam_end(self.handle, self.last) };
        }
        // SAFETY: from Box::into_raw in `start`; libpam no longer calls back.
        drop(unsafe { Box::from_raw(self.conv) });
        // SAFETY: as above.
        drop(unsafe { Box::from_raw(self.app) });
    }
}

/// libpam's conversation callback: hands each message to the application. Any failure,
/// a null message or a panic fails the whole conversation and frees what was answered.
unsafe extern "C" fn converse<C: Converse>(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        let Ok(n) = usize::try_from(num_msg) else {
            return PAM_CONV_ERR;
        };
        if n == 0 || msg.is_null() || resp.is_null() || appdata.is_null() {
            return PAM_CONV_ERR;
        }
        // SAFETY: appdata is the boxed `C` the Context owns, alive during every call.
        let app = unsafe { &mut *appdata.cast::<C>() };
        // SAFETY: Linux-PAM passes an array of `num_msg` message pointers.
        let messages = unsafe { std::slice::from_raw_parts(msg.cast_const(), n) };
        // SAFETY: libpam frees the array and each answer with free(3), so they come
        // from calloc and strdup; calloc zeroes every answer pointer.
        let replies = unsafe { libc::calloc(n, size_of::<PamResponse>()) }.cast::<PamResponse>();
        if replies.is_null() {
            return PAM_BUF_ERR;
        }
        // SAFETY: calloc returned `n` zeroed entries, owned here until handed over.
        let entries = unsafe { std::slice::from_raw_parts_mut(replies, n) };
        for (entry, &m) in entries.iter_mut().zip(messages) {
            match answer(app, m) {
                Ok(copy) => entry.resp = copy,
                Err(rc) => {
                    free_replies(entries);
                    return rc;
                }
            }
        }
        // SAFETY: `resp` is libpam's out-pointer for the reply array.
        unsafe { *resp = replies };
        PAM_SUCCESS
    }))
    .unwrap_or(PAM_CONV_ERR)
}

/// One message's answer as a malloc'd copy (null for a message only shown).
fn answer<C: Converse>(app: &mut C, m: *const PamMessage) -> Result<*mut c_char, c_int> {
    if m.is_null() {
        return Err(PAM_CONV_ERR);
    }
    // SAFETY: non-null, and libpam keeps the message alive during the call.
    let m = unsafe { &*m };
    let style = Style::from_raw(m.msg_style).ok_or(PAM_CONV_ERR)?;
    let text = if m.msg.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null msg is a NUL-terminated string owned by libpam.
        unsafe { CStr::from_ptr(m.msg) }
            .to_string_lossy()
            .into_owned()
    };
    let reply = app
        .converse(style, &text)
        .map_err(|ConvFailed| PAM_CONV_ERR)?;
    if !style.is_prompt() {
        return Ok(ptr::null_mut());
    }
    // A prompt left unanswered fails the conversation: a null answer must never pass
    // for an empty password.
    let reply = reply.ok_or(PAM_CONV_ERR)?;
    // The answer may be a password: only wiped buffers hold it.
    let mut bytes = Zeroizing::new(Vec::with_capacity(reply.len() + 1));
    bytes.extend_from_slice(reply.as_bytes());
    bytes.push(0);
    let c = CStr::from_bytes_with_nul(&bytes).map_err(|_| PAM_CONV_ERR)?;
    // SAFETY: strdup copies into malloc'd memory that libpam will free.
    let copy = unsafe { libc::strdup(c.as_ptr()) };
    if copy.is_null() {
        return Err(PAM_BUF_ERR);
    }
    Ok(copy)
}

/// Wipes and frees answers after a failed conversation (libpam frees them only on
/// success), then the array.
fn free_replies(entries: &mut [PamResponse]) {
    for r in entries.iter_mut().filter(|r| !r.resp.is_null()) {
        // SAFETY: a non-null resp is a NUL-terminated string strdup'd by `answer`.
        let len = unsafe { libc::strlen(r.resp) };
        // SAFETY: wipes exactly the `len` bytes of that string before freeing it.
        unsafe { libc::explicit_bzero(r.resp.cast(), len) };
        // SAFETY: allocated by strdup and not handed to libpam.
        unsafe { libc::free(r.resp.cast()) };
    }
    // SAFETY: the array came from calloc in `converse` and was not handed to libpam.
    unsafe { libc::free(entries.as_mut_ptr().cast()) };
}
