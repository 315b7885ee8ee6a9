//! The version-1 TOML config: read safely, parsed strictly, validated into what the code uses.
//!
//! Parsing goes through raw structs with `deny_unknown_fields` and spans, then validation
//! turns them into a [`Config`]. Every error names the file, line, column and key, in the
//! `FILE:LINE:COL: message` form that editors jump to.

use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::fsutil::{self, FileError, FileRules};
use crate::net::Cidr;
use crate::policy::Policy;
use crate::qr::QrStyle;
use crate::totp::{Algorithm, TotpParams};

/// Config files larger than this are refused; the shipped one is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    /// `[enforce]`: who must use a second factor.
    pub policy: Policy,
    /// `[enroll]`.
    pub enroll: EnrollSettings,
    /// `[totp]`.
    pub totp: TotpSettings,
    /// `[backup_codes]`.
    pub backup_codes: BackupCodeSettings,
    /// `[lockout]`.
    pub lockout: LockoutSettings,
    /// `[trusted_devices]`.
    pub trusted_devices: TrustSettings,
    /// `[storage]`.
    pub storage: StorageSettings,
    /// `[ssh_factor]`: ssh logins whose certificate already was a second factor.
    pub ssh_factor: SshFactorSettings,
    /// `[after_login]`: services a code typed at login covers in that session.
    pub after_login: AfterLoginSettings,
}

/// `[after_login]`: a code typed at login also covers these services (sudo) in that
/// login's session for `minutes`. Off while `services` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterLoginSettings {
    /// The services covered (`sudo`, `sudo-i`).
    pub services: Vec<String>,
    /// The services whose verified codes are handed to the session they open: only
    /// those that start login sessions (`sshd`, `login`), never su, sudo or a VPN, whose
    /// PAM environment reaches a command or nothing opens a session.
    pub from: Vec<String>,
    /// How long after the code.
    pub minutes: u32,
}

/// `[ssh_factor]`: an ssh login that used a certificate from one of these CAs (issued,
/// say, by an SSO after its own MFA) counts as the second factor. Off while `cert_cas`
/// is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshFactorSettings {
    /// The PAM services whose `SSH_AUTH_INFO_0` is sshd's own.
    pub services: Vec<String>,
    /// SHA-256 fingerprints (`SHA256:...`) of the trusted CA keys.
    pub cert_cas: Vec<String>,
    /// An extension the certificate must carry; `None`: any certificate of those CAs.
    pub cert_extension: Option<String>,
}

impl SshFactorSettings {
    /// Whether the policy is on at all.
    pub fn enabled(&self) -> bool {
        !self.cert_cas.is_empty()
    }
}

/// `[enroll]`: how users without an authenticator get one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollSettings {
    /// A required user with no authenticator enrolls at the next login.
    pub at_login: bool,
    /// Name shown in the authenticator app; `None` means the host name.
    pub issuer: Option<String>,
    /// Logins a required, unenrolled user may still skip enrollment.
    pub grace_logins: u32,
    /// When not empty, enrollment at login happens only from remote addresses inside
    /// these networks.
    pub at_login_networks: Vec<Cidr>,
    /// How the QR code is drawn at login.
    pub qr: QrStyle,
}

impl EnrollSettings {
    /// Whether a login from `rhost` (PAM_RHOST, if any) may enroll an authenticator.
    pub fn at_login_allowed_from(&self, rhost: Option<&str>) -> bool {
        if !self.at_login {
            return false;
        }
        if self.at_login_networks.is_empty() {
            return true;
        }
        rhost.is_some_and(|h| self.at_login_networks.iter().any(|n| n.contains_host(h)))
    }
}

/// `[totp]`: parameters for new authenticators and the accepted clock drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpSettings {
    /// Algorithm, digits and period given to new authenticators.
    pub params: TotpParams,
    /// Steps accepted before and after the current one.
    pub window: u8,
}

/// `[backup_codes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupCodeSettings {
    /// How many codes each generation makes.
    pub count: usize,
}

/// `[lockout]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutSettings {
    /// Consecutive wrong codes before a lock.
    pub max_failures: u32,
    /// Length of the first lock; each further one doubles, up to a day.
    pub lock_seconds: u64,
}

/// `[trusted_devices]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustSettings {
    /// Whether a remote host may be trusted after a successful code.
    pub enabled: bool,
    /// How long a trust lasts.
    pub days: u32,
    /// Whether a host name (not an IP address) in PAM_RHOST may be trusted.
    pub allow_host_names: bool,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSettings {
    /// Where user state lives.
    pub backend: BackendKind,
    /// Directory holding one state file per user (the files backend).
    pub state_dir: PathBuf,
    /// `[storage.postgresql]`: the fleet database (the postgresql backend).
    pub postgresql: Option<PostgresqlSettings>,
}

