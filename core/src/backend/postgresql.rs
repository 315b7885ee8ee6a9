//! The fleet backend: user state in PostgreSQL, codes verified inside the database by
//! SECURITY DEFINER functions (`postgresql/schema.sql`), so hosts never hold secrets.
//!
//! One connection serves one login's conversation: the routing facts before the prompt,
//! the verify after it, and a trust or enrollment that follows. It is opened on first use
//! with the synchronous `postgres` client, which drives its connection on the calling
//! thread: no thread is started in the PAM process. TLS is always on, verified against
//! `ca` and the server's name, with the host's own client certificate.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use io::Read;
use openssl::pkey::PKey;
use openssl::x509::X509;
use postgres::types::ToSql;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{
    AuthenticatorFacts, AuthenticatorId, Authority, Backend, BackendError, Checked, Enrolled,
    Imported, Revoke, UserFacts, Verified,
};
use crate::auth::{CodeResult, Purpose};
use crate::backup_codes::{self, NewCodes};
use crate::config::{Config, PostgresqlSettings};
use crate::enroll::{Enrollment, SaveSettings};
use crate::lockout::Lockout;
use crate::random::Random;
use crate::totp::{self, TotpParams};
use crate::trusted::{HostKind, RemoteHost, TrustedDevice, TrustedDevices};

mod conn;
mod setup;
mod tls;
use super::Phase;
use conn::{Conn, Failure, Target, with_causes};
pub use setup::{
    ADMIN_CONNECTIONS, AddedHost, HOST_CONNECTION_LIMIT, HOSTS_GROUP, HbaAdvice, HostEntry,
    InitReport, RemovedHost, RotateReport, SHARED_HOST_ROLE, ServerTls, Slots, access_lines,
    add_host, catalog_problems, check_host_name, host_role, hosts, init, remove_host, rotate_key,
};
use tls::Tls;

/// Added to a refusal of an administrator's function to a host.
pub const ADMIN_CONFIG_NEEDED: &str = "this needs the fleet's admin role, which a host's certificate never has: \
    run it on an admin machine with the admin config (--config FILE \
    whose certificate pg_ident.conf maps to twofactor_admin)";

/// The schema version this binary speaks.
pub const SCHEMA_VERSION: i32 = 3;

/// The role a connection asks for; the server maps the client certificate to it or
/// refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A host: logins and the user's own changes.
    Host,
    /// An administrator: also reset, unlock, provisioning and listing users.
    Admin,
}

impl Role {
    /// The PostgreSQL roles to log in as, in order, for a client certificate named `cn`:
    /// a host's own role (`fleet add-host`), then the role hosts shared before schema
    /// version 2, which a certificate keeps until its host is added.
    pub fn logins(self, cn: Option<&str>) -> Vec<String> {
        match self {
            Self::Host => cn
                .map(host_role)
                .into_iter()
                .chain([SHARED_HOST_ROLE.to_string()])
                .collect(),
            Self::Admin => vec!["twofactor_admin".to_string()],
        }
    }
}

/// The CN of a certificate, if it has one.
fn common_name(cert: &X509) -> Option<String> {
    cert.subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| String::from_utf8(e.data().as_slice().to_vec()).ok())
}

/// One configured server as [`Postgresql::probe_servers`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    /// `host:port` as configured.
    pub server: String,
    /// What it answered, or why it did not.
    pub state: Result<ServerState, String>,
}

/// A server that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    /// The primary (takes writes), not a standby.
    pub primary: bool,
    /// One query's round trip.
    pub round_trip: Duration,
}

/// A host's report that its config requires a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredReport {
    /// The user.
    pub user: String,
    /// The reporting host (its certificate's CN): the host's word, not a fact.
    pub host: String,
    /// When it last reported (Unix seconds).
    pub reported_at: u64,
}

/// Which audit rows `twofactor log` wants; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// Rows about this user.
    pub user: Option<&'a str>,
    /// Rows written by this host (its certificate's CN).
    pub host: Option<&'a str>,
    /// Rows with this outcome (`totp`, `wrong code`, `saved`...).
    pub outcome: Option<&'a str>,
    /// Rows at or after this time (Unix seconds).
    pub since: Option<u64>,
    /// At most this many rows, the newest.
    pub limit: u32,
}

/// One row of the fleet's audit.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// When (Unix seconds, with fractions).
    pub at: f64,
    /// The host that wrote it (its certificate's CN, or the role without one).
    pub host: String,
    /// The role it connected as.
    pub role: String,
    /// The user it concerns.
    pub user: Option<String>,
    /// What was done (`verify`, `enroll`, `reset`...).
    pub action: String,
    /// How it ended.
    pub outcome: String,
}

