//! The storage backend boundary: every read and change of user state that a login or an
//! admin command makes, shaped by what they need rather than by "load the secret".
//!
//! A code goes in and an outcome comes out ([`Backend::verify`]); a secret goes in only
//! at enrollment ([`Backend::enroll`], [`Backend::import`]) and never comes out. What a
//! caller may read is [`UserFacts`], which holds no secret. That is what lets a backend
//! on a server verify codes where the secrets are and keep them off the hosts.
//!
//! Every change to a user's second factor names its [`Authority`]: the [`Verified`]
//! proof of a code the user just typed, which only [`Backend::verify`] makes and each
//! change uses up, or [`Authority::Admin`]. Both stores hold a caller to the same rules.
//!
//! [`open`] picks the implementation from `[storage] backend`; the file store
//! ([`crate::store::Store`], `backend = "files"`) is the first.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::auth::{CodeResult, Purpose};
use crate::backup_codes::{BackupCodes, GenerateError, HashCost, HashError, NewCodes};
use crate::clock::{Clock, SystemClock};
use crate::config::{BackendKind, Config};
use crate::enroll::{Enrollment, SaveSettings};
use crate::lockout::Lockout;
use crate::random::{Random, RandomError};
use crate::store::{Store, StoreError, UserState};
use crate::totp::{SecretKey, TotpParams};
use crate::trusted::{RemoteHost, TrustedDevices};

mod files;
pub mod postgresql;

/// Where user state lives, and every operation on it.
///
/// Each method is one atomic change (or read) of one user's state: the file store holds
/// the user's lock for it, a database one transaction. Two callers, on one host or two,
/// never both spend one backup code, reuse one TOTP step or take the last grace login.
pub trait Backend: fmt::Debug + Send + Sync {
    /// The facts a login is routed on and `status` shows. A user with no state has the
    /// default (nothing set up).
    fn facts(&self, user: &str) -> Result<UserFacts, BackendError>;

    /// [`Self::facts`] for a login, with whether this host's config requires `user`. A
    /// shared store records that report, labelled with this host, for the admin view:
    /// only hosts know whom they require. The file store has nothing to tell.
    fn login_facts(&self, user: &str, _required: bool) -> Result<UserFacts, BackendError> {
        self.facts(user)
    }

    /// The issuer the store names for every enrollment (a fleet's, from `fleet init
    /// --issuer`); none for a host's own files, whose issuer is the config's or the host's.
    fn issuer(&self) -> Result<Option<String>, BackendError> {
        Ok(None)
    }

    /// Every user with state, in name order.
    fn users(&self) -> Result<Vec<String>, BackendError>;

    /// The server that answered the last call, for the audit line: a fleet database's
    /// `host:port (address)`; none for local files.
    fn served_by(&self) -> Option<String> {
        None
    }

    /// Checks a typed code: locked or not enrolled is answered unchecked; otherwise the
    /// attempt is recorded as a failure and made durable before the code is looked at,
    /// and a right code (fresh TOTP step, or an unspent backup code) then writes the
    /// success. Returns only once the outcome is durable, with the [`Verified`] proof
    /// that a right code hands out for one change.
    fn verify(
        &self,
        user: &str,
        code: &str,
        purpose: Purpose,
        config: &Config,
    ) -> Result<Checked, BackendError>;

    /// Saves `enrollment` with fresh backup codes once `first_code` verifies against it,
    /// and only if the user's authenticator is still `expected` (`None`: none). Returns
    /// the backup codes to show once, or, when the code did not match, nothing changed
    /// and the authority back unspent. [`BackendError::Changed`] when the authenticator
    /// changed meanwhile.
    ///
    /// `authority` is needed to replace an enabled authenticator (the user's proof of
    /// it, or an administrator), and an administrator's to save without a code
    /// (`first_code` `None`, provisioning); otherwise [`BackendError::Refused`]. A user
    /// without an authenticator, or with a turned-off one, needs none.
    #[allow(clippy::too_many_arguments)] // each is a separate fact of the one change
    fn enroll(
        &self,
        user: &str,
        enrollment: &Enrollment,
        first_code: Option<&str>,
        expected: Option<&AuthenticatorId>,
        authority: Option<Authority>,
        settings: SaveSettings,
        rng: &mut dyn Random,
    ) -> Result<Enrolled, BackendError>;

