//! The process itself, set up before anything else runs: the environment cleared, and
//! the limits, signals and privileges a caller can hand a setuid program reset.
//! (libpam is reached through `twofactor-pam-client`; what the machine says, through
//! `host.rs`.)

use std::ffi::OsString;

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