/// `[storage.postgresql]`: how a host reaches the fleet database. TLS is always on and
/// verified; the client certificate names the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresqlSettings {
    /// Servers as `host:port`, tried in order; the first writable one is used.
    pub hosts: Vec<(String, u16)>,
    /// The database.
    pub dbname: String,
    /// The CA certificate the server's certificate must chain to.
    pub ca: PathBuf,
    /// This host's client certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// How long to wait for each server.
    pub connect_timeout_ms: u64,
    /// How long one call may take, commit included, measured on the client.
    pub statement_timeout_ms: u64,
}

/// `storage.backend`: which implementation of [`crate::backend::Backend`] holds user state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// One root-owned file per user under `state_dir`.
    #[default]
    Files,
    /// One database for a fleet, verifying codes itself (`[storage.postgresql]`).
    Postgresql,
}

impl Default for Config {
    /// The defaults of the version-1 format, as in the shipped `config.toml`.
    fn default() -> Self {
        Self {
            path: PathBuf::from(crate::DEFAULT_CONFIG_PATH),
            policy: Policy::default(),
            enroll: EnrollSettings {
                at_login: true,
                issuer: None,
                grace_logins: 0,
                at_login_networks: Vec::new(),
                qr: QrStyle::Unicode,
            },
            totp: TotpSettings {
                params: TotpParams::default(),
                window: 1,
            },
            backup_codes: BackupCodeSettings { count: 10 },
            lockout: LockoutSettings {
                max_failures: 5,
                lock_seconds: 300,
            },
            trusted_devices: TrustSettings {
                enabled: false,
                days: 30,
                allow_host_names: false,
            },
            storage: StorageSettings {
                backend: BackendKind::Files,
                state_dir: PathBuf::from("/var/lib/twofactor"),
                postgresql: None,
            },
            ssh_factor: SshFactorSettings {
                services: vec!["sshd".to_string()],
                cert_cas: Vec::new(),
                cert_extension: None,
            },
            after_login: AfterLoginSettings {
                services: Vec::new(),
                from: vec!["sshd".to_string(), "login".to_string()],
                minutes: 15,
            },
        }
    }
}

/// Why a config was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read safely (missing, symlink, wrong owner or mode, too big).
    #[error("{0}")]
    File(#[from] FileError),
    /// The file is not UTF-8.
    #[error("{}: not valid UTF-8", .0.display())]
    NotUtf8(PathBuf),
    /// A syntax error, unknown key or invalid value, located in the file.
    #[error("{}", .0)]
    Invalid(Located),
}