    /// Takes over an authenticator set up elsewhere (a google-authenticator file), with
    /// its own window and scratch codes, for a user who has none. Returns the backup
    /// codes it now has, or `None` when the user already has an authenticator.
    fn import(&self, user: &str, imported: Imported<'_>) -> Result<Option<usize>, BackendError>;

    /// Counts one grace login. Returns how many are left after it, or `None` when none
    /// was left (`allowed` is `enroll.grace_logins`).
    fn count_grace_login(&self, user: &str, allowed: u32) -> Result<Option<u32>, BackendError>;

    /// Trusts `host` for the logins through `service` of the user `proof` was made for,
    /// for `days` from now: only a login that just verified a code may. Returns the
    /// entry's id.
    fn trust_host(
        &self,
        proof: Verified,
        service: &str,
        host: &RemoteHost,
        days: u32,
    ) -> Result<String, BackendError>;

    /// Revokes trusted hosts; how many were removed (0: no entry has that id).
    fn revoke_trust(
        &self,
        user: &str,
        authority: Authority,
        which: Revoke<'_>,
    ) -> Result<usize, BackendError>;

    /// Turns the authenticator on or off, keeping the key. `false` when there is none.
    fn set_enabled(
        &self,
        user: &str,
        authority: Authority,
        enabled: bool,
    ) -> Result<bool, BackendError>;

    /// Removes the authenticator, backup codes and trusted hosts, keeping the lock and
    /// grace count. `false` when there was no authenticator.
    fn remove_authenticator(&self, user: &str, authority: Authority) -> Result<bool, BackendError>;

    /// Removes everything: authenticator, backup codes, lock, trusted hosts, grace count.
    /// An administrator's change, as are [`Self::unlock`] and [`Self::import`].
    fn reset(&self, user: &str) -> Result<(), BackendError>;

    /// Clears the failure count and any lock. Returns the seconds of lock that were left.
    fn unlock(&self, user: &str) -> Result<Option<u64>, BackendError>;

    /// Replaces the backup codes with `count` fresh ones (none when 0). Returns them to
    /// show once, or `None` when the user has no authenticator.
    fn new_backup_codes(
        &self,
        user: &str,
        authority: Authority,
        count: usize,
        rng: &mut dyn Random,
    ) -> Result<Option<NewCodes>, BackendError>;
}

/// What a caller gives the store it opens: the owner its files must have (root in
/// production; the caller in unprivileged tests), the clock a file store checks codes
/// and locks on, and the cost of the backup-code hashes a file store makes. A database
/// checks on its own clock and hashes on the server.
#[derive(Clone)]
pub struct Opening {
    /// The uid required of the state.
    pub owner: u32,
    /// The file store's clock.
    pub clock: Arc<dyn Clock + Send + Sync>,
    /// The file store's backup-code hash cost.
    pub hash_cost: HashCost,
}

impl Opening {
    /// The real clock and the real hash cost, for files owned by `owner`.
    pub fn system(owner: u32) -> Self {
        Self {
            owner,
            clock: Arc::new(SystemClock),
            hash_cost: HashCost::DEFAULT,
        }
    }
}

impl fmt::Debug for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opening")
            .field("owner", &self.owner)
            .field("now", &self.clock.now())
            .finish_non_exhaustive()
    }
}

/// Opens the backend `config` names, with the real clock. `owner` is the uid required
/// of the state (root in production; the caller in unprivileged tests).
pub fn open(config: &Config, owner: u32) -> Result<Box<dyn Backend>, BackendError> {
    open_with(config, &Opening::system(owner))
}

/// As [`open`], with the clock and hash cost of `opening`.
pub fn open_with(config: &Config, opening: &Opening) -> Result<Box<dyn Backend>, BackendError> {
    match config.storage.backend {
        BackendKind::Files => Ok(Box::new(open_files(config, opening)?)),
        BackendKind::Postgresql => Ok(Box::new(fleet(
            config,
            postgresql::Role::Host,
            opening.owner,
        )?)),
    }
}

