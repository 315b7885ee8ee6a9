//! The only `unsafe` in the command: clearing the environment and the inherited process
//! settings at start, and asking libpam to check the caller's password (service
//! `twofactor`).

use std::ffi::{CStr, CString, OsString, c_char, c_int, c_void};
use std::ptr;

use nix::libc;
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
use nix::unistd::{Gid, setegid};
use zeroize::Zeroizing;

use crate::prompt;

/// A safe PATH for anything libpam starts (unix_chkpwd and the like).
const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables `twofactor edit-config` hands the editor it starts for root.
const EDITOR_VARS: [&str; 8] = [
    "VISUAL",
    "EDITOR",
    "TERM",
    "COLORTERM",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
];

/// What was kept of the environment, to be honoured for root only.
#[derive(Debug, Default)]
pub struct Taken {
    /// `TWOFACTOR_CONFIG`.
    pub config: Option<OsString>,
    /// The editor and terminal variables, for `edit-config`.
    pub editor: Vec<(OsString, OsString)>,
}

/// Takes `TWOFACTOR_CONFIG` and the editor's variables (honoured later for root only) and
/// clears everything: a setuid program must not let its caller steer it through the
/// environment.
pub fn take_environment() -> Taken {
    let taken = Taken {
        config: std::env::var_os("TWOFACTOR_CONFIG"),
        editor: EDITOR_VARS
            .iter()
            .filter_map(|k| Some((OsString::from(k), std::env::var_os(k)?)))
            .collect(),
    };
    let names: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for name in names {
        // SAFETY: called first thing in main, before any other thread exists, so no
        // other code can be reading the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    // SAFETY: as above, still single-threaded.
    unsafe { std::env::set_var("PATH", SAFE_PATH) };
    taken
}

/// Resets what a caller can hand a setuid program through exec: resource limits (a
/// file-size limit would make state writes fail at will), signal dispositions and the
/// signal mask, core dumps and ptrace (`PR_SET_DUMPABLE` 0, so nobody can read the
/// secrets in memory), and the effective group, so files it creates are root:root.
pub fn harden_process() -> Result<(), String> {
    let limits = [
        (Resource::RLIMIT_FSIZE, RLIM_INFINITY),
        (Resource::RLIMIT_CORE, 0),
        (Resource::RLIMIT_NOFILE, 4096),
        (Resource::RLIMIT_CPU, RLIM_INFINITY),
        (Resource::RLIMIT_AS, RLIM_INFINITY),
        (Resource::RLIMIT_DATA, RLIM_INFINITY),
    ];
    for (resource, value) in limits {
        if setrlimit(resource, value, value).is_ok() {
            continue;
        }
        // Without CAP_SYS_RESOURCE (some containers) a lowered hard limit cannot be
        // raised: take all of it, and refuse to run under a file-size limit.
        let fail = |e: nix::Error| format!("cannot reset resource limit {resource:?}: {e}");
        let (_, hard) = getrlimit(resource).map_err(fail)?;
        setrlimit(resource, hard.min(value), hard).map_err(fail)?;
        if resource == Resource::RLIMIT_FSIZE && hard != RLIM_INFINITY {
            return Err("a file-size limit (ulimit -f) was inherited and cannot be lifted here; run twofactor without one".into());
        }
    }
    for sig in [
        Signal::SIGXFSZ,
        Signal::SIGXCPU,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGALRM,
        Signal::SIGCHLD,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: single-threaded at start; the default disposition runs no handler code.
        unsafe { signal(sig, SigHandler::SigDfl) }
            .map_err(|e| format!("cannot reset {sig}: {e}"))?;
    }
    // A write to a closed pipe is an error, never a kill halfway through a command.
    // SAFETY: as above; ignoring runs no handler code.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .map_err(|e| format!("cannot set SIGPIPE: {e}"))?;
    SigSet::empty()
        .thread_set_mask()
        .map_err(|e| format!("cannot clear the signal mask: {e}"))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("cannot turn off core dumps: {e}"))?;
    if nix::unistd::geteuid().is_root() {
        setegid(Gid::from_raw(0)).map_err(|e| format!("cannot set the effective group: {e}"))?;
    }
    Ok(())
}

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;

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
    fn pam_acct_mgmt(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_end(pamh: *mut PamHandle, status: c_int) -> c_int;
    fn pam_strerror(pamh: *mut PamHandle, errnum: c_int) -> *const c_char;
}

