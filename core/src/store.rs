//! The user store: one root-owned 0600 file per user, changed only under a per-user lock
//! and replaced atomically.
//!
//! Every change goes through [`Store::hold`] (or [`Store::update`], built on it): take the
//! user's `flock`, read the state, run the change, write a temp file, fsync, rename, fsync
//! the directory. Two logins can therefore never both spend one backup code or both pass
//! with one TOTP step, and a crash leaves either the old state or the new one. A change
//! may also commit in steps under one lock: a login records its attempt before the code
//! is looked at.

use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::backup_codes::{BackupCodes, HashCost};
use crate::clock::{Clock, SystemClock};
pub use crate::fsutil::FileError;
use crate::fsutil::{self, FileRules};
use crate::lockout::Lockout;
use crate::totp::{SecretKey, TotpParams};
use crate::trusted::{TrustedDeviceV1, TrustedDevices};

/// The state file format this code writes. Version 1 files are still read: their
/// trusted hosts (which named neither service nor address type) are dropped.
pub const STATE_VERSION: u32 = 2;
/// The oldest format this code reads.
pub const OLDEST_STATE_VERSION: u32 = 1;
/// State files larger than this are refused as corrupt.
pub const MAX_STATE_BYTES: u64 = 256 * 1024;
/// Longest accepted user name, in bytes, leaving room for the file suffixes.
pub const MAX_USER_LEN: usize = 200;

/// One user's second-factor state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserState {
    /// The enrolled authenticator, if any.
    #[serde(default)]
    pub authenticator: Option<Authenticator>,
    /// Hashes of the unused backup codes.
    #[serde(default)]
    pub backup_codes: Option<BackupCodes>,
    /// Failure count and lock.
    #[serde(default)]
    pub lockout: Lockout,
    /// Remote hosts that may skip the code for a while.
    #[serde(default)]
    pub trusted_devices: TrustedDevices,
    /// Logins taken without enrolling, counted against `enroll.grace_logins`.
    #[serde(default)]
    pub grace_logins_used: u32,
}

impl UserState {
    /// Has an authenticator, whether or not it is temporarily disabled.
    pub fn is_enrolled(&self) -> bool {
        self.authenticator.is_some()
    }

    /// Unused backup codes.
    pub fn backup_codes_left(&self) -> usize {
        self.backup_codes.as_ref().map_or(0, BackupCodes::remaining)
    }
}

/// An enrolled TOTP authenticator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authenticator {
    /// The shared secret.
    pub secret: SecretKey,
    /// How the app computes codes.
    pub params: TotpParams,
    /// `false` while temporarily disabled by `twofactor disable`.
    pub enabled: bool,
    /// Unix time of enrollment.
    pub enrolled_at: u64,
    /// The newest step accepted; codes at or before it are replays.
    pub last_step: Option<u64>,
    /// Steps accepted either side of now, when taken over from an imported file;
    /// otherwise `totp.window` from the config applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile<S> {
    version: u32,
    user: String,
    state: S,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Version 1 of [`UserState`], read only to be converted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserStateV1 {
    #[serde(default)]
    authenticator: Option<Authenticator>,
    #[serde(default)]
    backup_codes: Option<BackupCodes>,
    #[serde(default)]
    lockout: Lockout,
    // Parsed so that a damaged entry is still refused, then dropped.
    #[serde(default)]
    #[allow(dead_code)]
    trusted_devices: Vec<TrustedDeviceV1>,
    #[serde(default)]
    grace_logins_used: u32,
}

impl From<UserStateV1> for UserState {
    fn from(v1: UserStateV1) -> Self {
        Self {
            authenticator: v1.authenticator,
            backup_codes: v1.backup_codes,
            lockout: v1.lockout,
            // Trust granted by version 1 named no service and no address type; widening
            // it to every service is worse than asking for one more code.
            trusted_devices: TrustedDevices::default(),
            grace_logins_used: v1.grace_logins_used,
        }
    }
}

