//! The fleet database client as a plugin of pam_twofactor. The module loads it (from
//! `../twofactor/fleet.so` beside its own directory, or `libtwofactor_fleet.so` beside
//! it in a build tree) only when the config's backend is PostgreSQL, so logins on the
//! file store never load TLS, the PostgreSQL client, libssl or libcrypto.
//!
//! Both objects are built from one workspace with one compiler and link the same
//! twofactor-core, so they share its types; [`twofactor_fleet_fingerprint`] lets the
//! module refuse a plugin from another build.

use twofactor_core::backend::{self, Backend, BackendError};
use twofactor_core::config::Config;

/// This build's [`backend::abi_fingerprint`].
#[unsafe(no_mangle)]
pub extern "C" fn twofactor_fleet_fingerprint() -> u64 {
    backend::abi_fingerprint()
}

/// The fleet database as a host reaches it, from `config` (whose backend is
/// PostgreSQL), with credential files owned by `owner`.
#[unsafe(no_mangle)]
pub fn twofactor_fleet_open(config: &Config, owner: u32) -> Result<Box<dyn Backend>, BackendError> {
    backend::open(config, owner)
}