/// The file store `config` names, whatever its backend: for a caller that opens the
/// fleet database another way (the PAM module loads that client only when needed).
pub fn open_files(config: &Config, opening: &Opening) -> Result<Store, BackendError> {
    Ok(
        Store::open_owned_by(&config.storage.state_dir, opening.owner)?
            .with_clock(opening.clock.clone())
            .with_hash_cost(opening.hash_cost),
    )
}

/// Identifies this build's types for the fleet plugin, which the PAM module loads as a
/// separate object and hands `Config`s and takes `Box<dyn Backend>`s from: a plugin
/// from another build of twofactor answers another number, and is not used.
pub fn abi_fingerprint() -> u64 {
    use std::mem::{align_of, size_of};
    let facts = [
        size_of::<Config>(),
        align_of::<Config>(),
        size_of::<BackendError>(),
        size_of::<Result<Box<dyn Backend>, BackendError>>(),
        size_of::<UserFacts>(),
        size_of::<Checked>(),
        size_of::<Enrolled>(),
        size_of::<Opening>(),
    ];
    // FNV-1a over the version and the sizes: stable, and no dependency.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = env!("CARGO_PKG_VERSION")
        .bytes()
        .chain(facts.iter().flat_map(|n| n.to_le_bytes()));
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Opens the backend for an administrator's command: the file store as [`open`] does, or
/// the fleet database as `twofactor_admin` (the admin config's certificate).
pub fn open_admin(config: &Config, owner: u32) -> Result<Box<dyn Backend>, BackendError> {
    match config.storage.backend {
        BackendKind::Files => open(config, owner),
        BackendKind::Postgresql => Ok(Box::new(fleet(config, postgresql::Role::Admin, owner)?)),
    }
}

/// The fleet database as `twofactor_admin`, for what only the database backend does
/// (`twofactor fleet import`); an error when the config's backend is the file store.
pub fn fleet_admin(config: &Config) -> Result<postgresql::Postgresql, BackendError> {
    match config.storage.backend {
        BackendKind::Postgresql => fleet(config, postgresql::Role::Admin, 0),
        BackendKind::Files => Err(BackendError::Setup(
            "this needs the fleet's admin config: [storage] backend = \"postgresql\" with an administrator's certificate (--config FILE)".into(),
        )),
    }
}

fn fleet(
    config: &Config,
    role: postgresql::Role,
    owner: u32,
) -> Result<postgresql::Postgresql, BackendError> {
    let settings = config.storage.postgresql.clone().ok_or_else(|| {
        BackendError::Setup("storage.backend = \"postgresql\" without [storage.postgresql]".into())
    })?;
    Ok(postgresql::Postgresql::new(settings, role, owner))
}

/// How every "cannot reach the database" error starts.
pub const SERVER_UNREACHABLE: &str = "the two-factor database cannot be reached";

/// Where a connection to a server, or a call on it, was when it failed or ran out of
/// time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Looking up the server's name.
    Resolve,
    /// The TCP connection.
    Connect,
    /// The TLS handshake.
    Tls,
    /// Startup and certificate authentication.
    Auth,
    /// Asking whether the server takes writes (a standby does not).
    Check,
    /// A call: the query and its commit.
    Call,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Resolve => "resolve",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Auth => "auth",
            Self::Check => "check",
            Self::Call => "call",
        })
    }
}