/// Why the store refused.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A user name that could escape the directory or is not a name at all.
    #[error("invalid user name {name:?}: {why}")]
    BadUserName { name: String, why: &'static str },
    /// The state directory or a file failed the ownership, mode or symlink checks, or
    /// an I/O operation failed (a full disk among them).
    #[error(transparent)]
    File(#[from] FileError),
    /// The state directory does not exist.
    #[error("state directory {} does not exist; create it (mode 0700, owned by root) or reinstall twofactor", .0.display())]
    MissingDir(PathBuf),
    /// A state file that does not parse; it is left as it is for an admin to look at.
    #[error("state file {} is corrupt ({reason}); it was left untouched: restore it from backup or run `twofactor reset`", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// A state file written by a newer twofactor.
    #[error("state file {} has format version {version}; this twofactor reads versions {OLDEST_STATE_VERSION} to {STATE_VERSION}: upgrade twofactor", .path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },
    /// A state file whose recorded owner is another user (copied or renamed by hand).
    #[error("state file {} belongs to user {found:?}", .path.display())]
    WrongUser { path: PathBuf, found: String },
    /// Another lock holder kept removing the lock file (should never happen).
    #[error("could not take the lock {} (it kept being replaced)", .0.display())]
    LockRace(PathBuf),
}

/// The user a leftover temp file belongs to: `.USER.tmp`, or `.USER.TAG.tmp` with a
/// 16-hex-digit tag as earlier versions named them.
fn temp_owner(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let user = match inner.rsplit_once('.') {
        Some((user, tag)) if tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()) => user,
        _ => inner,
    };
    validate_user_name(user).ok().map(|()| user)
}

/// What [`Store::scan`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Users with a state file, sorted.
    pub users: Vec<String>,
    /// Lock files of users with no state file.
    pub orphan_locks: Vec<String>,
    /// Leftover temp files: (user, file name).
    pub stale_temps: Vec<(String, String)>,
}

