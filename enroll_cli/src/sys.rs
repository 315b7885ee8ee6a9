//! What is about the process itself, and the command's only `unsafe`: clearing the
//! environment and the inherited process settings at start, the clock's sync state, and
//! listing accounts. (libpam is reached through `twofactor-pam-client`.)

use std::ffi::{CStr, OsString};

use nix::libc;
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
use nix::unistd::{Gid, setegid};

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