/// Answers one PAM message; `None` means the conversation failed.
fn answer(style: c_int, text: &str) -> Option<Option<Zeroizing<String>>> {
    match style {
        PAM_PROMPT_ECHO_OFF => prompt::read_hidden(text).ok().flatten().map(Some),
        PAM_PROMPT_ECHO_ON => prompt::read_visible(text)
            .ok()
            .flatten()
            .map(|s| Some(Zeroizing::new(s))),
        PAM_ERROR_MSG | PAM_TEXT_INFO => {
            eprintln!("{text}");
            Some(None)
        }
        _ => None,
    }
}

extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    _appdata: *mut c_void,
) -> c_int {
    let result = std::panic::catch_unwind(|| {
        let Ok(n) = usize::try_from(num_msg) else {
            return PAM_CONV_ERR;
        };
        if n == 0 || msg.is_null() || resp.is_null() {
            return PAM_CONV_ERR;
        }
        // SAFETY: libpam frees the array and each string with free(3), so both come
        // from calloc/strdup; calloc zeroes every resp pointer.
        let replies = unsafe { libc::calloc(n, size_of::<PamResponse>()) }.cast::<PamResponse>();
        if replies.is_null() {
            return PAM_BUF_ERR;
        }
        for i in 0..n {
            // SAFETY: Linux-PAM passes an array of `num_msg` message pointers; i < n.
            let slot = unsafe { msg.add(i) };
            // SAFETY: each slot holds a valid pointer to a message owned by libpam.
            let m_ptr = unsafe { *slot };
            if m_ptr.is_null() {
                free_replies(replies, n);
                return PAM_CONV_ERR;
            }
            // SAFETY: checked non-null above; libpam keeps it alive during the call.
            let m = unsafe { &*m_ptr };
            let text = if m.msg.is_null() {
                String::new()
            } else {
                // SAFETY: a non-null msg is a NUL-terminated string owned by libpam.
                unsafe { CStr::from_ptr(m.msg) }
                    .to_string_lossy()
                    .into_owned()
            };
            match answer(m.msg_style, &text) {
                None => {
                    free_replies(replies, n);
                    return PAM_CONV_ERR;
                }
                Some(None) => {}
                Some(Some(reply)) => {
                    // The password passes through here: only wiped buffers hold it.
                    let mut bytes = Zeroizing::new(Vec::with_capacity(reply.len() + 1));
                    bytes.extend_from_slice(reply.as_bytes());
                    bytes.push(0);
                    let Ok(c) = CStr::from_bytes_with_nul(&bytes) else {
                        free_replies(replies, n);
                        return PAM_CONV_ERR;
                    };
                    // SAFETY: strdup copies into malloc'd memory that libpam will free.
                    let copy = unsafe { libc::strdup(c.as_ptr()) };
                    // SAFETY: `replies` points to `n` zeroed entries from calloc.
                    let entries = unsafe { std::slice::from_raw_parts_mut(replies, n) };
                    entries[i].resp = copy;
                }
            }
        }
        // SAFETY: `resp` is libpam's out-pointer for the reply array.
        unsafe { *resp = replies };
        PAM_SUCCESS
    });
    result.unwrap_or(PAM_CONV_ERR)
}

/// Frees replies after a failed conversation (libpam only frees them on success).
fn free_replies(replies: *mut PamResponse, n: usize) {
    // SAFETY: `replies` points to the `n` entries allocated by calloc.
    let entries = unsafe { std::slice::from_raw_parts_mut(replies, n) };
    for r in entries.iter_mut() {
        if r.resp.is_null() {
            continue;
        }
        // SAFETY: a non-null resp is a NUL-terminated string strdup'd above.
        let len = unsafe { libc::strlen(r.resp) };
        // SAFETY: wipes exactly the `len` bytes of that string before freeing it.
        unsafe { libc::explicit_bzero(r.resp.cast(), len) };
        // SAFETY: allocated by strdup and not handed to libpam.
        unsafe { libc::free(r.resp.cast()) };
    }
    // SAFETY: allocated by calloc above and not handed to libpam.
    unsafe { libc::free(replies.cast()) };
}

