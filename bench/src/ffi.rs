//! The benchmark's only `unsafe`: a minimal libpam client whose conversation answers
//! password prompts with a given code, `setenv` for libfaketime, and `dlopen` to measure
//! what loading a module costs.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;

use nix::libc;

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;

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

#[repr(C)]
struct PamConv {
    conv: extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int,
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
    fn pam_end(pamh: *mut PamHandle, status: c_int) -> c_int;
}

/// Answers every prompt with the code in `appdata` (a `CString`).
extern "C" fn answer(
    n: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    let Ok(n) = usize::try_from(n) else {
        return PAM_CONV_ERR;
    };
    if n == 0 || msg.is_null() || resp.is_null() || appdata.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY: libpam frees the array with free(3), so it must come from calloc.
    let replies = unsafe { libc::calloc(n, size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    // SAFETY: calloc returned `n` zeroed entries.
    let entries = unsafe { std::slice::from_raw_parts_mut(replies, n) };
    // SAFETY: appdata is the `CString` passed to `authenticate`, alive for the call.
    let code = unsafe { &*appdata.cast::<CString>() };
    // SAFETY: libpam passes an array of `n` message pointers.
    let messages = unsafe { std::slice::from_raw_parts(msg.cast_const(), n) };
    for (entry, &m_ptr) in entries.iter_mut().zip(messages) {
        if m_ptr.is_null() {
            continue;
        }
        // SAFETY: non-null, and libpam keeps the message alive during the call.
        let m = unsafe { &*m_ptr };
        if m.msg_style == PAM_PROMPT_ECHO_OFF || m.msg_style == PAM_PROMPT_ECHO_ON {
            // SAFETY: strdup'd memory is freed by libpam.
            entry.resp = unsafe { libc::strdup(code.as_ptr()) };
        }
    }
    // SAFETY: libpam's out-pointer for the replies.
    unsafe { *resp = replies };
    PAM_SUCCESS
}

/// One `pam_authenticate` for `user` through `service`, answering with `code`.
/// Returns libpam's result code.
pub fn authenticate(service: &CStr, user: &CStr, code: &str) -> i32 {
    let code = CString::new(code).unwrap_or_default();
    let conv = PamConv {
        conv: answer,
        appdata_ptr: ptr::from_ref(&code).cast_mut().cast(),
    };
    let mut h: *mut PamHandle = ptr::null_mut();
    // SAFETY: valid strings, a conversation that outlives the handle, an out-pointer.
    let rc = unsafe { pam_start(service.as_ptr(), user.as_ptr(), &conv, &mut h) };
    if rc != PAM_SUCCESS {
        return rc;
    }
    // SAFETY: `h` is the live handle from pam_start.
    let rc = unsafe { pam_authenticate(h, 0) };
    // SAFETY: ends the handle once.
    unsafe { pam_end(h, rc) };
    rc
}

/// Sets an environment variable (libfaketime rereads FAKETIME on every clock call).
pub fn set_env(key: &str, value: &str) {
    // SAFETY: the benchmark is single-threaded while it changes the environment.
    unsafe { std::env::set_var(key, value) };
}

/// Loads a shared object the way libpam does; returns whether it loaded.
pub fn dlopen(path: &CStr) -> bool {
    // SAFETY: a valid path; the handle is kept open on purpose (we measure its RSS).
    !unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) }.is_null()
}