/// A change or read of user state failed; a login must be refused. Callers match on the
/// kind, never on the text.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The file store failed (full disk, bad permissions...). A name it will not store
    /// is [`Self::Refused`] and a file it cannot read [`Self::Corrupt`], as on the
    /// database.
    #[error(transparent)]
    Store(StoreError),
    /// Backup-code hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// New backup codes could not be made.
    #[error(transparent)]
    Codes(#[from] GenerateError),
    /// No randomness.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The user's authenticator changed since an enrollment started (another login or an
    /// administrator got there first); nothing was saved.
    #[error("the authenticator of {0} was changed meanwhile (another login or an administrator)")]
    Changed(String),
    /// No server answered in time, or each refused the connection: down, a network
    /// fault, TLS or certificate authentication. `server` and `phase` are the last
    /// attempt's, when one was made; `why` lists every attempt.
    #[error("{SERVER_UNREACHABLE}: {why}")]
    Unreachable {
        /// The last server tried, as `host:port (address)`.
        server: Option<String>,
        /// Where that attempt stopped.
        phase: Option<Phase>,
        /// What each attempt met.
        why: String,
    },
    /// The store refused this caller: a host asking for an administrator's function, a
    /// change without the proof it needs, a name it will not store.
    #[error("the two-factor database refused: {0}")]
    Refused(String),
    /// The store answered with something this build cannot read (a newer or damaged
    /// schema, an unexpected reply).
    #[error("{0}")]
    Corrupt(String),
    /// The user's state is held by another change for longer than the deadline, or the
    /// call ran out of time on the server: try again.
    #[error("the two-factor database is busy: {0}")]
    Busy(String),
    /// The store cannot be used as configured: credentials, settings, the server's
    /// setup.
    #[error("{0}")]
    Setup(String),
}

impl From<StoreError> for BackendError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadUserName { .. } => Self::Refused(e.to_string()),
            StoreError::Corrupt { .. } | StoreError::UnsupportedVersion { .. } => {
                Self::Corrupt(e.to_string())
            }
            other => Self::Store(other),
        }
    }
}

impl BackendError {
    /// The server could not be reached: the user is told so, rather than "unavailable".
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// Proof that a code was just verified for one user: made only by [`Backend::verify`]
/// (its fields are private and it has no public constructor), and used up by the one
/// change it authorises.
///
/// ```compile_fail
/// // Nothing outside core can make one.
/// let forged = twofactor_core::backend::Verified { user: "root".into(), ticket: None };
/// ```
///
/// ```compile_fail
/// let proof: twofactor_core::backend::Verified = unimplemented!();
/// let copy = proof.clone(); // one proof, one change
/// ```
pub struct Verified {
    user: String,
    /// The database's ticket for the change, which it checks and spends; none on the
    /// file store, where this value is the proof.
    ticket: Option<Zeroizing<Vec<u8>>>,
}

impl Verified {
    /// The proof that `user` just typed a right code.
    pub(crate) fn new(user: &str, ticket: Option<Zeroizing<Vec<u8>>>) -> Self {
        Self {
            user: user.to_string(),
            ticket,
        }
    }

    /// The user whose code was verified.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The database's ticket, if any.
    pub(crate) fn ticket(&self) -> Option<&[u8]> {
        self.ticket.as_deref().map(Vec::as_slice)
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Who makes a change to a user's second factor.
#[derive(Debug)]
pub enum Authority {
    /// The user, with the proof of a code they just typed.
    Verified(Verified),
    /// An administrator: root on a host's own files, the admin role on a fleet.
    Admin,
}

impl Authority {
    /// Whether this authority may change `user`: an administrator, or proof made for
    /// that very user. The database checks its ticket again.
    pub(crate) fn covers(&self, user: &str) -> Result<(), BackendError> {
        match self {
            Self::Admin => Ok(()),
            Self::Verified(p) if p.user == user => Ok(()),
            Self::Verified(p) => Err(BackendError::Refused(format!(
                "a code verified for {} cannot change {user}",
                p.user
            ))),
        }
    }
}

/// The refusal of a user's change that came without the proof it needs; the database's
/// words for it.
pub(crate) fn needs_proof(what: &str) -> BackendError {
    BackendError::Refused(format!("{what} needs a current code verified on this host"))
}

/// What [`Backend::enroll`] did.
#[derive(Debug)]
pub enum Enrolled {
    /// Saved: the backup codes to show once.
    Saved(NewCodes),
    /// The first code did not match the new secret: nothing changed, and the authority
    /// it came with is handed back for the next try.
    Mismatch(Option<Authority>),
}

impl Enrolled {
    /// The backup codes, when saved.
    pub fn saved(self) -> Option<NewCodes> {
        match self {
            Self::Saved(codes) => Some(codes),
            Self::Mismatch(_) => None,
        }
    }
}

/// What [`Backend::verify`] found, and for a right code the proof of it.
#[derive(Debug)]
pub struct Checked {
    /// The outcome.
    pub result: CodeResult,
    /// Present exactly when [`CodeResult::is_success`].
    pub proof: Option<Verified>,
}

/// Which trusted hosts to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke<'a> {
    /// The entry with this id.
    One(&'a str),
    /// Every entry.
    All,
}

/// An authenticator set up elsewhere, for [`Backend::import`].
#[derive(Debug)]
pub struct Imported<'a> {
    /// Its secret and label, as an enrollment.
    pub enrollment: &'a Enrollment,
    /// Steps accepted either side of now, as the old module had them.
    pub window: u8,
    /// Its scratch codes, hashed.
    pub backup_codes: Option<BackupCodes>,
}

/// Names one authenticator without revealing it: equal for the same secret, and no
/// use for computing codes. An enrollment passes the one it started from, so that an
/// authenticator set up meanwhile is never overwritten.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthenticatorId([u8; 16]);

impl AuthenticatorId {
    /// The id of `secret`: a domain-separated SHA-256, cut to 128 bits.
    pub fn of(secret: &SecretKey) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"twofactor authenticator id\0");
        h.update(secret.as_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }
}

impl fmt::Debug for AuthenticatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: String = self.0[..4].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "AuthenticatorId({hex}..)")
    }
}

