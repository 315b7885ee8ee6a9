//! The benchmark's only `unsafe`: `setenv` for libfaketime, and `dlopen` to measure what
//! loading a module costs. (libpam is reached through `twofactor-pam-client`.)

use std::ffi::CStr;

use nix::libc;

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