/// Checks `user`'s password (and account) through PAM service `service`, asking on the
/// terminal or reading stdin. `Err` carries libpam's reason.
pub fn pam_check_password(service: &str, user: &str) -> Result<(), String> {
    let service = CString::new(service).map_err(|_| "bad PAM service name".to_string())?;
    let user_c = CString::new(user).map_err(|_| "bad user name".to_string())?;
    let conv = PamConv {
        conv: conversation,
        appdata_ptr: ptr::null_mut(),
    };
    let mut handle: *mut PamHandle = ptr::null_mut();
    // SAFETY: valid NUL-terminated strings and a conversation struct that outlives the
    // handle; `handle` receives the new PAM handle.
    let rc = unsafe { pam_start(service.as_ptr(), user_c.as_ptr(), &conv, &mut handle) };
    if rc != PAM_SUCCESS || handle.is_null() {
        return Err(format!("cannot start PAM service {service:?} (code {rc})"));
    }
    // SAFETY: `handle` is the live handle from pam_start.
    let mut rc = unsafe { pam_authenticate(handle, PAM_DISALLOW_NULL_AUTHTOK) };
    if rc == PAM_SUCCESS {
        // SAFETY: as above.
        rc = unsafe { pam_acct_mgmt(handle, 0) };
    }
    let reason = if rc == PAM_SUCCESS {
        String::new()
    } else {
        // SAFETY: pam_strerror returns a static string for any code.
        let s = unsafe { pam_strerror(handle, rc) };
        if s.is_null() {
            format!("PAM error {rc}")
        } else {
            // SAFETY: non-null, NUL-terminated, static.
            unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: ends the handle exactly once; it is not used afterwards.
    unsafe { pam_end(handle, rc) };
    if rc == PAM_SUCCESS {
        Ok(())
    } else {
        Err(reason)
    }
}

/// Whether the kernel considers the clock synchronised (NTP), from adjtimex(2) in
/// read-only mode; `None` if it cannot be asked.
pub fn clock_synchronised() -> Option<bool> {
    // SAFETY: timex is plain C data; all-zero (modes = 0) asks adjtimex to change nothing.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, writable timex for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    Some(state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0)
}

/// Every account the name service lists (getpwent): name and primary gid. Directories
/// that do not enumerate (SSSD's default, many LDAP setups) list none of theirs.
pub fn list_accounts() -> Vec<(String, u32)> {
    let mut accounts = Vec::new();
    // SAFETY: the command is single-threaded, so nothing else uses the passwd cursor
    // between setpwent and endpwent; each entry is copied before the next call.
    unsafe { libc::setpwent() };
    loop {
        // SAFETY: as above; a null pointer ends the list.
        let entry = unsafe { libc::getpwent() };
        if entry.is_null() {
            break;
        }
        // SAFETY: getpwent returned a valid entry, alive until the next call.
        let entry = unsafe { &*entry };
        // SAFETY: pw_name of a valid entry is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(entry.pw_name) };
        let (name, gid) = (name.to_string_lossy().into_owned(), entry.pw_gid);
        accounts.push((name, gid));
    }
    // SAFETY: closes the cursor opened above.
    unsafe { libc::endpwent() };
    accounts
}

/// The name service sources for passwd and group in /etc/nsswitch.conf that are not
/// local files (`sss`, `ldap`, `winbind`, ...): accounts there may not be listed.
pub fn remote_account_sources() -> Vec<String> {
    remote_sources(&std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default())
}

fn remote_sources(text: &str) -> Vec<String> {
    let mut sources: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let (db, rest) = l.split_once(':')?;
            matches!(db.trim(), "passwd" | "group").then_some(rest)
        })
        .flat_map(|rest| {
            rest.split_whitespace()
                .filter(|s| !s.starts_with('['))
                .filter(|s| !matches!(*s, "files" | "compat" | "systemd" | "altfiles"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    sources.sort();
    sources.dedup();
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_sources_are_those_beyond_local_files() {
        let debian =
            "passwd:         files systemd\ngroup:          files systemd\nhosts: files dns\n";
        assert!(remote_sources(debian).is_empty());
        let sssd = "# comment\npasswd: files sss [NOTFOUND=return] ldap\ngroup: files sss\nnetgroup: nis\n";
        assert_eq!(remote_sources(sssd), ["ldap", "sss"]);
    }
}