/// One user's state as callers may see it: everything but the secret and the backup
/// code hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFacts {
    /// The authenticator, if one is set up (enabled or not).
    pub authenticator: Option<AuthenticatorFacts>,
    /// Unused backup codes.
    pub backup_codes_left: usize,
    /// Failure count and lock.
    pub lockout: Lockout,
    /// Remote hosts that may skip the code for a while.
    pub trusted_devices: TrustedDevices,
    /// Logins taken without enrolling.
    pub grace_logins_used: u32,
    /// The backup codes were voided with a retired key (`fleet rotate-key --retire`) and
    /// none have been made since: the user is told at login to make new ones.
    pub backup_codes_voided: bool,
}

impl UserFacts {
    /// Has an authenticator, whether or not it is temporarily disabled.
    pub fn is_enrolled(&self) -> bool {
        self.authenticator.is_some()
    }

    /// The authenticator's id, for [`Backend::enroll`]'s `expected`.
    pub fn authenticator_id(&self) -> Option<&AuthenticatorId> {
        self.authenticator.as_ref().map(|a| &a.id)
    }
}

/// An authenticator, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatorFacts {
    /// Which one it is.
    pub id: AuthenticatorId,
    /// How the app computes codes.
    pub params: TotpParams,
    /// `false` while temporarily disabled.
    pub enabled: bool,
    /// Unix time of enrollment.
    pub enrolled_at: u64,
    /// The newest step accepted; codes at or before it are replays.
    pub last_step: Option<u64>,
    /// Steps accepted either side of now, when imported with its own; otherwise
    /// `totp.window` applies.
    pub window: Option<u8>,
}

impl From<&UserState> for UserFacts {
    fn from(s: &UserState) -> Self {
        Self {
            authenticator: s.authenticator.as_ref().map(|a| AuthenticatorFacts {
                id: AuthenticatorId::of(&a.secret),
                params: a.params,
                enabled: a.enabled,
                enrolled_at: a.enrolled_at,
                last_step: a.last_step,
                window: a.window,
            }),
            backup_codes_left: s.backup_codes_left(),
            lockout: s.lockout.clone(),
            trusted_devices: s.trusted_devices.clone(),
            grace_logins_used: s.grace_logins_used,
            // A host's own file store has one key and never retires it.
            backup_codes_voided: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn an_authenticator_id_tells_secrets_apart_and_hides_them() {
        let a = SecretKey::generate(&mut SeededRandom::new(1)).unwrap();
        let b = SecretKey::generate(&mut SeededRandom::new(2)).unwrap();
        assert_eq!(AuthenticatorId::of(&a), AuthenticatorId::of(&a.clone()));
        assert_ne!(AuthenticatorId::of(&a), AuthenticatorId::of(&b));
        let shown = format!("{:?}", AuthenticatorId::of(&a));
        assert!(!shown.contains(&*a.to_base32()), "{shown}");
        assert_eq!(shown.len(), "AuthenticatorId(01234567..)".len());
    }
}