/// The connection of one handle.
#[derive(Debug)]
enum Slot {
    /// Not needed yet.
    Unopened,
    /// Open (boxed: a runtime and a client are large beside the other states).
    Open(Box<Conn>),
    /// Lost (closed, or a call ran out of time): the error every later call gets.
    Lost {
        server: Option<String>,
        phase: Option<Phase>,
        why: String,
    },
}

/// The fleet database, as one host (or an administrator) reaches it.
pub struct Postgresql {
    settings: PostgresqlSettings,
    role: Role,
    owner: u32,
    client: Mutex<Slot>,
    /// When this host's certificate runs out, once connected: logins tell the database,
    /// for `fleet hosts`.
    cert_not_after: Mutex<Option<u64>>,
}

impl std::fmt::Debug for Postgresql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgresql")
            .field("hosts", &self.settings.hosts)
            .field("dbname", &self.settings.dbname)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(what: impl std::fmt::Display) -> BackendError {
    BackendError::Setup(what.to_string())
}

fn unreachable(failure: &Failure) -> BackendError {
    BackendError::Unreachable {
        server: Some(failure.server().to_string()),
        phase: Some(failure.phase()),
        why: failure.to_string(),
    }
}

impl From<postgres::Error> for BackendError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        match e.as_db_error() {
            Some(db) if db.code() == &SqlState::INSUFFICIENT_PRIVILEGE => {
                Self::Refused(db.message().to_string())
            }
            Some(db)
                if [
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::QUERY_CANCELED,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(db.code()) =>
            {
                Self::Busy(db.message().to_string())
            }
            // A standby (or a primary fenced meanwhile) cannot take the write.
            Some(db) if db.code() == &SqlState::READ_ONLY_SQL_TRANSACTION => Self::Unreachable {
                server: None,
                phase: Some(Phase::Call),
                why: db.message().to_string(),
            },
            Some(db) => Self::Refused(db.message().to_string()),
            None => Self::Unreachable {
                server: None,
                phase: None,
                why: with_causes(&e),
            },
        }
    }
}

/// Reads a credential file that must belong to `owner` and, for a private key, be
/// readable by nobody else.
fn read_credential(
    path: &std::path::Path,
    owner: u32,
    private: bool,
) -> Result<Vec<u8>, BackendError> {
    let what = |e: io::Error| unavailable(format!("{}: {e}", path.display()));
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(what)?;
    let meta = file.metadata().map_err(what)?;
    let loose = if private { 0o077 } else { 0o022 };
    if meta.uid() != owner || meta.mode() & loose != 0 || !meta.is_file() {
        return Err(unavailable(format!(
            "{}: must be a regular file owned by uid {owner} with mode {}",
            path.display(),
            if private { "0600" } else { "0644 or stricter" }
        )));
    }
    let mut bytes = Vec::new();
    file.take(1 << 20).read_to_end(&mut bytes).map_err(what)?;
    Ok(bytes)
}

impl Postgresql {
    /// A handle on the database; nothing is opened until the first call.
    pub fn new(settings: PostgresqlSettings, role: Role, owner: u32) -> Self {
        Self {
            settings,
            role,
            owner,
            client: Mutex::new(Slot::Unopened),
            cert_not_after: Mutex::new(None),
        }
    }

    /// The TLS context, and the CN of this host's certificate.
    fn tls(&self) -> Result<(Tls, Option<String>), BackendError> {
        let (tls, cn, _) = self.tls_and_expiry()?;
        Ok((tls, cn))
    }

    /// [`Self::tls`], and when this host's certificate runs out (Unix seconds).
    fn tls_and_expiry(&self) -> Result<(Tls, Option<String>, Option<u64>), BackendError> {
        let s = &self.settings;
        let ca = certificate_from(&s.ca, &read_credential(&s.ca, self.owner, false)?)
            .map_err(unavailable)?;
        let cert = certificate_from(&s.cert, &read_credential(&s.cert, self.owner, false)?)
            .map_err(unavailable)?;
        let key_pem = Zeroizing::new(read_credential(&s.key, self.owner, true)?);
        let key = PKey::private_key_from_pem(&key_pem)
            .map_err(|e| unavailable(format!("{}: {e}", s.key.display())))?;
        let tls = Tls::new(Some(ca), Some((&cert, &key)))
            .map_err(|e| unavailable(format!("TLS setup: {e}")))?;
        Ok((tls, common_name(&cert), unix_time(cert.not_after()).ok()))
    }

