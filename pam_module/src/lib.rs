//! pam_twofactor: the PAM adapter over twofactor-core.
//!
//! Not yet wired to libpam: this crate exports no `pam_sm_*` symbols, so libpam cannot
//! load it as a module and no PAM stack can depend on it by accident.

#![forbid(unsafe_code)]

pub use twofactor_core as core;
