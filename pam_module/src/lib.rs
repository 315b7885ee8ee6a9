//! pam_twofactor: the PAM module. A thin adapter: it reads PAM items, runs the login flow
//! from [`flow`] over libpam's conversation, logs the decision and maps it to a code.
//!
//! All `unsafe` lives in the private module `ffi`; everything else is safe Rust.

#![deny(unsafe_code)]

pub mod conversation;
pub mod decision;
#[allow(unsafe_code)]
mod ffi;
pub mod flow;
mod hooks;
#[allow(unsafe_code)]
// The flow's unit tests open the database in-process, so nothing calls this there.
#[cfg_attr(test, allow(dead_code))]
mod plugin;