    fn connect(&self) -> Result<Conn, BackendError> {
        let s = &self.settings;
        let (tls, cn, expires) = self.tls_and_expiry()?;
        *lock(&self.cert_not_after) = expires;
        let logins = self.role.logins(cn.as_deref());
        let target = Target {
            hosts: &s.hosts,
            dbname: &s.dbname,
            logins: &logins,
            connect_timeout: Duration::from_millis(s.connect_timeout_ms),
            statement_timeout: Duration::from_millis(s.statement_timeout_ms),
            // With one address there is nowhere else to go: skip the read-write check's
            // round trip (a standby then refuses the write, and the login fails closed).
            read_write_check: s.hosts.len() > 1
                || s.hosts
                    .first()
                    .is_some_and(|(h, _)| h.parse::<IpAddr>().is_err()),
        };
        let failures = match Conn::open(&target, &tls) {
            Ok(conn) => return Ok(conn),
            Err(f) => f,
        };
        let last = if failures.is_empty() {
            "no server listed".to_string()
        } else {
            failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let (server, phase) = match failures.last() {
            Some(f) => (Some(f.server().to_string()), Some(f.phase())),
            None => (None, None),
        };
        let hint = match self.role {
            Role::Admin => {
                " (admin commands need a certificate that pg_ident.conf maps to twofactor_admin)"
            }
            Role::Host if last.contains("authentication failed") => {
                " (a host logs in as its own role: 'twofactor fleet add-host' with its certificate's CN prints the pg_ident.conf line)"
            }
            Role::Host => "",
        };
        Err(BackendError::Unreachable {
            server,
            phase,
            why: format!("{last}{hint}"),
        })
    }

    /// Runs `f` on the connection within the call's deadline, opening the connection
    /// first if needed. A call that ran out of time leaves the connection unusable, so it
    /// is dropped.
    fn with<T>(
        &self,
        f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, BackendError> {
        let mut slot = lock(&self.client);
        // One connection per handle (one login): a connection lost mid-login is not
        // opened again, so a login waits for at most one connection's worth of servers.
        let conn = match &mut *slot {
            Slot::Unopened => {
                *slot = Slot::Open(Box::new(self.connect()?));
                match &mut *slot {
                    Slot::Open(conn) => conn,
                    _ => return Err(unavailable("no connection")),
                }
            }
            Slot::Open(conn) if conn.is_closed() => {
                let server = conn.server.clone();
                let why = format!("{server}: the connection closed");
                *slot = Slot::Lost {
                    server: Some(server.clone()),
                    phase: Some(Phase::Call),
                    why: why.clone(),
                };
                return Err(BackendError::Unreachable {
                    server: Some(server),
                    phase: Some(Phase::Call),
                    why,
                });
            }
            Slot::Open(conn) => conn,
            Slot::Lost { server, phase, why } => {
                return Err(BackendError::Unreachable {
                    server: server.clone(),
                    phase: *phase,
                    why: why.clone(),
                });
            }
        };
        match conn.call(f) {
            Ok(v) => Ok(v),
            Err(failure) => {
                let gone = conn.is_closed() || !matches!(failure, Failure::Failed { .. });
                if gone {
                    *slot = Slot::Lost {
                        server: Some(failure.server().to_string()),
                        phase: Some(failure.phase()),
                        why: failure.to_string(),
                    };
                }
                Err(match failure {
                    Failure::Failed { error: Some(e), .. } if e.as_db_error().is_some() => {
                        BackendError::from(e)
                    }
                    other => unreachable(&other),
                })
            }
        }
    }

    fn one<T: for<'a> postgres::types::FromSql<'a>>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<T, BackendError> {
        self.with(async |c| c.query_one(sql, params).await.map(|row| row.get(0)))
    }

    /// As [`Self::one`], for a function only `twofactor_admin` may run: the server's
    /// refusal to a host says where admin commands run.
    fn admin_one<T: for<'a> postgres::types::FromSql<'a>>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<T, BackendError> {
        self.one(sql, params).map_err(|e| self.for_admin(e))
    }

    fn for_admin(&self, e: BackendError) -> BackendError {
        match (e, self.role) {
            (BackendError::Refused(m), Role::Host) => {
                BackendError::Refused(format!("{m}: {ADMIN_CONFIG_NEEDED}"))
            }
            (e, _) => e,
        }
    }

    /// Runs `sql` and discards the rows: for checks that a statement is refused to this
    /// role (doctor's probe, the tests). The error text on failure.
    pub fn probe(&self, sql: &str) -> Result<(), String> {
        self.with(async |c| c.batch_execute(sql).await)
            .map_err(|e| match e {
                BackendError::Refused(m) | BackendError::Busy(m) | BackendError::Setup(m) => m,
                other => other.to_string(),
            })
    }

    /// The catalog check (see [`catalog_problems`]) on this connection, as doctor runs it.
    pub fn catalog_problems(&self) -> Result<Vec<String>, BackendError> {
        self.with(async |c| {
            c.query(setup::CATALOG_CHECK, &[])
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// The hosts' connection limits against the server's slots, as this role sees them
    /// (the catalogs and settings it reads are readable by every role).
    pub fn slots(&self) -> Result<Slots, BackendError> {
        self.with(async |c| c.query_one(setup::SLOTS_SQL, &[]).await)
            .map(|row| Slots::from_row(&row))
    }

    /// Each configured server on its own, as doctor reports them: whether it answers
    /// (within the login's deadlines), whether it is the primary, and one round trip.
    pub fn probe_servers(&self) -> Result<Vec<ServerReport>, BackendError> {
        let (tls, cn) = self.tls()?;
        let logins = self.role.logins(cn.as_deref());
        let s = &self.settings;
        let mut out = Vec::new();
        for entry in &s.hosts {
            let target = Target {
                hosts: std::slice::from_ref(entry),
                dbname: &s.dbname,
                logins: &logins,
                connect_timeout: Duration::from_millis(s.connect_timeout_ms),
                statement_timeout: Duration::from_millis(s.statement_timeout_ms),
                read_write_check: false,
            };
            let name = format!("{}:{}", entry.0, entry.1);
            let state = match Conn::open(&target, &tls) {
                Err(failures) => Err(failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")),
                Ok(mut conn) => {
                    let t = std::time::Instant::now();
                    conn.call(async |c| {
                        c.query_one("SELECT pg_is_in_recovery()", &[])
                            .await
                            .map(|r| r.get::<_, bool>(0))
                    })
                    .map(|standby| ServerState {
                        primary: !standby,
                        round_trip: t.elapsed(),
                    })
                    .map_err(|f| f.to_string())
                }
            };
            out.push(ServerReport {
                server: name,
                state,
            });
        }
        Ok(out)
    }

    /// The role this connection logged in as.
    pub fn session_role(&self) -> Result<String, BackendError> {
        self.one("SELECT session_user::text", &[])
    }

    /// The database server's clock (Unix seconds), which codes are checked on.
    pub fn server_time(&self) -> Result<u64, BackendError> {
        let t: i64 = self.one(
            "SELECT floor(extract(epoch FROM clock_timestamp()))::bigint",
            &[],
        )?;
        u64::try_from(t).map_err(bad_reply)
    }

    /// The schema version the database has.
    pub fn schema_version(&self) -> Result<i32, BackendError> {
        self.one("SELECT twofactor.h_version()", &[])
    }

    /// The hosts that reported requiring `user` (everyone's reports when `None`).
    pub fn required_by(&self, user: Option<&str>) -> Result<Vec<RequiredReport>, BackendError> {
        self.with(async |c| {
            c.query("SELECT * FROM twofactor.a_required_by($1)", &[&user])
                .await
                .map(|rows| {
                    rows.iter()
                        .map(|r| RequiredReport {
                            user: r.get(0),
                            host: r.get(1),
                            reported_at: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                        })
                        .collect()
                })
        })
        .map_err(|e| self.for_admin(e))
    }

    /// The fleet's audit, newest first.
    pub fn audit(&self, filter: &AuditFilter<'_>) -> Result<Vec<AuditRow>, BackendError> {
        let since = filter.since.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
        let limit = i32::try_from(filter.limit).unwrap_or(i32::MAX);
        self.with(async |c| {
            c.query(
                "SELECT * FROM twofactor.a_audit(p_name => $1, p_host => $2, p_outcome => $3, \
                 p_since => $4, p_limit => $5)",
                &[&filter.user, &filter.host, &filter.outcome, &since, &limit],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| AuditRow {
                        at: r.get(0),
                        host: r.get(1),
                        role: r.get(2),
                        user: r.get(3),
                        action: r.get(4),
                        outcome: r.get(5),
                    })
                    .collect()
            })
        })
        .map_err(|e| self.for_admin(e))
    }

    /// Runs a user's change: with their proof, the host function `host_sql` (whose
    /// second argument is the ticket, which the database checks and spends); as an
    /// administrator, `admin_sql`, which the database refuses to a host's role.
    fn change<T: for<'a> postgres::types::FromSql<'a>>(
        &self,
        user: &str,
        authority: Authority,
        host_sql: &str,
        admin_sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<T, BackendError> {
        authority.covers(user)?;
        match authority {
            Authority::Verified(proof) => {
                let ticket: Option<&[u8]> = proof.ticket();
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&user, &ticket];
                params.extend_from_slice(args);
                self.one(host_sql, &params)
            }
            Authority::Admin => {
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&user];
                params.extend_from_slice(args);
                self.admin_one(admin_sql, &params)
            }
        }
    }

    fn codes_array(canonical: &[Zeroizing<String>]) -> Vec<String> {
        canonical.iter().map(|c| c.to_string()).collect()
    }
}

#[derive(Deserialize)]
struct RawFacts {
    authenticator: Option<RawAuthenticator>,
    backup_codes_left: usize,
    failures: u32,
    locks: u32,
    locked_until: Option<u64>,
    grace_logins_used: u32,
    trusted: Vec<RawTrust>,
    /// Absent from schema version 2's replies.
    #[serde(default)]
    backup_codes_voided: bool,
}

#[derive(Deserialize)]
struct RawAuthenticator {
    id: String,
    algorithm: String,
    digits: u8,
    period: u64,
    enabled: bool,
    enrolled_at: u64,
    last_step: Option<u64>,
    window: Option<u8>,
}

#[derive(Deserialize)]
struct RawTrust {
    id: String,
    service: String,
    host: String,
    kind: String,
    created: u64,
    expires: u64,
}

#[derive(Deserialize)]
struct RawVerify {
    result: String,
    locked_for: Option<u64>,
    seconds_left: Option<u64>,
    left: Option<usize>,
    ticket: Option<String>,
}

fn bad_reply(e: impl std::fmt::Display) -> BackendError {
    BackendError::Corrupt(format!("unexpected reply from the database: {e}"))
}

fn hex(s: &str) -> Option<Vec<u8>> {
    backup_codes::hex_bytes::from_hex(s)
}

impl RawFacts {
    fn into_facts(self) -> Result<UserFacts, BackendError> {
        let authenticator = match self.authenticator {
            None => None,
            Some(a) => {
                let id: [u8; 16] = hex(&a.id)
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| bad_reply("authenticator id"))?;
                Some(AuthenticatorFacts {
                    id: AuthenticatorId(id),
                    params: TotpParams {
                        algorithm: a.algorithm.parse().map_err(|_| bad_reply("algorithm"))?,
                        digits: a.digits,
                        period: a.period,
                    },
                    enabled: a.enabled,
                    enrolled_at: a.enrolled_at,
                    last_step: a.last_step,
                    window: a.window,
                })
            }
        };
        let trusted = self
            .trusted
            .into_iter()
            .map(|t| TrustedDevice {
                id: t.id,
                service: t.service,
                host: t.host,
                kind: if t.kind == "name" {
                    HostKind::Name
                } else {
                    HostKind::Ip
                },
                created: t.created,
                expires: t.expires,
            })
            .collect();
        Ok(UserFacts {
            authenticator,
            backup_codes_left: self.backup_codes_left,
            lockout: Lockout {
                failures: self.failures,
                locked_until: self.locked_until,
                locks: self.locks,
            },
            trusted_devices: TrustedDevices(trusted),
            grace_logins_used: self.grace_logins_used,
            backup_codes_voided: self.backup_codes_voided,
        })
    }
}

impl Postgresql {
    fn parse_facts(v: Option<serde_json::Value>) -> Result<UserFacts, BackendError> {
        match v {
            None => Ok(UserFacts::default()),
            Some(v) => serde_json::from_value::<RawFacts>(v)
                .map_err(bad_reply)?
                .into_facts(),
        }
    }
}

impl Backend for Postgresql {
    fn served_by(&self) -> Option<String> {
        match &*lock(&self.client) {
            Slot::Open(conn) => Some(conn.server.clone()),
            _ => None,
        }
    }

    fn facts(&self, user: &str) -> Result<UserFacts, BackendError> {
        let v: Option<serde_json::Value> = self.one("SELECT twofactor.h_facts($1)", &[&user])?;
        Self::parse_facts(v)
    }

    fn login_facts(&self, user: &str, required: bool) -> Result<UserFacts, BackendError> {
        // Connect first: the certificate's expiry is known once it is loaded.
        self.with(async |_| Ok(()))?;
        let expires = lock(&self.cert_not_after).and_then(|t| i64::try_from(t).ok());
        let v: Option<serde_json::Value> = self.one(
            "SELECT twofactor.h_login_facts(p_name => $1, p_required => $2, p_cert_not_after => $3)",
            &[&user, &required, &expires],
        )?;
        Self::parse_facts(v)
    }

    fn issuer(&self) -> Result<Option<String>, BackendError> {
        self.one("SELECT twofactor.h_issuer()", &[])
    }

    fn users(&self) -> Result<Vec<String>, BackendError> {
        self.with(async |c| {
            c.query("SELECT twofactor.a_users()", &[])
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        })
        .map_err(|e| self.for_admin(e))
    }

    fn verify(
        &self,
        user: &str,
        code: &str,
        purpose: Purpose,
        config: &Config,
    ) -> Result<Checked, BackendError> {
        let as_totp = totp::normalize(code);
        let as_backup = backup_codes::normalize(code);
        let purpose = match purpose {
            Purpose::Login => "login",
            Purpose::Change => "change",
        };
        let window = i32::from(config.totp.window);
        let max = i32::try_from(config.lockout.max_failures).unwrap_or(i32::MAX);
        let lock_s = i64::try_from(config.lockout.lock_seconds).unwrap_or(i64::MAX);
        let totp_arg: &str = &as_totp;
        let backup_arg: Option<&str> = as_backup.as_deref().map(String::as_str);
        let v: serde_json::Value = self.one(
            "SELECT twofactor.h_verify(p_name => $1, p_totp => $2, p_backup => $3, \
             p_purpose => $4, p_window => $5, p_max_failures => $6, p_lock_seconds => $7)",
            &[
                &user,
                &totp_arg,
                &backup_arg,
                &purpose,
                &window,
                &max,
                &lock_s,
            ],
        )?;
        let r: RawVerify = serde_json::from_value(v).map_err(bad_reply)?;
        let ticket = match r.ticket.as_deref() {
            Some(t) => Some(Zeroizing::new(hex(t).ok_or_else(|| bad_reply("ticket"))?)),
            None => None,
        };
        let result = match r.result.as_str() {
            "totp" => CodeResult::Totp,
            "backup" => CodeResult::BackupCode {
                left: r.left.unwrap_or(0),
            },
            "wrong" => CodeResult::Wrong {
                locked_for: r.locked_for,
            },
            "replayed" => CodeResult::Replayed,
            "voided" => CodeResult::VoidedBackupCode,
            "locked" => CodeResult::Locked {
                seconds_left: r.seconds_left.unwrap_or(1),
            },
            "not_enrolled" => CodeResult::NotEnrolled,
            other => return Err(bad_reply(other)),
        };
        if result.is_success() != ticket.is_some() {
            return Err(bad_reply("a ticket without a right code, or none with one"));
        }
        let proof = ticket.map(|t| Verified::new(user, Some(t)));
        Ok(Checked { result, proof })
    }

    fn enroll(
        &self,
        user: &str,
        enrollment: &Enrollment,
        first_code: Option<&str>,
        expected: Option<&AuthenticatorId>,
        authority: Option<Authority>,
        settings: SaveSettings,
        rng: &mut dyn Random,
    ) -> Result<Enrolled, BackendError> {
        if let Some(a) = &authority {
            a.covers(user)?;
        }
        let (canonical, shown) = backup_codes::generate_plain(settings.backup_codes, rng)?;
        let codes = Self::codes_array(&canonical);
        let p = enrollment.params();
        let secret: &[u8] = enrollment.secret().as_bytes();
        let alg = p.algorithm.as_str();
        let digits = i32::from(p.digits);
        let period = i32::try_from(p.period).unwrap_or(i32::MAX);
        let expected: Option<&[u8]> = expected.map(|e| &e.0[..]);
        let result: String = match (first_code, &authority) {
            (Some(code), _) => {
                let ticket: Option<&[u8]> = match &authority {
                    Some(Authority::Verified(proof)) => proof.ticket(),
                    _ => None,
                };
                let code = totp::normalize(code);
                let code: &str = &code;
                let window = i32::from(settings.window);
                let v: serde_json::Value = self.one(
                    "SELECT twofactor.h_enrol(p_name => $1, p_secret => $2, p_algorithm => $3, \
                     p_digits => $4, p_period => $5, p_code => $6, p_expected => $7, \
                     p_ticket => $8, p_window => $9, p_codes => $10)",
                    &[
                        &user, &secret, &alg, &digits, &period, &code, &expected, &ticket, &window,
                        &codes,
                    ],
                )?;
                v.get("result")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| bad_reply("h_enrol"))?
                    .to_string()
            }
            (None, Some(Authority::Admin)) => self.admin_one(
                "SELECT twofactor.a_install(p_name => $1, p_secret => $2, p_algorithm => $3, \
                 p_digits => $4, p_period => $5, p_expected => $6, p_window => NULL, \
                 p_codes => $7, p_last_step => NULL)",
                &[&user, &secret, &alg, &digits, &period, &expected, &codes],
            )?,
            (None, _) => {
                return Err(BackendError::Refused(
                    "saving an authenticator without a code from it is for administrators".into(),
                ));
            }
        };
        match result.as_str() {
            "saved" => Ok(Enrolled::Saved(shown)),
            // The database checks the code before the ticket, so it is still unspent.
            "wrong" => Ok(Enrolled::Mismatch(authority)),
            "changed" => Err(BackendError::Changed(user.to_string())),
            other => Err(bad_reply(other)),
        }
    }

    fn import(&self, user: &str, imported: Imported<'_>) -> Result<Option<usize>, BackendError> {
        if self.facts(user)?.is_enrolled() {
            return Ok(None);
        }
        let e = imported.enrollment;
        let p = e.params();
        let secret: &[u8] = e.secret().as_bytes();
        let window = i32::from(imported.window);
        let no_codes: Option<Vec<String>> = None;
        let r: String = self.admin_one(
            "SELECT twofactor.a_install(p_name => $1, p_secret => $2, p_algorithm => $3, \
             p_digits => $4, p_period => $5, p_expected => NULL, p_window => $6, \
             p_codes => $7, p_last_step => NULL)",
            &[
                &user,
                &secret,
                &p.algorithm.as_str(),
                &i32::from(p.digits),
                &i32::try_from(p.period).unwrap_or(i32::MAX),
                &window,
                &no_codes,
            ],
        )?;
        // Scratch codes hashed on the host cannot be checked by the server: none move.
        Ok((r == "saved").then_some(0))
    }

    fn count_grace_login(&self, user: &str, allowed: u32) -> Result<Option<u32>, BackendError> {
        let allowed = i32::try_from(allowed).unwrap_or(i32::MAX);
        let left: Option<i32> = self.one(
            "SELECT twofactor.h_count_grace_login($1, $2)",
            &[&user, &allowed],
        )?;
        Ok(left.and_then(|l| u32::try_from(l).ok()))
    }

    fn trust_host(
        &self,
        proof: Verified,
        service: &str,
        host: &RemoteHost,
        days: u32,
    ) -> Result<String, BackendError> {
        let user = proof.user();
        let ticket: Option<&[u8]> = proof.ticket();
        let kind = match host.kind {
            HostKind::Ip => "ip",
            HostKind::Name => "name",
        };
        let days = i32::try_from(days).unwrap_or(i32::MAX);
        self.one(
            "SELECT twofactor.h_trust(p_name => $1, p_ticket => $2, p_service => $3, \
             p_host => $4, p_kind => $5, p_days => $6)",
            &[&user, &ticket, &service, &host.host, &kind, &days],
        )
    }

    fn revoke_trust(
        &self,
        user: &str,
        authority: Authority,
        which: Revoke<'_>,
    ) -> Result<usize, BackendError> {
        let id: Option<&str> = match which {
            Revoke::One(id) => Some(id),
            Revoke::All => None,
        };
        let n: i32 = self.change(
            user,
            authority,
            "SELECT twofactor.h_revoke_trust($1, $2, $3)",
            "SELECT twofactor.a_revoke_trust($1, $2)",
            &[&id],
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn set_enabled(
        &self,
        user: &str,
        authority: Authority,
        enabled: bool,
    ) -> Result<bool, BackendError> {
        self.change(
            user,
            authority,
            "SELECT twofactor.h_set_enabled($1, $2, $3)",
            "SELECT twofactor.a_set_enabled($1, $2)",
            &[&enabled],
        )
    }

    fn remove_authenticator(&self, user: &str, authority: Authority) -> Result<bool, BackendError> {
        self.change(
            user,
            authority,
            "SELECT twofactor.h_remove($1, $2)",
            "SELECT twofactor.a_reset($1, false)",
            &[],
        )
    }

    fn reset(&self, user: &str) -> Result<(), BackendError> {
        let _: bool = self.admin_one("SELECT twofactor.a_reset($1, true)", &[&user])?;
        Ok(())
    }

    fn unlock(&self, user: &str) -> Result<Option<u64>, BackendError> {
        let left: Option<i64> = self.admin_one("SELECT twofactor.a_unlock($1)", &[&user])?;
        Ok(left.and_then(|l| u64::try_from(l).ok()))
    }

    fn new_backup_codes(
        &self,
        user: &str,
        authority: Authority,
        count: usize,
        rng: &mut dyn Random,
    ) -> Result<Option<NewCodes>, BackendError> {
        let (canonical, shown) = backup_codes::generate_plain(count, rng)?;
        let codes = Self::codes_array(&canonical);
        let saved: bool = self.change(
            user,
            authority,
            "SELECT twofactor.h_new_codes($1, $2, $3)",
            "SELECT twofactor.a_new_codes($1, $2)",
            &[&codes],
        )?;
        Ok(saved.then_some(shown))
    }
}

/// What `twofactor fleet import` did, or with `--dry-run` would do, for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The database had no authenticator for the user: this one is theirs now.
    Imported,
    /// The database has the same key: the later replay step is kept.
    Merged,
    /// Another key was replaced (`--replace`), with the backup codes that went with it.
    Replaced,
    /// Another key is in the database; nothing changed.
    Conflict,
}

impl ImportOutcome {
    /// The word for it in output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imported => "imported",
            Self::Merged => "merged",
            Self::Replaced => "replaced",
            Self::Conflict => "conflict",
        }
    }