/// Why two states could not be merged.
#[derive(Debug, Error)]
pub enum MergeError {
    /// Both hold different authenticators or backup codes: an admin must choose.
    #[error("{0}")]
    Conflict(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The state of an account whose state was also kept under an alias (`ALICE.json` beside
/// `alice.json`). The same authenticator merges (the newer used step wins, so nothing
/// can be replayed); one side with none takes the other's; two different ones are a
/// conflict. The stricter lockout of the two is kept, and trusted hosts of both.
pub fn merge_states(canonical: &UserState, alias: &UserState) -> Result<UserState, MergeError> {
    let mut out = canonical.clone();
    match (&mut out.authenticator, &alias.authenticator) {
        (_, None) => {}
        (None, Some(a)) => out.authenticator = Some(a.clone()),
        (Some(c), Some(a)) if c.secret == a.secret => {
            c.last_step = c.last_step.max(a.last_step);
        }
        (Some(_), Some(_)) => {
            return Err(MergeError::Conflict(
                "both names hold a different authenticator".into(),
            ));
        }
    }
    match (&out.backup_codes, &alias.backup_codes) {
        (_, None) => {}
        (None, Some(b)) => out.backup_codes = Some(b.clone()),
        (Some(c), Some(b)) if c == b => {}
        (Some(_), Some(_)) => {
            return Err(MergeError::Conflict(
                "both names hold different backup codes".into(),
            ));
        }
    }
    let (l, a) = (&mut out.lockout, &alias.lockout);
    l.failures = l.failures.max(a.failures);
    l.locks = l.locks.max(a.locks);
    l.locked_until = l.locked_until.max(a.locked_until);
    out.grace_logins_used = out.grace_logins_used.max(alias.grace_logins_used);
    for d in &alias.trusted_devices.0 {
        if !out.trusted_devices.0.iter().any(|o| o.id == d.id) {
            out.trusted_devices.0.push(d.clone());
        }
    }
    Ok(out)
}

fn fold_alias(canon: &mut Held<'_>, old: &mut Held<'_>) -> Result<(), MergeError> {
    canon.state = merge_states(&canon.state, &old.state)?;
    canon.commit()?;
    old.state = UserState::default();
    old.commit()?;
    Ok(())
}

/// The one temp file name of `user`'s state writes.
fn temp_name(user: &str) -> String {
    format!(".{user}.tmp")
}

/// Checks a user name before it becomes part of a path.
pub fn validate_user_name(name: &str) -> Result<(), StoreError> {
    let bad = |why| {
        Err(StoreError::BadUserName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_USER_LEN {
        return bad("too long");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.chars().any(crate::text::is_unsafe) {
        return bad("contains a control, format or separator character");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("starts with '.' or '-'");
    }
    Ok(())
}

/// Parses the bytes of `user`'s state file (`path` is for messages): format version,
/// owner name and every field are checked; nothing is guessed.
pub fn parse_state(path: &Path, user: &str, bytes: &[u8]) -> Result<UserState, StoreError> {
    let path = path.to_path_buf();
    // serde_json's own messages can quote field values (a secret among them), so the
    // reason keeps only the kind of error and where it is.
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        path: path.clone(),
        reason: format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        )
        .to_lowercase(),
    };
    let header: VersionOnly = serde_json::from_slice(bytes).map_err(corrupt)?;
    let (owner, state) = match header.version {
        STATE_VERSION => {
            let file: StateFile<UserState> = serde_json::from_slice(bytes).map_err(corrupt)?;
            (file.user, file.state)
        }
        1 => {
            let file: StateFile<UserStateV1> = serde_json::from_slice(bytes).map_err(corrupt)?;
            (file.user, file.state.into())
        }
        version => return Err(StoreError::UnsupportedVersion { path, version }),
    };
    if owner != user {
        return Err(StoreError::WrongUser { path, found: owner });
    }
    Ok(state)
}

/// A user's state held under their lock: see [`Store::hold`].
#[derive(Debug)]
pub struct Held<'a> {
    store: &'a Store,
    user: &'a str,
    on_disk: UserState,
    /// The state as the change wants it; written by [`Held::commit`] and at the end.
    pub state: UserState,
}

impl Held<'_> {
    /// Makes the current [`Held::state`] durable now (temp file, fsync, rename, directory
    /// fsync), if it differs from what is on disk. The lock stays held.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if self.state != self.on_disk {
            self.store.write(self.user, &self.state)?;
            self.on_disk = self.state.clone();
        }
        Ok(())
    }
}