/// An error at a place in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted key, such as `totp.digits`, or the table name for a table-level error.
    pub key: String,
    /// What is wrong, and what is allowed.
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl Config {
    /// Reads and validates the config at `path`, which must be a regular file owned by
    /// `owner` (root in production), not group- or world-writable, and not a symlink.
    pub fn load(path: &Path, owner: u32) -> Result<Self, ConfigError> {
        Self::parse(path, &Self::read_text(path, owner)?)
    }

    /// The text of the config at `path`, read with the checks of [`Config::load`].
    pub fn read_text(path: &Path, owner: u32) -> Result<String, ConfigError> {
        let rules = FileRules {
            owner,
            forbidden_mode: 0o022,
            max_len: MAX_CONFIG_BYTES,
        };
        let bytes = fsutil::read_checked(path, rules)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ConfigError::NotUtf8(path.into()))
    }

    /// Installs `text` as the config at `path`: mode 0644, atomically (a temp file beside
    /// it, fsync, rename, directory fsync), so logins read the old file or the new one.
    pub fn install(path: &Path, text: &str) -> Result<(), FileError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| FileError::NotAbsolute(path.to_path_buf()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = format!(".{name}.new");
        fsutil::remove_durably(dir, &dir.join(&temp))?;
        fsutil::replace_atomically_with_mode(dir, path, &temp, text.as_bytes(), 0o644)
    }

    /// Parses and validates config text; `path` is used only in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ConfigError::Invalid(Source { path, text }.toml_error(e.message(), span))
        })?;
        raw.validate(Source { path, text })
            .map_err(ConfigError::Invalid)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: Option<Spanned<i64>>,
    #[serde(default)]
    enforce: RawEnforce,
    #[serde(default)]
    enroll: RawEnroll,
    #[serde(default)]
    totp: RawTotp,
    #[serde(default)]
    backup_codes: RawBackupCodes,
    #[serde(default)]
    lockout: RawLockout,
    #[serde(default)]
    trusted_devices: RawTrust,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    ssh_factor: RawSshFactor,
    #[serde(default)]
    after_login: RawAfterLogin,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAfterLogin {
    services: Names,
    from: Names,
    minutes: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSshFactor {
    services: Names,
    cert_cas: Names,
    cert_extension: Option<Spanned<String>>,
}

type Names = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnforce {
    all_users: Option<bool>,
    groups: Names,
    users: Names,
    exempt_users: Names,
    exempt_groups: Names,
    services: Names,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnroll {
    at_login: Option<bool>,
    issuer: Option<Spanned<String>>,
    grace_logins: Option<Spanned<i64>>,
    at_login_networks: Option<Vec<Spanned<String>>>,
    qr: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTotp {
    digits: Option<Spanned<i64>>,
    period: Option<Spanned<i64>>,
    algorithm: Option<Spanned<String>>,
    window: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackupCodes {
    count: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLockout {
    max_failures: Option<Spanned<i64>>,
    lock_seconds: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    enabled: Option<bool>,
    days: Option<Spanned<i64>>,
    allow_host_names: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    backend: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    postgresql: Option<Spanned<RawPostgresql>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgresql {
    hosts: Option<Vec<Spanned<String>>>,
    dbname: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    connect_timeout_ms: Option<Spanned<i64>>,
    statement_timeout_ms: Option<Spanned<i64>>,
}

/// The text being validated, for turning byte offsets into lines and columns.
#[derive(Clone, Copy)]
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, span: Range<usize>, key: &str, message: String) -> Located {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Located {
            path: self.path.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message,
        }
    }

    /// The `[table]` header in force at `offset`, if any.
    fn table_at(&self, offset: usize) -> Option<&str> {
        let before = &self.text[..offset.min(self.text.len())];
        before.lines().rev().map(str::trim).find_map(|line| {
            let inner = line.strip_prefix('[')?;
            let end = inner.find(']')?;
            Some(inner[..end].trim())
        })
    }

    /// Rewords toml's messages so they name the key and its table.
    fn toml_error(&self, message: &str, span: Range<usize>) -> Located {
        let table = self.table_at(span.start);
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_text = self.text[line_start..].lines().next().unwrap_or("");
        let key_on_line = line_text
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"'));
        let dotted = |k: &str| match table {
            Some(t) => format!("{t}.{k}"),
            None => k.to_string(),
        };
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            if line_text.trim_start().starts_with('[') {
                return self.at(span, name, format!("unknown table [{name}]"));
            }
            let wording = match table {
                Some(t) => format!("unknown key \"{name}\" in [{t}]"),
                None => format!("unknown key \"{name}\" at the top level"),
            };
            return self.at(span, &dotted(name), wording);
        }
        let message = message.trim_end();
        match key_on_line {
            Some(k) if !k.is_empty() => {
                let key = dotted(k);
                self.at(span, &key, format!("{key}: {message}"))
            }
            _ => self.at(span, table.unwrap_or(""), message.to_string()),
        }
    }
}

/// Validates one integer setting against an inclusive range.
fn int_in<T: TryFrom<i64>>(
    src: Source<'_>,
    value: &Option<Spanned<i64>>,
    key: &str,
    range: RangeInclusive<i64>,
    default: T,
) -> Result<T, Located> {
    let Some(v) = value else { return Ok(default) };
    let n = *v.get_ref();
    let (lo, hi) = (*range.start(), *range.end());
    if n < lo || n > hi {
        return Err(src.at(
            v.span(),
            key,
            format!("{key} must be between {lo} and {hi}, got {n}"),
        ));
    }
    T::try_from(n).map_err(|_| src.at(v.span(), key, format!("{key}: {n} is out of range")))
}

/// Checks a user or group name from the config: NSS names (including LDAP/SSSD ones
/// such as `user@domain`) but nothing that could be a path or an empty match.
/// `after_login.from`: the login services that hand codes on (default sshd and login),
/// none of them covered itself.
fn after_login_from(src: Source<'_>, raw: &RawAfterLogin) -> Result<Vec<String>, Located> {
    let Some(list) = &raw.from else {
        return Ok(Config::default().after_login.from);
    };
    let from = names(src, &raw.from, "after_login.from")?;
    let covered = names(src, &raw.services, "after_login.services")?;
    if let Some(both) = list
        .get_ref()
        .iter()
        .find(|n| covered.contains(n.get_ref()))
    {
        return Err(src.at(
            both.span(),
            "after_login.from",
            format!(
                "after_login.from: {:?} is also in after_login.services: a service either starts logins or runs inside one",
                both.get_ref()
            ),
        ));
    }
    Ok(from)
}

fn names(src: Source<'_>, value: &Names, key: &str) -> Result<Vec<String>, Located> {
    let Some(list) = value else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in list.get_ref() {
        let s = name.get_ref();
        if s.is_empty()
            || s.trim() != s
            || s.chars().any(|c| c.is_control() || c == ':' || c == '/')
        {
            return Err(src.at(
                name.span(),
                key,
                format!("{key}: {s:?} is not a valid user or group name"),
            ));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

impl Raw {
    fn validate(self, src: Source<'_>) -> Result<Config, Located> {
        let defaults = Config::default();
        match &self.version {
            None => {
                return Err(src.at(0..0, "version", "missing \"version = 1\" at the top".into()));
            }
            Some(v) if *v.get_ref() != 1 => {
                return Err(src.at(
                    v.span(),
                    "version",
                    format!(
                        "unsupported config version {}; this twofactor reads version 1",
                        v.get_ref()
                    ),
                ));
            }
            Some(_) => {}
        }

        let policy = Policy {
            all_users: self.enforce.all_users.unwrap_or(false),
            groups: names(src, &self.enforce.groups, "enforce.groups")?,
            users: names(src, &self.enforce.users, "enforce.users")?,
            exempt_users: names(src, &self.enforce.exempt_users, "enforce.exempt_users")?,
            exempt_groups: names(src, &self.enforce.exempt_groups, "enforce.exempt_groups")?,
            services: names(src, &self.enforce.services, "enforce.services")?,
            broken_file: None,
        };

        let issuer = match &self.enroll.issuer {
            None => None,
            Some(s) if s.get_ref().is_empty() => None,
            Some(s) => {
                let v = s.get_ref();
                if v.contains(':') || v.chars().any(char::is_control) || v.chars().count() > 64 {
                    return Err(src.at(
                        s.span(),
                        "enroll.issuer",
                        "enroll.issuer must be at most 64 characters with no ':' or control characters".into(),
                    ));
                }
                Some(v.clone())
            }
        };
        let enroll = EnrollSettings {
            at_login: self.enroll.at_login.unwrap_or(defaults.enroll.at_login),
            issuer,
            grace_logins: int_in(
                src,
                &self.enroll.grace_logins,
                "enroll.grace_logins",
                0..=1000,
                0,
            )?,
            at_login_networks: self
                .enroll
                .at_login_networks
                .iter()
                .flatten()
                .map(|n| {
                    n.get_ref().parse().map_err(|e: crate::net::CidrError| {
                        src.at(
                            n.span(),
                            "enroll.at_login_networks",
                            format!("enroll.at_login_networks: {e}"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            qr: match &self.enroll.qr {
                None => QrStyle::Unicode,
                Some(q) => match q.get_ref().as_str() {
                    "unicode" => QrStyle::Unicode,
                    "ascii" => QrStyle::Ascii,
                    "none" => QrStyle::None,
                    other => {
                        return Err(src.at(
                            q.span(),
                            "enroll.qr",
                            format!("enroll.qr must be \"unicode\", \"ascii\" or \"none\", got {other:?}"),
                        ));
                    }
                },
            },
        };

        let digits = int_in(src, &self.totp.digits, "totp.digits", 6..=8, 6u8)?;
        if digits == 7 {
            let span = self.totp.digits.as_ref().map_or(0..0, Spanned::span);
            return Err(src.at(
                span,
                "totp.digits",
                "totp.digits must be 6 or 8, got 7".into(),
            ));
        }
        let algorithm = match &self.totp.algorithm {
            None => Algorithm::Sha1,
            Some(a) => a.get_ref().parse().map_err(|_| {
                src.at(
                    a.span(),
                    "totp.algorithm",
                    format!(
                        "totp.algorithm must be \"SHA1\", \"SHA256\" or \"SHA512\", got {:?}",
                        a.get_ref()
                    ),
                )
            })?,
        };
        let totp = TotpSettings {
            params: TotpParams {
                algorithm,
                digits,
                period: int_in(src, &self.totp.period, "totp.period", 15..=300, 30)?,
            },
            window: int_in(src, &self.totp.window, "totp.window", 0..=10, 1)?,
        };

        let backend = match &self.storage.backend {
            None => BackendKind::Files,
            Some(s) => match s.get_ref().as_str() {
                "files" => BackendKind::Files,
                "postgresql" => BackendKind::Postgresql,
                other => {
                    return Err(src.at(
                        s.span(),
                        "storage.backend",
                        format!(
                            "storage.backend must be \"files\" or \"postgresql\", not {other:?}"
                        ),
                    ));
                }
            },
        };
        let state_dir = match &self.storage.state_dir {
            None => defaults.storage.state_dir,
            Some(s) => {
                let p = PathBuf::from(s.get_ref());
                let bad = !p.is_absolute()
                    || p == Path::new("/")
                    || p.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir));
                if bad {
                    return Err(src.at(
                        s.span(),
                        "storage.state_dir",
                        "storage.state_dir must be an absolute path other than / with no \"..\""
                            .into(),
                    ));
                }
                p
            }
        };

        Ok(Config {
            path: src.path.to_path_buf(),
            policy,
            enroll,
            totp,
            backup_codes: BackupCodeSettings {
                count: int_in(
                    src,
                    &self.backup_codes.count,
                    "backup_codes.count",
                    0..=100,
                    10,
                )?,
            },
            lockout: LockoutSettings {
                max_failures: int_in(
                    src,
                    &self.lockout.max_failures,
                    "lockout.max_failures",
                    1..=1000,
                    5,
                )?,
                lock_seconds: int_in(
                    src,
                    &self.lockout.lock_seconds,
                    "lockout.lock_seconds",
                    1..=86_400,
                    300,
                )?,
            },
            trusted_devices: TrustSettings {
                enabled: self.trusted_devices.enabled.unwrap_or(false),
                days: int_in(
                    src,
                    &self.trusted_devices.days,
                    "trusted_devices.days",
                    1..=365,
                    30,
                )?,
                allow_host_names: self.trusted_devices.allow_host_names.unwrap_or(false),
            },
            storage: StorageSettings {
                backend,
                state_dir,
                postgresql: self.postgresql_settings(src, backend)?,
            },
            ssh_factor: self.ssh_factor_settings(src)?,
            after_login: AfterLoginSettings {
                services: names(src, &self.after_login.services, "after_login.services")?,
                from: after_login_from(src, &self.after_login)?,
                minutes: int_in(
                    src,
                    &self.after_login.minutes,
                    "after_login.minutes",
                    1..=1440,
                    15,
                )?,
            },
        })
    }
}

/// An ssh key fingerprint as `ssh-keygen -lf` prints it: `SHA256:` and 43 characters of
/// unpadded base64 (32 bytes).
pub fn is_sha256_fingerprint(s: &str) -> bool {
    s.strip_prefix("SHA256:").is_some_and(|b64| {
        b64.len() == 43
            && b64
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    })
}

impl Raw {
    /// `[ssh_factor]`.
    fn ssh_factor_settings(&self, src: Source<'_>) -> Result<SshFactorSettings, Located> {
        let raw = &self.ssh_factor;
        let services = match &raw.services {
            None => vec!["sshd".to_string()],
            Some(_) => names(src, &raw.services, "ssh_factor.services")?,
        };
        let mut cert_cas = Vec::new();
        for fp in raw.cert_cas.iter().flat_map(|l| l.get_ref()) {
            if !is_sha256_fingerprint(fp.get_ref()) {
                return Err(src.at(
                    fp.span(),
                    "ssh_factor.cert_cas",
                    format!(
                        "ssh_factor.cert_cas: {:?} is not a key fingerprint; give the CA key's SHA256:... fingerprint, as ssh-keygen -lf CA.pub prints it",
                        fp.get_ref()
                    ),
                ));
            }
            if !cert_cas.contains(fp.get_ref()) {
                cert_cas.push(fp.get_ref().clone());
            }
        }
        let cert_extension = match &raw.cert_extension {
            None => None,
            Some(e) if e.get_ref().is_empty() => None,
            Some(e) => {
                let v = e.get_ref();
                if v.len() > 256 || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(src.at(
                        e.span(),
                        "ssh_factor.cert_extension",
                        "ssh_factor.cert_extension must be one extension name, such as mfa@sso.example.com".into(),
                    ));
                }
                Some(v.clone())
            }
        };
        if !cert_cas.is_empty() && services.is_empty() {
            let at = raw.services.as_ref().map_or(0..0, Spanned::span);
            return Err(src.at(
                at,
                "ssh_factor.services",
                "ssh_factor.services is empty while cert_cas is set: list the sshd services whose SSH_AUTH_INFO_0 may be trusted".into(),
            ));
        }
        Ok(SshFactorSettings {
            services,
            cert_cas,
            cert_extension,
        })
    }
}

impl Raw {
    /// `[storage.postgresql]`, required with `backend = "postgresql"`.
    fn postgresql_settings(
        &self,
        src: Source<'_>,
        backend: BackendKind,
    ) -> Result<Option<PostgresqlSettings>, Located> {
        let Some(raw) = &self.storage.postgresql else {
            if backend == BackendKind::Postgresql {
                let at = self.storage.backend.as_ref().map_or(0..0, Spanned::span);
                return Err(src.at(
                    at,
                    "storage.postgresql",
                    "storage.backend = \"postgresql\" needs a [storage.postgresql] table \
                     (hosts, dbname, ca, cert, key)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let table = raw.span();
        let raw = raw.get_ref();
        let missing = |key: &str| {
            src.at(
                table.clone(),
                &format!("storage.postgresql.{key}"),
                format!("[storage.postgresql] needs {key}"),
            )
        };
        let mut hosts = Vec::new();
        for h in raw.hosts.as_deref().unwrap_or_default() {
            let parsed = h.get_ref().rsplit_once(':').and_then(|(host, port)| {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
                (!host.is_empty() && !host.contains(char::is_whitespace))
                    .then(|| (host.to_string(), port))
            });
            hosts.push(parsed.ok_or_else(|| {
                src.at(
                    h.span(),
                    "storage.postgresql.hosts",
                    format!(
                        "storage.postgresql.hosts entries are \"host:port\", got {:?}",
                        h.get_ref()
                    ),
                )
            })?);
        }
        if hosts.is_empty() {
            return Err(missing("hosts"));
        }
        let dbname = raw.dbname.as_ref().ok_or_else(|| missing("dbname"))?;
        if dbname.get_ref().is_empty() {
            return Err(src.at(
                dbname.span(),
                "storage.postgresql.dbname",
                "storage.postgresql.dbname is empty".into(),
            ));
        }
        let path = |key: &str, value: &Option<Spanned<String>>| -> Result<PathBuf, Located> {
            let v = value.as_ref().ok_or_else(|| missing(key))?;
            let p = PathBuf::from(v.get_ref());
            if !p.is_absolute() {
                return Err(src.at(
                    v.span(),
                    &format!("storage.postgresql.{key}"),
                    format!("storage.postgresql.{key} must be an absolute path"),
                ));
            }
            Ok(p)
        };
        let statement_timeout_ms = int_in(
            src,
            &raw.statement_timeout_ms,
            "storage.postgresql.statement_timeout_ms",
            1..=600_000,
            2000,
        )?;
        Ok(Some(PostgresqlSettings {
            hosts,
            dbname: dbname.get_ref().clone(),
            ca: path("ca", &raw.ca)?,
            cert: path("cert", &raw.cert)?,
            key: path("key", &raw.key)?,
            connect_timeout_ms: int_in(
                src,
                &raw.connect_timeout_ms,
                "storage.postgresql.connect_timeout_ms",
                1..=60_000,
                2000,
            )?,
            statement_timeout_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::me;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/twofactor/config.toml"), text)
    }

    fn located(text: &str) -> Located {
        match parse(text) {
            Err(ConfigError::Invalid(l)) => l,
            other => panic!("expected a located error for {text:?}, got {other:?}"),
        }
    }

    fn repo_file(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
    }

    #[test]
    fn after_login_is_off_by_default_and_bounded() {
        let c = parse("version = 1\n").unwrap();
        assert!(c.after_login.services.is_empty());
        assert_eq!(c.after_login.minutes, 15);
        let c =
            parse("version = 1\n[after_login]\nservices = [\"sudo\", \"sudo-i\"]\nminutes = 5\n")
                .unwrap();
        assert_eq!(c.after_login.services, ["sudo", "sudo-i"]);
        assert_eq!(c.after_login.minutes, 5);
        assert_eq!(c.after_login.from, ["sshd", "login"]);
        let c = parse("version = 1\n[after_login]\nservices = [\"sudo\"]\nfrom = [\"sshd\"]\n")
            .unwrap();
        assert_eq!(c.after_login.from, ["sshd"]);
        let e = located(
            "version = 1\n[after_login]\nservices = [\"sudo\"]\nfrom = [\"sshd\",\n  \"sudo\"]\n",
        );
        assert_eq!((e.key.as_str(), e.line), ("after_login.from", 5));
        let e = located("version = 1\n[after_login]\nminutes = 0\n");
        assert_eq!((e.key.as_str(), e.line), ("after_login.minutes", 3));
        let e = located("version = 1\n[after_login]\nservice = [\"sudo\"]\n");
        assert!(
            e.message
                .contains("unknown key \"service\" in [after_login]"),
            "{e}"
        );
    }

    #[test]
    fn ssh_factor_takes_fingerprints_and_refuses_anything_else() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        let c = parse(&format!(
            "version = 1\n[ssh_factor]\ncert_cas = [\"{fp}\", \"{fp}\"]\ncert_extension = \"mfa@sso.example.com\"\n"
        ))
        .unwrap();
        assert!(c.ssh_factor.enabled());
        assert_eq!(c.ssh_factor.cert_cas, [fp]);
        assert_eq!(c.ssh_factor.services, ["sshd"]);
        assert_eq!(
            c.ssh_factor.cert_extension.as_deref(),
            Some("mfa@sso.example.com")
        );
        assert!(!parse("version = 1\n").unwrap().ssh_factor.enabled());

        let e = located("version = 1\n[ssh_factor]\ncert_cas = [\"MD5:aa:bb\"]\n");
        assert_eq!((e.key.as_str(), e.line), ("ssh_factor.cert_cas", 3));
        assert!(e.message.contains("ssh-keygen -lf"), "{e}");
        let e = located(&format!(
            "version = 1\n[ssh_factor]\nservices = []\ncert_cas = [\"{fp}\"]\n"
        ));
        assert_eq!(e.key, "ssh_factor.services");
        let e = located("version = 1\n[ssh_factor]\ncert_extension = \"two words\"\n");
        assert_eq!(e.key, "ssh_factor.cert_extension");
        let e = located("version = 1\n[ssh_factor]\ncas = []\n");
        assert!(
            e.message.contains("unknown key \"cas\" in [ssh_factor]"),
            "{e}"
        );
    }

    #[test]
    fn shipped_config_is_valid_and_states_the_defaults() {
        let path = repo_file("config/config.toml");
        let text = fs::read_to_string(&path).unwrap();
        let config = Config::parse(&path, &text).unwrap();
        assert_eq!(
            Config {
                path: PathBuf::from(crate::DEFAULT_CONFIG_PATH),
                ..config
            },
            Config::default()
        );
    }

    /// The shipped config's commented fleet example says what the README's host config
    /// says: the same paths and timeouts.
    #[test]
    fn the_shipped_fleet_example_matches_the_readme() {
        let shipped = fs::read_to_string(repo_file("config/config.toml")).unwrap();
        let readme = fs::read_to_string(repo_file("README.md")).unwrap();
        let section = shipped
            .split("# [storage.postgresql]")
            .nth(1)
            .expect("a commented [storage.postgresql] example");
        let mut checked = 0;
        for line in section.lines().skip(1).take_while(|l| l.starts_with("# ")) {
            let setting = line.trim_start_matches("# ");
            let Some((key, rest)) = setting.split_once(" = ") else {
                continue;
            };
            if key == "hosts" {
                continue;
            }
            let value = rest.split("  ").next().unwrap_or(rest).trim();
            let in_readme = readme
                .lines()
                .any(|l| l.starts_with(&format!("{key} = {value}")));
            assert!(
                in_readme,
                "config/config.toml has {key} = {value}; the README does not"
            );
            checked += 1;
        }
        assert!(checked >= 6, "{checked} settings checked");
    }

    #[test]
    fn every_example_is_valid() {
        let dir = repo_file("config/examples");
        let mut seen = 0;
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = fs::read_to_string(&path).unwrap();
                if let Err(e) = Config::parse(&path, &text) {
                    panic!("{e}");
                }
                seen += 1;
            }
        }
        assert!(seen >= 3, "only {seen} examples found in {}", dir.display());
    }

    #[test]
    fn examples_mean_what_they_say() {
        let path = repo_file("config/examples/strict.toml");
        let c = Config::parse(&path, &fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(c.policy.users, ["alice", "bob"]);
        assert_eq!(
            c.totp.params,
            TotpParams {
                algorithm: Algorithm::Sha256,
                digits: 8,
                period: 30
            }
        );
        assert_eq!(c.totp.window, 0);
        assert_eq!(c.backup_codes.count, 5);
        assert_eq!(
            c.trusted_devices,
            TrustSettings {
                enabled: true,
                days: 7,
                allow_host_names: false,
            }
        );
        assert_eq!(c.storage.state_dir, Path::new("/srv/twofactor/state"));
    }

    #[test]
    fn unknown_keys_are_located_and_named() {
        let l = located("version = 1\n\n[enforce]\ngrups = [\"wheel\"]\n");
        assert_eq!((l.line, l.column, l.key.as_str()), (4, 1, "enforce.grups"));
        assert_eq!(
            l.to_string(),
            "/etc/twofactor/config.toml:4:1: unknown key \"grups\" in [enforce]"
        );
        let top = located("version = 1\nbogus = true\n");
        assert_eq!((top.line, top.key.as_str()), (2, "bogus"));
        assert!(
            top.message.contains("unknown key \"bogus\""),
            "{}",
            top.message
        );
        let table = located("version = 1\n[nonsense]\nx = 1\n");
        assert_eq!(table.line, 2);
        assert_eq!(table.message, "unknown table [nonsense]");
    }

    #[test]
    fn out_of_range_values_are_located_and_named() {
        let cases = [
            ("[totp]\ndigits = 7\n", "totp.digits", 10),
            ("[totp]\ndigits = 9\n", "totp.digits", 10),
            ("[totp]\nperiod = 5\n", "totp.period", 10),
            ("[totp]\nwindow = 11\n", "totp.window", 10),
            ("[totp]\nalgorithm = \"MD5\"\n", "totp.algorithm", 13),
            ("[backup_codes]\ncount = -1\n", "backup_codes.count", 9),
            ("[lockout]\nmax_failures = 0\n", "lockout.max_failures", 16),
            (
                "[lockout]\nlock_seconds = 90000\n",
                "lockout.lock_seconds",
                16,
            ),
            ("[trusted_devices]\ndays = 0\n", "trusted_devices.days", 8),
            ("[enroll]\ngrace_logins = 5000\n", "enroll.grace_logins", 16),
            ("[enroll]\nissuer = \"a:b\"\n", "enroll.issuer", 10),
            (
                "[storage]\nstate_dir = \"var/lib\"\n",
                "storage.state_dir",
                13,
            ),
            (
                "[storage]\nstate_dir = \"/var/../etc\"\n",
                "storage.state_dir",
                13,
            ),
            ("[storage]\nbackend = \"ldap\"\n", "storage.backend", 11),
            ("[enforce]\ngroups = [\"ok\", \"\"]\n", "enforce.groups", 17),
            ("[enforce]\nusers = [\"a/b\"]\n", "enforce.users", 10),
            (
                "[enroll]\nat_login_networks = [\"10.0.0.0/33\"]\n",
                "enroll.at_login_networks",
                22,
            ),
            ("[enroll]\nqr = \"sixel\"\n", "enroll.qr", 6),
        ];
        for (body, key, column) in cases {
            let l = located(&format!("version = 1\n{body}"));
            assert_eq!(
                (l.key.as_str(), l.line, l.column),
                (key, 3, column),
                "{body:?}: {l}"
            );
            assert!(
                l.message.contains(key),
                "{body:?}: message {:?} must name the key",
                l.message
            );
        }
    }

    #[test]
    fn wrong_types_and_syntax_are_located() {
        let l = located("version = 1\n[totp]\ndigits = \"six\"\n");
        assert_eq!((l.line, l.key.as_str()), (3, "totp.digits"));
        let l = located("version = 1\n[enforce]\nall_users = yes\n");
        assert_eq!(l.line, 3);
        assert_eq!(l.key, "enforce.all_users");
        let l = located("version = 1\n[enforce\n");
        assert_eq!(l.line, 2);
    }

    #[test]
    fn version_is_required_and_must_be_1() {
        let l = located("[enforce]\nall_users = true\n");
        assert_eq!((l.line, l.column, l.key.as_str()), (1, 1, "version"));
        let l = located("version = 2\n");
        assert_eq!((l.line, l.column, l.key.as_str()), (1, 11, "version"));
        assert!(l.message.contains("version 1"));
    }

    #[test]
    fn enrollment_networks_limit_where_enrollment_at_login_happens() {
        let c = parse(
            "version = 1\n[enroll]\nat_login_networks = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n",
        )
        .unwrap();
        assert!(c.enroll.at_login_allowed_from(Some("10.1.2.3")));
        assert!(c.enroll.at_login_allowed_from(Some("2001:db8::5")));
        assert!(!c.enroll.at_login_allowed_from(Some("192.0.2.1")));
        assert!(
            !c.enroll.at_login_allowed_from(None),
            "no remote host is not inside a network"
        );
        let open = Config::default();
        assert!(open.enroll.at_login_allowed_from(None));
        assert!(open.enroll.at_login_allowed_from(Some("192.0.2.1")));
        let off = parse("version = 1\n[enroll]\nat_login = false\n").unwrap();
        assert!(!off.enroll.at_login_allowed_from(Some("10.1.2.3")));
    }

    #[test]
    fn names_are_deduplicated_and_ldap_style_names_allowed() {
        let c = parse("version = 1\n[enforce]\ngroups = [\"domain users@ad.example\", \"wheel\", \"wheel\"]\n").unwrap();
        assert_eq!(c.policy.groups, ["domain users@ad.example", "wheel"]);
    }

    fn write(path: &Path, body: &str, mode: u32) {
        fs::write(path, body).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn load_checks_the_file_before_trusting_it() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        write(&good, "version = 1\n[enforce]\nall_users = true\n", 0o644);
        let c = Config::load(&good, me()).unwrap();
        assert!(c.policy.all_users);
        assert_eq!(c.path, good);

        let err = |path: &Path, owner| Config::load(path, owner).unwrap_err().to_string();
        assert!(
            err(&good, me() + 1).contains("owned by uid"),
            "owner is checked"
        );

        let group_w = dir.path().join("gw.toml");
        write(&group_w, "version = 1\n", 0o664);
        assert!(err(&group_w, me()).contains("mode 0664"));
        let world_w = dir.path().join("ww.toml");
        write(&world_w, "version = 1\n", 0o646);
        assert!(err(&world_w, me()).contains("mode 0646"));

        let link = dir.path().join("link.toml");
        symlink(&good, &link).unwrap();
        assert!(err(&link, me()).contains("symbolic link"));

        let big = dir.path().join("big.toml");
        write(
            &big,
            &format!("version = 1\n#{}\n", "x".repeat(MAX_CONFIG_BYTES as usize)),
            0o644,
        );
        assert!(err(&big, me()).contains("larger than"));

        let bad = dir.path().join("bad.toml");
        write(&bad, "version = 1\n[totp]\ndigits = 7\n", 0o644);
        assert!(err(&bad, me()).starts_with(&format!("{}:3:10: ", bad.display())));

        let binary = dir.path().join("bin.toml");
        fs::write(&binary, b"version = 1\n\xff\xfe\n").unwrap();
        assert!(err(&binary, me()).contains("UTF-8"));

        assert!(err(&dir.path().join("missing.toml"), me()).contains("does not exist"));
    }
}