    /// What importing an authenticator with id `id` would do, given the database's.
    pub fn planned(in_db: Option<&AuthenticatorId>, id: &AuthenticatorId, replace: bool) -> Self {
        match in_db {
            None => Self::Imported,
            Some(have) if have == id => Self::Merged,
            Some(_) if replace => Self::Replaced,
            Some(_) => Self::Conflict,
        }
    }
}

impl Postgresql {
    /// Brings one user's authenticator from a host's file store into the database, in one
    /// transaction (administrators only): key, parameters, window, replay step and whether
    /// it is enabled. Backup codes and trusted hosts never move.
    pub fn import_authenticator(
        &self,
        user: &str,
        a: &crate::store::Authenticator,
        replace: bool,
    ) -> Result<ImportOutcome, BackendError> {
        let secret: &[u8] = a.secret.as_bytes();
        let window: Option<i32> = a.window.map(i32::from);
        let last_step: Option<i64> = a.last_step.and_then(|s| i64::try_from(s).ok());
        let outcome: String = self.admin_one(
            "SELECT twofactor.a_import(p_name => $1, p_secret => $2, p_algorithm => $3, \
             p_digits => $4, p_period => $5, p_window => $6, p_last_step => $7, \
             p_enabled => $8, p_replace => $9)",
            &[
                &user,
                &secret,
                &a.params.algorithm.as_str(),
                &i32::from(a.params.digits),
                &i32::try_from(a.params.period).unwrap_or(i32::MAX),
                &window,
                &last_step,
                &a.enabled,
                &replace,
            ],
        )?;
        match outcome.as_str() {
            "imported" => Ok(ImportOutcome::Imported),
            "merged" => Ok(ImportOutcome::Merged),
            "replaced" => Ok(ImportOutcome::Replaced),
            "conflict" => Ok(ImportOutcome::Conflict),
            other => Err(bad_reply(other)),
        }
    }
}