/// The per-user state directory.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    owner: u32,
    /// What codes, locks and trust are checked and stamped with.
    clock: Arc<dyn Clock + Send + Sync>,
    /// The cost of the backup-code hashes this store makes.
    hash_cost: HashCost,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens an existing state directory, which must be a real directory owned by root
    /// with mode 0700.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_owned_by(dir, 0)
    }

    /// As [`Store::open`], with files owned by `owner` instead of root (for tests run as
    /// an ordinary user).
    pub fn open_owned_by(dir: &Path, owner: u32) -> Result<Self, StoreError> {
        match fsutil::check_private_dir(dir, owner) {
            Err(FileError::NotFound(_)) => Err(StoreError::MissingDir(dir.to_path_buf())),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(Self {
                dir: dir.to_path_buf(),
                owner,
                clock: Arc::new(SystemClock),
                hash_cost: HashCost::DEFAULT,
            }),
        }
    }

    /// This store with `clock` instead of the system's: tests move time by hand.
    pub fn with_clock(mut self, clock: Arc<dyn Clock + Send + Sync>) -> Self {
        self.clock = clock;
        self
    }

    /// This store, making backup-code hashes at `cost` (tests use a cheap one).
    pub fn with_hash_cost(mut self, cost: HashCost) -> Self {
        self.hash_cost = cost;
        self
    }

    /// The time by this store's clock.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The cost of the backup-code hashes this store makes.
    pub fn hash_cost(&self) -> HashCost {
        self.hash_cost
    }

    /// Creates the directory (mode 0700) if it is missing, then opens it. The parent must
    /// exist: a missing `/var/lib` is a broken system, not something to paper over.
    pub fn create(dir: &Path, owner: u32) -> Result<Self, StoreError> {
        match DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(FileError::io("cannot create directory", dir, e).into()),
        }
        Self::open_owned_by(dir, owner)
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The owner required of state files (root in production).
    pub fn owner(&self) -> u32 {
        self.owner
    }

    fn state_path(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.json"))
    }

    /// The user's state; a user with no file has the default (empty) state.
    pub fn load(&self, user: &str) -> Result<UserState, StoreError> {
        validate_user_name(user)?;
        self.read(user)
    }

    fn read(&self, user: &str) -> Result<UserState, StoreError> {
        let path = self.state_path(user);
        let rules = FileRules {
            owner: self.owner,
            forbidden_mode: 0o077,
            max_len: MAX_STATE_BYTES,
        };
        let bytes = match fsutil::read_checked(&path, rules) {
            Ok(b) => b,
            Err(FileError::NotFound(_)) => return Ok(UserState::default()),
            Err(e) => return Err(e.into()),
        };
        parse_state(&path, user, &bytes)
    }

    fn write(&self, user: &str, state: &UserState) -> Result<(), StoreError> {
        let path = self.state_path(user);
        if *state == UserState::default() {
            return Ok(fsutil::remove_durably(&self.dir, &path)?);
        }
        let file = StateFile {
            version: STATE_VERSION,
            user: user.to_string(),
            state,
        };
        let mut bytes = Zeroizing::new(Vec::with_capacity(1024));
        serde_json::to_writer_pretty(&mut *bytes, &file).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        // One temp name per user: writes happen only under the user's lock, so a file
        // already there is what a killed write left behind, and it is replaced. A user
        // can therefore never leave more than one.
        let temp = self.dir.join(temp_name(user));
        fsutil::remove_durably(&self.dir, &temp)?;
        fsutil::replace_atomically(&self.dir, &path, &temp_name(user), &bytes)?;
        Ok(())
    }

    fn lock_path(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.lock"))
    }

    /// Takes the user's lock. A holder that leaves the state empty removes the lock file,
    /// so after taking the lock this checks that the file is still the one at the path;
    /// otherwise the lock is taken again on the new file.
    fn lock(&self, user: &str) -> Result<File, StoreError> {
        let path = self.lock_path(user);
        for _ in 0..16 {
            let lock = fsutil::open_lock_file(&path, self.owner)?;
            // flock(2): held until `lock` is dropped, and released by the kernel if the
            // process dies.
            lock.lock()
                .map_err(|e| StoreError::from(FileError::io("cannot lock", &path, e)))?;
            let held = lock
                .metadata()
                .map_err(|e| FileError::io("cannot stat", &path, e))?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(lock),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(FileError::io("cannot stat", &path, e).into()),
            }
        }
        Err(StoreError::LockRace(path))
    }

    /// Changes one user's state atomically. The closure runs under the user's lock with
    /// the current state; if it returns `Ok` and changed the state, the new state is
    /// durably written before `update` returns. If it returns `Err`, nothing is written.
    /// A state equal to the default (nothing enrolled, nothing counted) removes the file.
    pub fn update<T, E>(
        &self,
        user: &str,
        change: impl FnOnce(&mut UserState) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        self.hold(user, |held| change(&mut held.state))
    }

    /// Runs `change` under the user's lock with their state. The change may make parts of
    /// its work durable as it goes with [`Held::commit`]; when it returns `Ok`, whatever it
    /// left in [`Held::state`] is committed too. When it returns `Err`, only what it had
    /// already committed stays. The lock file goes when no state is left.
    pub fn hold<T, E>(
        &self,
        user: &str,
        change: impl FnOnce(&mut Held<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        validate_user_name(user)?;
        let lock = self.lock(user)?;
        let state = self.read(user)?;
        let mut held = Held {
            store: self,
            user,
            on_disk: state.clone(),
            state,
        };
        let out = change(&mut held);
        let committed = match out {
            Ok(_) => held.commit(),
            Err(_) => Ok(()),
        };
        if held.on_disk == UserState::default() {
            // Still under the lock; waiters notice the file is gone and lock anew.
            let _ = fsutil::remove_durably(&self.dir, &self.lock_path(user));
        }
        drop(lock);
        committed?;
        out
    }

    /// What the directory holds besides state: temp files a killed write left behind,
    /// and lock files of users with no state (both are removed by [`Store::tidy_user`]).
    pub fn scan(&self) -> Result<Scan, StoreError> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| FileError::io("cannot list", &self.dir, e))?;
        let mut scan = Scan::default();
        let mut locks = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FileError::io("cannot list", &self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(user) = name.strip_suffix(".json") {
                if validate_user_name(user).is_ok() {
                    scan.users.push(user.to_string());
                }
            } else if let Some(user) = name.strip_suffix(".lock") {
                locks.push(user.to_string());
            } else if let Some(user) = temp_owner(name) {
                scan.stale_temps.push((user.to_string(), name.to_string()));
            }
        }
        scan.users.sort();
        scan.orphan_locks = locks
            .into_iter()
            .filter(|u| validate_user_name(u).is_ok() && scan.users.binary_search(u).is_err())
            .collect();
        scan.orphan_locks.sort();
        scan.stale_temps.sort();
        Ok(scan)
    }

    /// Removes `user`'s leftover temp files and, if they have no state, their lock file,
    /// under their lock, so no write in progress is touched.
    pub fn tidy_user(&self, user: &str) -> Result<(), StoreError> {
        self.hold(user, |_| -> Result<(), StoreError> {
            for entry in fs::read_dir(&self.dir)
                .map_err(|e| FileError::io("cannot list", &self.dir, e))?
                .flatten()
            {
                let name = entry.file_name();
                if let Some(name) = name.to_str()
                    && temp_owner(name) == Some(user)
                {
                    fsutil::remove_durably(&self.dir, &self.dir.join(name))?;
                }
            }
            Ok(())
        })
    }

    /// Moves the state kept under `alias` into `canonical` (see [`merge_states`]) and
    /// removes the alias's file. Both users are locked (in name order); the canonical
    /// state is durable before the alias's file goes, so a crash loses nothing.
    pub fn merge_alias(&self, alias: &str, canonical: &str) -> Result<(), MergeError> {
        let (a, b) = if alias < canonical {
            (alias, canonical)
        } else {
            (canonical, alias)
        };
        self.hold(a, |first| {
            self.hold(b, |second| {
                if first.user == canonical {
                    fold_alias(first, second)
                } else {
                    fold_alias(second, first)
                }
            })
        })
    }

    /// Users that have a state file, sorted.
    pub fn users(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.scan()?.users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;
    use crate::testing::me;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = Store::create(&state, me()).unwrap();
        (dir, store)
    }

    fn enrolled() -> UserState {
        UserState {
            authenticator: Some(Authenticator {
                secret: SecretKey::generate(&mut SeededRandom::new(1)).unwrap(),
                params: TotpParams::default(),
                enabled: true,
                enrolled_at: 1_700_000_000,
                last_step: Some(56_666_666),
                window: None,
            }),
            grace_logins_used: 2,
            ..UserState::default()
        }
    }

    #[test]
    fn missing_user_is_default_and_round_trip_is_exact() {
        let (_d, store) = store();
        assert_eq!(store.load("alice").unwrap(), UserState::default());
        store
            .update("alice", |s| -> Result<(), StoreError> {
                *s = enrolled();
                Ok(())
            })
            .unwrap();
        assert_eq!(store.load("alice").unwrap(), enrolled());
        let path = store.dir().join("alice.json");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        assert_eq!(store.users().unwrap(), vec!["alice".to_string()]);
    }

    #[test]
    fn failed_change_writes_nothing_and_default_state_removes_the_file() {
        let (_d, store) = store();
        store
            .update("bob", |s| -> Result<(), StoreError> {
                *s = enrolled();
                Ok(())
            })
            .unwrap();
        let r: Result<(), StoreError> = store.update("bob", |s| {
            s.authenticator = None;
            Err(StoreError::MissingDir("x".into()))
        });
        assert!(r.is_err());
        assert!(
            store.load("bob").unwrap().is_enrolled(),
            "an aborted change is not written"
        );
        store
            .update("bob", |s| -> Result<(), StoreError> {
                *s = UserState::default();
                Ok(())
            })
            .unwrap();
        assert!(!store.dir().join("bob.json").exists());
    }

    #[test]
    fn bad_names_are_refused() {
        let (_d, store) = store();
        for name in [
            "",
            "../x",
            "/",
            "a/b",
            "a\0b",
            ".",
            "..",
            ".hidden",
            "-rf",
            "x\n",
            &"a".repeat(201),
        ] {
            assert!(
                matches!(store.load(name), Err(StoreError::BadUserName { .. })),
                "{name:?}"
            );
            let r: Result<(), StoreError> = store.update(name, |_| Ok(()));
            assert!(matches!(r, Err(StoreError::BadUserName { .. })), "{name:?}");
        }
        for name in ["alice", "user@example.com", "DOMAIN\\bob", "a.b-c_d", "x$"] {
            assert!(validate_user_name(name).is_ok(), "{name:?}");
        }
    }

    fn put(store: &Store, user: &str, body: &[u8], mode: u32) -> PathBuf {
        let path = store.dir().join(format!("{user}.json"));
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn corrupt_or_unsafe_files_are_refused_and_left_alone() {
        let (_d, store) = store();
        let cases: &[(&str, &[u8], u32)] = &[
            ("garbage", b"{ not json", 0o600),
            ("empty", b"", 0o600),
            ("truncated", b"{\"version\":1,\"user\":\"truncated\",\"state\":{\"authenticator\":", 0o600),
            ("future", b"{\"version\":9,\"user\":\"future\",\"state\":{}}", 0o600),
            ("unknownkey", b"{\"version\":1,\"user\":\"unknownkey\",\"state\":{\"bypass\":true}}", 0o600),
            ("other", b"{\"version\":1,\"user\":\"mallory\",\"state\":{}}", 0o600),
            ("badsecret", b"{\"version\":1,\"user\":\"badsecret\",\"state\":{\"authenticator\":{\"secret\":\"!!\",\"params\":{\"algorithm\":\"SHA1\",\"digits\":6,\"period\":30},\"enabled\":true,\"enrolled_at\":0,\"last_step\":null}}}", 0o600),
            ("readable", b"{\"version\":1,\"user\":\"readable\",\"state\":{}}", 0o644),
        ];
        for (user, body, mode) in cases {
            let path = put(&store, user, body, *mode);
            assert!(store.load(user).is_err(), "{user} should be refused");
            let r: Result<(), StoreError> = store.update(user, |s| {
                *s = enrolled();
                Ok(())
            });
            assert!(r.is_err(), "{user}: update must not replace a bad file");
            assert_eq!(fs::read(&path).unwrap(), *body, "{user} was changed");
        }
        let big = vec![b' '; MAX_STATE_BYTES as usize + 1];
        put(&store, "big", &big, 0o600);
        assert!(matches!(
            store.load("big"),
            Err(StoreError::File(FileError::TooLarge { .. }))
        ));
    }

    #[test]
    fn symlinked_state_and_lock_files_are_refused() {
        let (d, store) = store();
        let target = d.path().join("elsewhere");
        fs::write(&target, b"{}").unwrap();
        symlink(&target, store.dir().join("eve.json")).unwrap();
        assert!(matches!(
            store.load("eve"),
            Err(StoreError::File(FileError::Symlink(_)))
        ));
        symlink(&target, store.dir().join("mal.lock")).unwrap();
        let r: Result<(), StoreError> = store.update("mal", |_| Ok(()));
        assert!(matches!(r, Err(StoreError::File(FileError::Symlink(_)))));
        assert_eq!(fs::read(&target).unwrap(), b"{}");
    }

    #[test]
    fn directory_must_exist_be_private_and_not_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            Store::open_owned_by(&d.path().join("none"), me()),
            Err(StoreError::MissingDir(_))
        ));
        let open = d.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Store::open_owned_by(&open, me()).is_err());
        let link = d.path().join("link");
        let private = d.path().join("private");
        Store::create(&private, me()).unwrap();
        symlink(&private, &link).unwrap();
        assert!(matches!(
            Store::open_owned_by(&link, me()),
            Err(StoreError::File(FileError::Symlink(_)))
        ));
        assert!(
            Store::open_owned_by(&private, me() + 1).is_err(),
            "owner is checked"
        );
    }

    #[test]
    fn a_crash_before_rename_leaves_the_old_state_readable() {
        let (_d, store) = store();
        store
            .update("dora", |s| -> Result<(), StoreError> {
                *s = enrolled();
                Ok(())
            })
            .unwrap();
        // What a crash between write and rename leaves behind: a stray, half-written temp.
        let stray = store.dir().join(".dora.0123456789abcdef.tmp");
        fs::write(&stray, b"{\"version\":1,\"us").unwrap();
        assert_eq!(store.load("dora").unwrap(), enrolled());
        assert_eq!(
            store.users().unwrap(),
            ["dora"],
            "temp and lock files are not users"
        );
        store
            .update("dora", |s| -> Result<(), StoreError> {
                s.grace_logins_used = 7;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.load("dora").unwrap().grace_logins_used, 7);
    }

    #[test]
    fn version_1_is_read_and_its_trusted_hosts_are_dropped() {
        let (_d, store) = store();
        let v1 = br#"{"version":1,"user":"vera","state":{"lockout":{"failures":2,"locked_until":null,"locks":0},"trusted_devices":[{"id":"a1b2c3d4e5f6","host":"10.0.0.5","created":1,"expires":99999999999}],"grace_logins_used":1}}"#;
        put(&store, "vera", v1, 0o600);
        let state = store.load("vera").unwrap();
        assert_eq!(state.lockout.failures, 2);
        assert_eq!(state.grace_logins_used, 1);
        assert!(
            state.trusted_devices.0.is_empty(),
            "old trust is not widened"
        );
        // A damaged version 1 entry is still refused, not silently dropped.
        let bad = br#"{"version":1,"user":"vera","state":{"trusted_devices":[{"id":"x","host":"h","created":1}]}}"#;
        put(&store, "vera", bad, 0o600);
        assert!(matches!(
            store.load("vera"),
            Err(StoreError::Corrupt { .. })
        ));
        // The next write is version 2.
        put(&store, "vera", v1, 0o600);
        store
            .update("vera", |s| -> Result<(), StoreError> {
                s.grace_logins_used = 2;
                Ok(())
            })
            .unwrap();
        let text = fs::read_to_string(store.dir().join("vera.json")).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
    }

    #[test]
    fn a_left_over_temp_file_is_replaced_and_empty_state_leaves_no_lock() {
        let (_d, store) = store();
        let temp = store.dir().join(".tess.tmp");
        fs::write(&temp, b"{\"half").unwrap();
        store
            .update("tess", |s| -> Result<(), StoreError> {
                *s = enrolled();
                Ok(())
            })
            .unwrap();
        assert!(!temp.exists(), "the stale temp file is gone");
        assert_eq!(store.load("tess").unwrap(), enrolled());
        assert!(store.dir().join("tess.lock").exists());
        store
            .update("tess", |s| -> Result<(), StoreError> {
                *s = UserState::default();
                Ok(())
            })
            .unwrap();
        // A change that leaves nothing, or a refused one for a user with no state,
        // leaves no file behind at all.
        let r: Result<(), StoreError> =
            store.update("ghost", |_| Err(StoreError::MissingDir("x".into())));
        assert!(r.is_err());
        let left: Vec<_> = fs::read_dir(store.dir()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn commit_makes_a_step_durable_and_an_error_keeps_it() {
        let (_d, store) = store();
        let r: Result<(), StoreError> = store.hold("cora", |held| {
            held.state.grace_logins_used = 1;
            held.commit()?;
            held.state.grace_logins_used = 2;
            Err(StoreError::MissingDir("stop".into()))
        });
        assert!(r.is_err());
        assert_eq!(store.load("cora").unwrap().grace_logins_used, 1);
    }

    #[test]
    fn scan_and_tidy_remove_leftovers_only() {
        let (_d, store) = store();
        store
            .update("ann", |s| -> Result<(), StoreError> {
                *s = enrolled();
                Ok(())
            })
            .unwrap();
        for name in [
            ".ann.tmp",
            ".ann.0123456789abcdef.tmp",
            ".a.b.tmp",
            ".not-a-temp",
        ] {
            fs::write(store.dir().join(name), b"x").unwrap();
        }
        // A lock file as a login leaves it: empty and private.
        put(&store, "gone", b"", 0o600);
        fs::rename(store.dir().join("gone.json"), store.dir().join("gone.lock")).unwrap();
        let scan = store.scan().unwrap();
        assert_eq!(scan.users, ["ann"]);
        assert_eq!(scan.orphan_locks, ["gone"]);
        assert_eq!(
            scan.stale_temps,
            [
                ("a.b".to_string(), ".a.b.tmp".to_string()),
                ("ann".to_string(), ".ann.0123456789abcdef.tmp".to_string()),
                ("ann".to_string(), ".ann.tmp".to_string()),
            ]
        );
        for user in ["ann", "a.b", "gone"] {
            store.tidy_user(user).unwrap();
        }
        let scan = store.scan().unwrap();
        assert_eq!(
            scan,
            Scan {
                users: vec!["ann".into()],
                ..Scan::default()
            }
        );
        assert_eq!(store.load("ann").unwrap(), enrolled());
        assert!(
            store.dir().join(".not-a-temp").exists(),
            "only known leftovers go"
        );
    }

    #[test]
    fn an_alias_merges_into_the_canonical_name() {
        let (_d, store) = store();
        let put_state = |user: &str, state: UserState| {
            store
                .update(user, |s| -> Result<(), StoreError> {
                    *s = state;
                    Ok(())
                })
                .unwrap();
        };
        // Only failures under the alias: they count for the account.
        put_state("alice", enrolled());
        let mut counted = UserState::default();
        counted.lockout.failures = 3;
        counted.lockout.locked_until = Some(99);
        put_state("ALICE", counted);
        store.merge_alias("ALICE", "alice").unwrap();
        let merged = store.load("alice").unwrap();
        assert_eq!(
            (merged.lockout.failures, merged.lockout.locked_until),
            (3, Some(99))
        );
        assert_eq!(merged.authenticator, enrolled().authenticator);
        assert!(!store.dir().join("ALICE.json").exists());
        assert!(!store.dir().join("ALICE.lock").exists());
        // Enrolled only under the alias: moved, with its user rewritten.
        put_state("Bob@corp", enrolled());
        store.merge_alias("Bob@corp", "bob").unwrap();
        assert_eq!(store.load("bob").unwrap(), enrolled());
        let text = fs::read_to_string(store.dir().join("bob.json")).unwrap();
        assert!(text.contains("\"user\": \"bob\""), "{text}");
        // Two different authenticators: refused, both left as they were.
        let mut other = enrolled();
        other.authenticator.as_mut().unwrap().secret =
            SecretKey::generate(&mut SeededRandom::new(99)).unwrap();
        put_state("BOB", other.clone());
        assert!(matches!(
            store.merge_alias("BOB", "bob"),
            Err(MergeError::Conflict(_))
        ));
        assert_eq!(store.load("BOB").unwrap(), other);
        assert_eq!(store.load("bob").unwrap(), enrolled());
    }
}