/// When the PEM certificate at `path` expires (Unix seconds).
pub fn certificate_expiry(path: &std::path::Path) -> Result<u64, String> {
    let pem = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cert = certificate_from(path, &pem)?;
    unix_time(cert.not_after()).map_err(|e| format!("{}: {e}", path.display()))
}

/// The PEM certificate in `pem` (read from `path`), or what the file holds instead, in
/// words: a private key given as `ca` is the usual slip.
pub fn certificate_from(path: &std::path::Path, pem: &[u8]) -> Result<X509, String> {
    X509::from_pem(pem).map_err(|_| {
        let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
        let what = if has(b"PRIVATE KEY-----") {
            "holds a private key, not a certificate"
        } else if !has(b"-----BEGIN CERTIFICATE-----") {
            "is not a PEM certificate (no -----BEGIN CERTIFICATE----- line)"
        } else {
            "holds a certificate that cannot be read (cut short or damaged?)"
        };
        format!("{}: {what}", path.display())
    })
}

/// What is wrong with the files `settings` names, read as they are now (root can read
/// them): the CA and this host's certificate must be PEM certificates, the key a PEM
/// private key that belongs to the certificate. Each problem names its key and file.
pub fn credential_problems(settings: &PostgresqlSettings) -> Vec<String> {
    let mut out = Vec::new();
    let read = |key: &str, path: &std::path::Path| {
        fs::read(path).map_err(|e| format!("storage.postgresql.{key}: {}: {e}", path.display()))
    };
    let mut cert = None;
    for (key, path) in [("ca", &settings.ca), ("cert", &settings.cert)] {
        match read(key, path).and_then(|pem| {
            certificate_from(path, &pem).map_err(|e| format!("storage.postgresql.{key}: {e}"))
        }) {
            Ok(c) if key == "cert" => cert = Some(c),
            Ok(_) => {}
            Err(e) => out.push(e),
        }
    }
    match read("key", &settings.key).map(Zeroizing::new) {
        Ok(pem) => match PKey::private_key_from_pem(&pem) {
            Ok(key) => {
                let matches = cert
                    .as_ref()
                    .and_then(|c| c.public_key().ok())
                    .is_none_or(|public| public.public_eq(&key));
                if !matches {
                    out.push(format!(
                        "storage.postgresql.key: {} is not the key of the certificate in {}",
                        settings.key.display(),
                        settings.cert.display()
                    ));
                }
            }
            Err(_) => out.push(format!(
                "storage.postgresql.key: {} is not a PEM private key",
                settings.key.display()
            )),
        },
        Err(e) => out.push(e),
    }
    out
}

/// An ASN.1 time (a certificate's or a CRL's) as Unix seconds.
pub fn unix_time(t: &openssl::asn1::Asn1TimeRef) -> Result<u64, String> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).map_err(|e| e.to_string())?;
    let d = epoch.diff(t).map_err(|e| e.to_string())?;
    u64::try_from(i64::from(d.days) * 86_400 + i64::from(d.secs))
        .map_err(|_| "a time before 1970".to_string())
}
