//! Setting up and looking after the fleet database through a superuser's connection:
//! `fleet init` (roles, the numbered migrations, functions), `fleet rotate-key`, one
//! login role per host (`fleet add-host`, `hosts`, `remove-host`), and the catalog check
//! that `fleet init` and `doctor` share.

use postgres::config::{Host, SslMode};
use postgres::{Client, Config as PgConfig, GenericClient, Transaction};
use sha2::{Digest, Sha256};

use super::tls::Tls;
use super::{SCHEMA_VERSION, unavailable, with_causes};
use crate::backend::BackendError;
use crate::store::MAX_USER_LEN;

/// Roles and what PUBLIC may no longer do, run before the migrations: needs a superuser.
const BOOTSTRAP: &str = include_str!("bootstrap.sql");

/// The numbered migrations, each taking the schema to its version.
const MIGRATIONS: [(i32, &str); 3] = [
    (1, include_str!("001_initial.sql")),
    (2, include_str!("002_hosts_keys_pending.sql")),
    (3, include_str!("003_reports_issuer_retired.sql")),
];

/// Every function, applied after the migrations on each run.
const FUNCTIONS: &str = include_str!("functions.sql");

/// The extensions the functions use, kept in a schema of their own.
const EXTENSIONS: [&str; 2] = ["pgcrypto", "sslinfo"];
/// That schema: only twofactor_owner may use it, and only the superuser create in it.
const EXTENSION_SCHEMA: &str = "twofactor_ext";

/// The group role holding the hosts' grants; each host's login role is a member.
pub const HOSTS_GROUP: &str = "twofactor_hosts";
/// The login role every host shared before version 2; kept for certificates mapped to it.
pub const SHARED_HOST_ROLE: &str = "twofactor_host";
/// How each host's own role name starts.
pub const HOST_ROLE_PREFIX: &str = "tf_host_";
/// The longest host name (a DNS name) `fleet add-host` takes.
pub const MAX_HOST_NAME: usize = 253;
/// PostgreSQL's longest identifier, in bytes.
const MAX_ROLE_NAME: usize = 63;
/// Connections a host may hold at once, unless `add-host --connection-limit` says
/// otherwise. A login holds one connection for its few milliseconds, so 10 serve a
/// busy host, and a rooted host that opens all it may still leaves the rest of the
/// server's slots to the others, as long as the limits fit (see [`Slots`]).
pub const HOST_CONNECTION_LIMIT: u32 = 10;
/// The limit every host had before it could be chosen: `fleet init` lowers it.
const OLD_HOST_CONNECTION_LIMIT: i32 = 100;
/// Slots kept for the administrator's own commands beyond the hosts' limits.
pub const ADMIN_CONNECTIONS: i64 = 5;

/// Whether the hosts' connection limits fit in the server's slots.
pub const SLOTS_SQL: &str = "SELECT coalesce(sum(CASE WHEN r.rolconnlimit < 0 \
       THEN current_setting('max_connections')::int ELSE r.rolconnlimit END), 0)::bigint, \
       count(r.oid)::bigint, current_setting('max_connections')::int, \
       current_setting('superuser_reserved_connections')::int \
       + coalesce(current_setting('reserved_connections', true)::int, 0) \
  FROM pg_roles g JOIN pg_auth_members m ON m.roleid = g.oid \
  JOIN pg_roles r ON r.oid = m.member AND r.rolcanlogin \
 WHERE g.rolname = 'twofactor_hosts'";

/// The hosts' connection limits against the server's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// The hosts' limits added up.
    pub hosts_total: i64,
    /// How many host roles.
    pub hosts: i64,
    /// The server's `max_connections`.
    pub max_connections: i64,
    /// Slots only superusers (and `pg_use_reserved_connections`) may take.
    pub reserved: i64,
}

impl Slots {
    /// From a row of the slots query (`SLOTS_SQL`).
    pub fn from_row(row: &postgres::Row) -> Self {
        Self {
            hosts_total: row.get(0),
            hosts: row.get(1),
            max_connections: i64::from(row.get::<_, i32>(2)),
            reserved: i64::from(row.get::<_, i32>(3)),
        }
    }

    /// Why the limits do not fit, and what to raise; `None` when they fit.
    pub fn problem(&self) -> Option<String> {
        let open = self.max_connections - self.reserved;
        let needed = self.hosts_total + ADMIN_CONNECTIONS;
        (needed > open).then(|| {
            format!(
                "the {} hosts may hold {} connections together, plus {ADMIN_CONNECTIONS} for the administrator, but the server has {open} (max_connections {} less {} reserved): one host that opens all it may can then leave the others none; raise max_connections to at least {} on every database node (a restart), or give hosts smaller limits (fleet add-host NAME --connection-limit N)",
                self.hosts,
                self.hosts_total,
                self.max_connections,
                self.reserved,
                needed + self.reserved
            )
        })
    }
}

/// The slots as they are now, in `tx`.
pub fn slots_in(tx: &mut Transaction<'_>) -> Result<Slots, BackendError> {
    Ok(Slots::from_row(&tx.query_one(SLOTS_SQL, &[])?))
}

/// The functions with the user-name limit of core filled in.
fn functions_sql() -> String {
    FUNCTIONS
        .replace("@MAX_USER_LEN@", &MAX_USER_LEN.to_string())
        .replace("@UNSAFE_CHARS@", &crate::text::unsafe_sql_bracket())
        .replace(
            "@BACKUP_CODE_CHARS@",
            &crate::backup_codes::CODE_CHARS.to_string(),
        )
}

/// A superuser's connection for the `fleet` commands: `admin_url` is a libpq-style URL or
/// `key=value` string. A Unix socket needs no TLS. Over TCP the server's certificate is
/// always verified, against `ca` or the system's bundle, and a server that refuses TLS
/// gets no password: `sslmode=prefer` would hand it to anyone who can answer "no TLS".
/// Over the socket, root connects as the URL's user (postgres when it names none) with
/// that account's ids, so a stock cluster's peer authentication takes it.
pub fn superuser(admin_url: &str, ca: Option<&std::path::Path>) -> Result<Client, BackendError> {
    let mut config: PgConfig = admin_url.parse().map_err(|e| {
        unavailable(format!(
            "--admin-url: {e} (use --ca FILE instead of sslrootcert; over TCP TLS is always required)"
        ))
    })?;
    let tcp = config.get_hosts().iter().any(|h| matches!(h, Host::Tcp(_)));
    if tcp {
        if config.get_ssl_mode() == SslMode::Disable {
            return Err(unavailable(
                "--admin-url: sslmode=disable over TCP would send the superuser's password in the clear; \
                 use TLS, or the server's Unix socket (host=/var/run/postgresql)",
            ));
        }
        config.ssl_mode(SslMode::Require);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(ADMIN_CONNECT_TIMEOUT);
    }
    let tls = Tls::with_ca_file(ca).map_err(unavailable)?;
    let socket_only = !tcp && !config.get_hosts().is_empty();
    if socket_only && config.get_user().is_none() {
        // Over the socket as root, libpq's default user would be "root", which a stock
        // cluster does not have: the superuser a Debian cluster has is postgres.
        config.user("postgres");
    }
    let connect = |config: &PgConfig| {
        config
            .connect(tls.clone())
            .map_err(|e| BackendError::Unreachable {
                server: None,
                phase: None,
                why: with_causes(&e),
            })
    };
    match config.get_user() {
        Some(user) if socket_only => as_os_user(user, || connect(&config)),
        _ => connect(&config),
    }
}

/// The longest wait for the superuser's server when the URL sets no connect_timeout.
const ADMIN_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `connect` with the effective uid and gid of the OS account `user`, when this
/// process runs as root and that account exists. A stock Debian cluster authenticates
/// its Unix socket by peer (`local all postgres peer`): the server asks the kernel who
/// connected, and "root" is not "postgres". Switching only the effective ids for the
/// connect is enough, and they are restored before anything else runs.
fn as_os_user(
    user: &str,
    connect: impl FnOnce() -> Result<Client, BackendError>,
) -> Result<Client, BackendError> {
    use nix::unistd::{User, getegid, geteuid, setegid, seteuid};
    let account = match User::from_name(user) {
        Ok(Some(a)) if geteuid().is_root() && !a.uid.is_root() => a,
        _ => return connect(),
    };
    let (euid, egid) = (geteuid(), getegid());
    setegid(account.gid)
        .map_err(|e| unavailable(format!("cannot switch to the group of {user}: {e}")))?;
    if let Err(e) = seteuid(account.uid) {
        let _ = setegid(egid);
        return Err(unavailable(format!(
            "cannot switch to the user {user}: {e}"
        )));
    }
    let result = connect();
    // Failing to become root again must not leave a half-privileged process running on.
    if seteuid(euid).is_err() || setegid(egid).is_err() {
        std::process::abort();
    }
    result
}

/// The schema version in the database (0: none yet).
fn version_in(tx: &mut impl GenericClient) -> Result<i32, BackendError> {
    let exists: bool = tx
        .query_one("SELECT to_regclass('twofactor.meta') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(tx
        .query_one("SELECT coalesce(max(version), 0) FROM twofactor.meta", &[])?
        .get(0))
}

/// Reads the key at `id` once, so that a missing or malformed key file fails the command
/// that registered it, not a login; the error says how to make one.
fn check_key(tx: &mut Transaction<'_>, id: i32, path: &str) -> Result<(), BackendError> {
    tx.execute("SELECT twofactor.key($1)", &[&id])
        .map_err(|e| {
            unavailable(format!(
                "the database server cannot use the key file {path}: {}. Make it on the database \
             server: (umask 077; openssl rand -hex 32 > {path}); chown postgres: {path}",
                with_causes(&e)
            ))
        })?;
    Ok(())
}

/// What `twofactor fleet init` ran.
#[derive(Debug)]
pub struct InitReport {
    /// The schema version before (0: none).
    pub before: i32,
    /// The schema version now.
    pub after: i32,
    /// The database it is in.
    pub dbname: String,
    /// The current encryption key's file on the server.
    pub key_file: String,
    /// The fleet's issuer, as stored now.
    pub issuer: Option<String>,
    /// Where the pg_hba.conf lines go.
    pub hba: HbaAdvice,
    /// What the catalog check found wrong before this run (all of it is fixed now).
    pub fixed: Vec<String>,
    /// The hosts' connection limits against the server's slots.
    pub slots: Slots,
}

/// Puts pgcrypto and sslinfo in their own schema: created there, or moved there when the
/// database holds nothing else that could use them where they are.
fn place_extensions(tx: &mut Transaction<'_>) -> Result<(), BackendError> {
    for ext in EXTENSIONS {
        let at: Option<String> = tx
            .query_opt(
                "SELECT n.nspname::text FROM pg_extension e \
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = $1",
                &[&ext],
            )?
            .map(|r| r.get(0));
        match at.as_deref() {
            None => {
                tx.batch_execute(&format!("CREATE EXTENSION {ext} SCHEMA {EXTENSION_SCHEMA}"))?
            }
            Some(EXTENSION_SCHEMA) => {}
            Some(schema) => {
                let others = foreign_objects(tx)?;
                if !others.is_empty() {
                    return Err(unavailable(format!(
                        "{ext} is installed in schema {schema}, and this database holds objects \
                         that are not twofactor's ({}), which may use it there. twofactor moves \
                         {ext} into a schema of its own that no host can create in, and will not \
                         move it under someone else's feet: give twofactor a database of its own \
                         (createdb twofactor) and run fleet init there",
                        others.join(", ")
                    )));
                }
                tx.batch_execute(&format!(
                    "ALTER EXTENSION {ext} SET SCHEMA {EXTENSION_SCHEMA}"
                ))?;
            }
        }
    }
    Ok(())
}

/// Up to five objects of the database (tables, views, sequences, functions) outside
/// twofactor's schemas that belong to no extension.
fn foreign_objects(tx: &mut Transaction<'_>) -> Result<Vec<String>, BackendError> {
    Ok(tx
        .query(
            "WITH ours(n) AS (VALUES ('twofactor'), ('twofactor_ext'), ('twofactor_keys'), \
                                     ('pg_catalog'), ('information_schema')), \
             objs AS ( \
               SELECT c.oid, 'pg_class'::regclass AS cls, c.oid::regclass::text AS what \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                WHERE n.nspname NOT IN (SELECT n FROM ours) AND n.nspname NOT LIKE 'pg_%' \
                  AND c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S') \
               UNION ALL \
               SELECT p.oid, 'pg_proc'::regclass, p.oid::regprocedure::text \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                WHERE n.nspname NOT IN (SELECT n FROM ours) AND n.nspname NOT LIKE 'pg_%') \
             SELECT what FROM objs o WHERE NOT EXISTS ( \
               SELECT 1 FROM pg_depend d WHERE d.classid = o.cls AND d.objid = o.oid \
                  AND d.deptype = 'e') \
             ORDER BY what LIMIT 5",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Creates or migrates the roles, schema and functions through a superuser's connection,
/// registering `key_file` (a path on the database server) as the encryption key when
/// none is. Applies the migrations the database has not had, in order, then every
/// function, in one transaction; the catalog check must then find nothing, or nothing is
/// kept. Idempotent: a second run changes nothing.
pub fn init(
    admin_url: &str,
    ca: Option<&std::path::Path>,
    key_file: &str,
    issuer: Option<&str>,
) -> Result<InitReport, BackendError> {
    let mut c = superuser(admin_url, ca)?;
    let mut tx = c.transaction()?;
    let before = version_in(&mut tx)?;
    if before > SCHEMA_VERSION {
        return Err(unavailable(format!(
            "the database has schema version {before}; this twofactor knows {SCHEMA_VERSION}: upgrade twofactor first"
        )));
    }
    let fixed = if before > 0 {
        catalog_problems(&mut tx)?
    } else {
        Vec::new()
    };
    tx.batch_execute(BOOTSTRAP)?;
    place_extensions(&mut tx)?;
    for (version, sql) in MIGRATIONS {
        if version > before {
            tx.batch_execute(sql)?;
        }
    }
    tx.batch_execute(&functions_sql())?;
    tx.execute(
        "INSERT INTO twofactor.meta (version) VALUES ($1) \
         ON CONFLICT (id) DO UPDATE SET version = greatest(twofactor.meta.version, $1)",
        &[&SCHEMA_VERSION],
    )?;
    let has_key: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM twofactor.keys WHERE current)",
            &[],
        )?
        .get(0);
    if !has_key {
        register_key(&mut tx, key_file, true)?;
    }
    let (id, path): (i32, String) = {
        let row = tx.query_one(
            "SELECT k.id, f.path FROM twofactor.keys k \
             JOIN twofactor_keys.files f ON f.id = k.id WHERE k.current",
            &[],
        )?;
        (row.get(0), row.get(1))
    };
    check_key(&mut tx, id, &path)?;
    // Hosts added by an older twofactor get today's limits; a limit chosen at add-host
    // stays.
    let roles: Vec<(String, i32)> = tx
        .query(
            "SELECT h.role, r.rolconnlimit FROM twofactor.hosts h JOIN pg_roles r ON r.rolname = h.role",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (role, limit) in roles {
        let limit = match u32::try_from(limit) {
            Ok(chosen) if chosen > 0 && limit != OLD_HOST_CONNECTION_LIMIT => chosen,
            _ => HOST_CONNECTION_LIMIT,
        };
        tx.batch_execute(&host_role_limits(&role, limit))?;
    }
    if let Some(issuer) = issuer {
        tx.execute("UPDATE twofactor.settings SET issuer = $1", &[&issuer])
            .map_err(|e| {
                unavailable(format!(
                    "--issuer: {}: at most 64 characters, no ':' or control characters",
                    with_causes(&e)
                ))
            })?;
    }
    let issuer: Option<String> = tx
        .query_one("SELECT issuer FROM twofactor.settings", &[])?
        .get(0);
    let hba = hba_advice(&mut tx)?;
    let slots = slots_in(&mut tx)?;
    let left = catalog_problems(&mut tx)?;
    if !left.is_empty() {
        return Err(unavailable(format!(
            "fleet init left the database unsafe, so nothing was changed: {}",
            left.join("; ")
        )));
    }
    let dbname: String = tx.query_one("SELECT current_database()::text", &[])?.get(0);
    tx.commit()?;
    Ok(InitReport {
        before,
        after: SCHEMA_VERSION,
        dbname,
        key_file: path,
        fixed,
        issuer,
        hba,
        slots,
    })
}

/// Where the pg_hba.conf lines `fleet init` prints must go, from the server's own view of
/// that file (`pg_hba_file_rules`): the first line that matches decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HbaAdvice {
    /// twofactor's certificate lines are there, above any broader line.
    InPlace { file: String, line: i32 },
    /// A broader line would match hosts first: the lines go above it.
    Above {
        file: String,
        line: i32,
        text: String,
    },
    /// Neither: add them above any later broader line.
    Missing { file: String },
}

fn hba_advice(tx: &mut Transaction<'_>) -> Result<HbaAdvice, BackendError> {
    let file: String = tx
        .query_one("SELECT current_setting('hba_file')", &[])?
        .get(0);
    let dbname: String = tx.query_one("SELECT current_database()::text", &[])?.get(0);
    let rows = tx.query(
        "SELECT line_number, type, database, user_name, coalesce(address, ''), \
                coalesce(netmask, ''), auth_method \
           FROM pg_hba_file_rules WHERE error IS NULL AND type <> 'local' ORDER BY line_number",
        &[],
    )?;
    for r in rows {
        let (line, kind): (i32, String) = (r.get(0), r.get(1));
        let (dbs, users): (Vec<String>, Vec<String>) = (r.get(2), r.get(3));
        let (address, netmask, method): (String, String, String) = (r.get(4), r.get(5), r.get(6));
        let db_matches = dbs.iter().any(|d| d == "all" || *d == dbname);
        let user_matches = users
            .iter()
            .any(|u| u == "all" || u == "twofactor_admin" || *u == format!("+{HOSTS_GROUP}"));
        if !db_matches
            || !user_matches
            || kind == "hostnossl"
            || dbs.iter().any(|d| d == "replication")
        {
            continue;
        }
        if method == "cert" && users.iter().any(|u| *u == format!("+{HOSTS_GROUP}")) {
            return Ok(HbaAdvice::InPlace { file, line });
        }
        let address = match netmask.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(m)) => format!("{address}/{}", m.to_bits().count_ones()),
            Ok(std::net::IpAddr::V6(m)) => format!("{address}/{}", m.to_bits().count_ones()),
            Err(_) => address,
        };
        let text = format!(
            "{kind} {} {} {address} {method}",
            dbs.join(","),
            users.join(",")
        )
        .replace("  ", " ");
        return Ok(HbaAdvice::Above { file, line, text });
    }
    Ok(HbaAdvice::Missing { file })
}

/// Registers `path` as a key file (the superuser's registry, which the owner cannot
/// write) and as a key the owner knows by id; returns the id.
fn register_key(tx: &mut Transaction<'_>, path: &str, current: bool) -> Result<i32, BackendError> {
    let known: Option<i32> = tx
        .query_opt(
            "SELECT id FROM twofactor_keys.files WHERE path = $1",
            &[&path],
        )?
        .map(|r| r.get(0));
    let id = match known {
        Some(id) => id,
        None => {
            let id: i32 = tx
                .query_one(
                    "INSERT INTO twofactor.keys (current) VALUES ($1) RETURNING id",
                    &[&current],
                )?
                .get(0);
            tx.execute(
                "INSERT INTO twofactor_keys.files (id, path) VALUES ($1, $2)",
                &[&id, &path],
            )?;
            id
        }
    };
    Ok(id)
}

/// What `twofactor fleet rotate-key` did.
#[derive(Debug)]
pub struct RotateReport {
    /// Secrets now encrypted with the new key.
    pub secrets: u64,
    /// Unspent backup codes still hashed with an older key, by key file: those files
    /// must stay until the codes are replaced (`twofactor backup-codes`).
    pub codes_on_old_keys: Vec<(String, i64)>,
    /// Who holds those codes, by key file, in name order: the users to ask for new ones.
    pub users_on_old_keys: Vec<(String, Vec<String>)>,
    /// With `--retire`: the key file retired, and the users whose codes it voided.
    pub retired: Option<(String, Vec<String>)>,
}

/// Makes `key_file` the current key and re-encrypts every secret with it, in one
/// transaction. Backup codes are keyed hashes of codes the server never kept, so they
/// cannot be re-hashed: each keeps its key until the user makes new codes.
pub fn rotate_key(
    admin_url: &str,
    ca: Option<&std::path::Path>,
    key_file: &str,
    retire: Option<&str>,
) -> Result<RotateReport, BackendError> {
    let mut c = superuser(admin_url, ca)?;
    let mut tx = c.transaction()?;
    let version = version_in(&mut tx)?;
    if version != SCHEMA_VERSION {
        return Err(unavailable(format!(
            "the database has schema version {version}, this twofactor {SCHEMA_VERSION}: run 'twofactor fleet init' first"
        )));
    }
    // Nothing else may change a secret meanwhile.
    tx.batch_execute("LOCK TABLE twofactor.users, twofactor.keys IN EXCLUSIVE MODE")?;
    let id = register_key(&mut tx, key_file, false)?;
    check_key(&mut tx, id, key_file)?;
    let secrets = tx.execute(
        "UPDATE twofactor.users \
            SET secret = twofactor.encrypt(twofactor.decrypt(secret, key_id), $1), key_id = $1 \
          WHERE secret IS NOT NULL AND key_id IS DISTINCT FROM $1",
        &[&id],
    )?;
    tx.execute("UPDATE twofactor.keys SET current = (id = $1)", &[&id])?;
    let retired = match retire {
        Some(old) => Some((old.to_string(), retire_key(&mut tx, old, id)?)),
        None => None,
    };
    let codes_on_old_keys = tx
        .query(
            "SELECT f.path, count(*) FROM twofactor.backup_codes b \
               JOIN twofactor_keys.files f ON f.id = b.key_id \
              WHERE b.used_at IS NULL AND b.key_id <> $1 GROUP BY f.path ORDER BY f.path",
            &[&id],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let users_on_old_keys = tx
        .query(
            "SELECT f.path, array_agg(DISTINCT b.name ORDER BY b.name) FROM twofactor.backup_codes b \
               JOIN twofactor_keys.files f ON f.id = b.key_id \
              WHERE b.used_at IS NULL AND b.key_id <> $1 GROUP BY f.path ORDER BY f.path",
            &[&id],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    tx.commit()?;
    Ok(RotateReport {
        secrets,
        codes_on_old_keys,
        users_on_old_keys,
        retired,
    })
}

/// Retires the key file `path`: voids the backup codes hashed with it, marks their users
/// to be told at their next login, and forgets the file. Every secret was re-encrypted
/// with `current` first, so nothing else uses it. Returns those users, in name order.
fn retire_key(
    tx: &mut Transaction<'_>,
    path: &str,
    current: i32,
) -> Result<Vec<String>, BackendError> {
    let Some(id) = tx
        .query_opt(
            "SELECT id FROM twofactor_keys.files WHERE path = $1",
            &[&path],
        )?
        .map(|r| r.get::<_, i32>(0))
    else {
        return Err(unavailable(format!(
            "--retire {path}: no key file by that path is registered (see 'fleet rotate-key' without --retire for the files in use)"
        )));
    };
    if id == current {
        return Err(unavailable(format!(
            "--retire {path}: that is the current key; make another one current first (--key-file NEW)"
        )));
    }
    let users: Vec<String> = tx
        .query(
            "UPDATE twofactor.users u SET codes_voided_at = clock_timestamp() \
              WHERE EXISTS (SELECT 1 FROM twofactor.backup_codes b \
                             WHERE b.name = u.name AND b.key_id = $1 AND b.used_at IS NULL) \
             RETURNING u.name",
            &[&id],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.execute(
        "DELETE FROM twofactor.backup_codes WHERE key_id = $1",
        &[&id],
    )?;
    tx.execute(
        "INSERT INTO twofactor.audit (host, role, name, action, outcome) \
         SELECT 'fleet rotate-key', session_user, n, 'backup codes', 'voided: key retired' \
           FROM unnest($1::text[]) AS n",
        &[&users],
    )?;
    tx.execute("DELETE FROM twofactor.keys WHERE id = $1", &[&id])?;
    tx.execute("DELETE FROM twofactor_keys.files WHERE id = $1", &[&id])?;
    let mut users = users;
    users.sort();
    Ok(users)
}

/// The catalog check: everything that keeps a connecting role from running code as
/// another, read from the system catalogs (never from our own source or functions, which
/// are what is being checked). Each finding is a sentence; none means all is well. Any
/// role may run it: `doctor` runs it as the host.
pub fn catalog_problems(c: &mut impl GenericClient) -> Result<Vec<String>, postgres::Error> {
    Ok(c.query(CATALOG_CHECK, &[])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// One row per problem.
pub(super) const CATALOG_CHECK: &str = r"
WITH ours AS (
    SELECT p.oid, p.oid::regprocedure::text AS f,
           (SELECT substr(c, 13) FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%') AS sp
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname IN ('twofactor', 'twofactor_keys')
), paths AS (
    SELECT f, oid, sp, string_to_array(replace(coalesce(sp, ''), ' ', ''), ',') AS parts FROM ours
), hostish AS (
    SELECT r.oid, r.rolname FROM pg_roles r
     WHERE r.rolname IN ('twofactor_hosts', 'twofactor_host', 'twofactor_admin')
        OR (EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'twofactor_hosts')
            AND pg_has_role(r.oid, 'twofactor_hosts', 'MEMBER') AND NOT r.rolsuper)
)
SELECT format('function %s: search_path is %s; it must list only twofactor''s schemas and pg_catalog, with pg_temp last',
              f, coalesce(sp, 'not pinned'))
  FROM paths
 WHERE sp IS NULL OR parts[array_length(parts, 1)] <> 'pg_temp'
    OR NOT parts <@ ARRAY['pg_catalog', 'twofactor', 'twofactor_ext', 'twofactor_keys', 'pg_temp']
UNION ALL
SELECT format('function %s: PUBLIC may execute it', f) FROM ours
 WHERE has_function_privilege('public', oid, 'EXECUTE')
UNION ALL
SELECT format('role %s may execute %s', h.rolname, o.f)
  FROM hostish h CROSS JOIN ours o
 WHERE has_function_privilege(h.oid, o.oid, 'EXECUTE')
   AND NOT (o.f LIKE 'twofactor.h\_%'
            OR (h.rolname = 'twofactor_admin' AND o.f LIKE 'twofactor.a\_%'))
UNION ALL
SELECT format('PUBLIC may %s in database %s', p, current_database())
  FROM unnest(ARRAY['TEMPORARY', 'CREATE']) p
 WHERE has_database_privilege('public', current_database(), p)
UNION ALL
SELECT format('PUBLIC may create in schema %s', n.nspname)
  FROM pg_namespace n
 WHERE n.nspname IN ('public', 'twofactor', 'twofactor_ext', 'twofactor_keys')
   AND has_schema_privilege('public', n.oid, 'CREATE')
UNION ALL
SELECT format('role %s may create in schema %s', h.rolname, n.nspname)
  FROM hostish h CROSS JOIN pg_namespace n
 WHERE n.nspname IN ('public', 'twofactor', 'twofactor_ext', 'twofactor_keys')
   AND has_schema_privilege(h.oid, n.oid, 'CREATE')
UNION ALL
SELECT format('role %s may %s in database %s', h.rolname, p, current_database())
  FROM hostish h CROSS JOIN unnest(ARRAY['TEMPORARY', 'CREATE']) p
 WHERE has_database_privilege(h.oid, current_database(), p)
UNION ALL
SELECT format('extension %s is in schema %s, not twofactor_ext', e.extname, n.nspname)
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname IN ('pgcrypto', 'sslinfo') AND n.nspname <> 'twofactor_ext'
UNION ALL
SELECT format('extension %s is not installed', x) FROM unnest(ARRAY['pgcrypto', 'sslinfo']) x
 WHERE NOT EXISTS (SELECT 1 FROM pg_extension e WHERE e.extname = x)
UNION ALL
SELECT format('twofactor_owner is a member of %s', g)
  FROM unnest(ARRAY['pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program']) g
 WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'twofactor_owner')
   AND pg_has_role('twofactor_owner', g, 'MEMBER')
UNION ALL
SELECT format('twofactor_owner may execute %s', p.oid::regprocedure)
  FROM pg_proc p
 WHERE p.proname IN ('pg_read_file', 'pg_read_binary_file', 'pg_ls_dir', 'pg_stat_file')
   AND p.pronamespace = 'pg_catalog'::regnamespace
   AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'twofactor_owner')
   AND has_function_privilege('twofactor_owner', p.oid, 'EXECUTE')
UNION ALL
SELECT format('role %s is superuser, or may create roles or bypass row security', r.rolname)
  FROM pg_roles r
 WHERE r.rolname IN ('twofactor_owner', 'twofactor_keyreader', 'twofactor_admin')
   AND (r.rolsuper OR r.rolcreaterole OR r.rolbypassrls)
UNION ALL
SELECT format('role %s is superuser, or may create roles or bypass row security', h.rolname)
  FROM hostish h JOIN pg_roles r ON r.oid = h.oid
 WHERE r.rolcreaterole OR r.rolbypassrls
UNION ALL
SELECT format('role %s can act as %s', r.rolname, g)
  FROM pg_roles r CROSS JOIN unnest(ARRAY['twofactor_owner', 'twofactor_keyreader']) g
 WHERE EXISTS (SELECT 1 FROM pg_roles x WHERE x.rolname = g)
   AND r.rolname <> g AND NOT r.rolsuper AND pg_has_role(r.oid, g, 'MEMBER')
UNION ALL
SELECT 'functions twofactor_owner creates later would be executable by PUBLIC (no ALTER DEFAULT PRIVILEGES ... REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC)'
 WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'twofactor_owner')
   AND NOT EXISTS (SELECT 1 FROM pg_default_acl d
                    WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = 'twofactor_owner')
                      AND d.defaclobjtype = 'f'
                      AND d.defaclnamespace = 0
                      AND NOT EXISTS (SELECT 1 FROM unnest(d.defaclacl) a
                                       WHERE a::text ~ '^=[^/]*X'))
UNION ALL
SELECT format('function %s is owned by %s, not twofactor_keyreader', f,
              (SELECT rolname FROM pg_roles r JOIN pg_proc p ON p.proowner = r.oid WHERE p.oid = o.oid))
  FROM ours o
 WHERE o.f LIKE 'twofactor\_keys.%'
   AND (SELECT p.proowner FROM pg_proc p WHERE p.oid = o.oid)
       IS DISTINCT FROM (SELECT oid FROM pg_roles WHERE rolname = 'twofactor_keyreader')
";

/// The role a host named `host` (its certificate's CN) logs in as: `tf_host_` and the
/// name itself when it is a plain lower-case identifier, else a readable form of it and
/// eight hex digits of its SHA-256, so that distinct names never share a role.
pub fn host_role(host: &str) -> String {
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain && HOST_ROLE_PREFIX.len() + host.len() <= MAX_ROLE_NAME {
        return format!("{HOST_ROLE_PREFIX}{host}");
    }
    let digest = Sha256::digest(host.as_bytes());
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let room = MAX_ROLE_NAME - HOST_ROLE_PREFIX.len() - 1 - tag.len();
    let readable: String = host
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        })
        .take(room)
        .collect();
    format!("{HOST_ROLE_PREFIX}{readable}_{tag}")
}

/// Refuses a host name `fleet add-host` must not take: not a DNS-style name, too long, or
/// one that could pass for one of twofactor's or PostgreSQL's own roles.
pub fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > MAX_HOST_NAME {
        return Err(format!(
            "a host name has 1 to {MAX_HOST_NAME} characters, not {}",
            host.len()
        ));
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "{:?}: a host name has letters, digits, '.', '-' and '_' only, not {:?}",
            crate::text::printable(host),
            c
        ));
    }
    if host.starts_with(['.', '-']) {
        return Err(format!("{host}: a host name starts with a letter or digit"));
    }
    let lower = host.to_ascii_lowercase();
    if lower.starts_with("twofactor") || lower.starts_with("pg_") || lower == "postgres" {
        return Err(format!(
            "{host}: names starting with twofactor or pg_, and postgres, are reserved for the database's own roles"
        ));
    }
    Ok(())
}

/// What `fleet add-host` did.
#[derive(Debug)]
pub struct AddedHost {
    /// The host's name: its certificate's CN.
    pub host: String,
    /// The login role made for it.
    pub role: String,
    /// False when the host was there already (nothing changed).
    pub created: bool,
    /// The pg_ident.conf line that maps its certificate to its role.
    pub ident_line: String,
    /// How many connections it may hold.
    pub connection_limit: u32,
    /// Whether pg_ident.conf still maps its certificate to the role hosts shared before
    /// version 2 (a line to remove).
    pub shared_mapping: bool,
    /// All hosts' connection limits against the server's slots, after this one.
    pub slots: Slots,
}

/// Creates the login role of host `host` (its certificate's CN), a member of the hosts'
/// group, with per-role limits on its sessions: at most `connection_limit` connections
/// ([`HOST_CONNECTION_LIMIT`] when `None`; for a host there already, `None` keeps its
/// limit). Refuses a name taken by another host or mapped in pg_ident.conf to another
/// role.
pub fn add_host(
    admin_url: &str,
    ca: Option<&std::path::Path>,
    host: &str,
    connection_limit: Option<u32>,
) -> Result<AddedHost, BackendError> {
    check_host_name(host).map_err(BackendError::Refused)?;
    if let Some(n) = connection_limit.filter(|n| !(1..=10_000).contains(n)) {
        return Err(BackendError::Refused(format!(
            "--connection-limit {n}: a host needs 1 to 10000 connections (a login holds one)"
        )));
    }
    let role = host_role(host);
    let mut c = superuser(admin_url, ca)?;
    let mut tx = c.transaction()?;
    need_current_schema(&mut tx)?;
    let known: Option<String> = tx
        .query_opt("SELECT host FROM twofactor.hosts WHERE role = $1", &[&role])?
        .map(|r| r.get(0));
    let ident_line = format!("twofactor  {host}  {role}");
    let shared_mapping: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_ident_file_mappings \
              WHERE map_name = 'twofactor' AND sys_name = $1 AND pg_username = $2)",
            &[&host, &SHARED_HOST_ROLE],
        )?
        .get(0);
    match known.as_deref() {
        Some(h) if h == host => {
            let limit = match connection_limit {
                Some(n) => {
                    tx.batch_execute(&format!("ALTER ROLE {role} CONNECTION LIMIT {n}"))?;
                    n
                }
                None => {
                    let now: i32 = tx
                        .query_one(
                            "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1",
                            &[&role],
                        )?
                        .get(0);
                    u32::try_from(now).unwrap_or(0)
                }
            };
            let slots = slots_in(&mut tx)?;
            tx.commit()?;
            return Ok(AddedHost {
                host: host.into(),
                role,
                created: false,
                ident_line,
                connection_limit: limit,
                shared_mapping,
                slots,
            });
        }
        Some(other) => {
            return Err(BackendError::Refused(format!(
                "role {role} belongs to host {}; choose another name for {host}",
                crate::text::printable(other)
            )));
        }
        None => {}
    }
    let role_exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            &[&role],
        )?
        .get(0);
    if role_exists {
        return Err(BackendError::Refused(format!(
            "a role named {role} already exists and is not a twofactor host; drop it or choose another name"
        )));
    }
    // A certificate name already mapped elsewhere (the administrator's, say) must not
    // become a host too. pg_ident_file_mappings shows what the server has loaded.
    let mapped: Vec<String> = tx
        .query(
            "SELECT pg_username FROM pg_ident_file_mappings \
              WHERE map_name = 'twofactor' AND sys_name = $1 AND pg_username <> $2",
            &[&host, &role],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(other) = mapped.iter().find(|r| r.as_str() != SHARED_HOST_ROLE) {
        return Err(BackendError::Refused(format!(
            "pg_ident.conf maps the certificate name {host} to {}; a host must have a name of its own",
            crate::text::printable(other)
        )));
    }
    let limit = connection_limit.unwrap_or(HOST_CONNECTION_LIMIT);
    tx.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN IN ROLE {HOSTS_GROUP}; {}",
        host_role_limits(&role, limit)
    ))?;
    tx.execute(
        "INSERT INTO twofactor.hosts (role, host) VALUES ($1, $2)",
        &[&role, &host],
    )?;
    let slots = slots_in(&mut tx)?;
    tx.commit()?;
    Ok(AddedHost {
        host: host.into(),
        role,
        created: true,
        ident_line,
        connection_limit: limit,
        shared_mapping,
        slots,
    })
}

/// The limits each host's role gets, at `add-host` and again at each `fleet init`: its
/// sessions' defaults (a host can override them in its own session; see the README) and
/// how many connections it may hold. A login that gave up leaves its session's commit
/// waiting (for a synchronous standby, say) with the user's row held: checking the
/// client every second ends such a session.
fn host_role_limits(role: &str, connections: u32) -> String {
    format!(
        "ALTER ROLE {role} CONNECTION LIMIT {connections}; \
         ALTER ROLE {role} SET statement_timeout = '10s'; \
         ALTER ROLE {role} SET lock_timeout = '2s'; \
         ALTER ROLE {role} SET idle_in_transaction_session_timeout = '10s'; \
         ALTER ROLE {role} SET client_connection_check_interval = '1s'"
    )
}

fn need_current_schema(tx: &mut Transaction<'_>) -> Result<(), BackendError> {
    let v = version_in(tx)?;
    if v == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(unavailable(format!(
            "the database has schema version {v}, this twofactor {SCHEMA_VERSION}: run 'twofactor fleet init' first"
        )))
    }
}

/// One host as `fleet hosts` lists it.
#[derive(Debug, Clone)]
pub struct HostEntry {
    /// Its name (certificate CN), or the shared role's name for certificates still
    /// mapped to it.
    pub host: String,
    /// The role it logs in as.
    pub role: String,
    /// When it was added (Unix seconds); none for the shared role.
    pub added_at: Option<i64>,
    /// Its last audited action (Unix seconds).
    pub last_seen: Option<i64>,
    /// Its sessions now.
    pub sessions: i64,
    /// Its sessions inside a transaction, with the oldest transaction's age in seconds:
    /// a host can hold a user's row for as long as its transaction stays open.
    pub open_transactions: i64,
    /// The age of its oldest open transaction, in seconds.
    pub oldest_transaction_s: Option<f64>,
    /// When its certificate runs out (Unix seconds), as its logins last reported it.
    pub cert_not_after: Option<i64>,
}

/// The server's own TLS files, which hosts cannot see: when its certificate runs out and
/// when its CRL must be renewed (after that, PostgreSQL refuses every client certificate).
#[derive(Debug, Clone, Default)]
pub struct ServerTls {
    /// `ssl_cert_file` and its expiry (Unix seconds), or why it could not be read.
    pub cert: Option<(String, Result<u64, String>)>,
    /// `ssl_crl_file` and its nextUpdate (Unix seconds), or why it could not be read;
    /// none when no CRL is configured.
    pub crl: Option<(String, Result<u64, String>)>,
}

/// Reads `ssl_cert_file` and `ssl_crl_file` through the superuser's connection.
fn server_tls(tx: &mut Transaction<'_>) -> Result<ServerTls, BackendError> {
    let setting = |tx: &mut Transaction<'_>, name: &str| -> Result<Option<String>, BackendError> {
        let v: String = tx
            .query_one("SELECT coalesce(current_setting($1, true), '')", &[&name])?
            .get(0);
        Ok((!v.is_empty()).then_some(v))
    };
    let read = |tx: &mut Transaction<'_>, path: &str| -> Result<Vec<u8>, String> {
        // A savepoint: a missing file must not end the transaction.
        let mut sp = tx.transaction().map_err(|e| e.to_string())?;
        let bytes = sp
            .query_one("SELECT pg_read_binary_file($1)", &[&path])
            .map(|r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| with_causes(&e));
        sp.rollback().map_err(|e| e.to_string())?;
        bytes
    };
    let data_dir = setting(tx, "data_directory")?.unwrap_or_default();
    let absolute = |p: String| {
        if p.starts_with('/') {
            p
        } else {
            format!("{data_dir}/{p}")
        }
    };
    let cert = match setting(tx, "ssl_cert_file")?.map(absolute) {
        Some(path) => {
            let expires = read(tx, &path).and_then(|pem| {
                openssl::x509::X509::from_pem(&pem)
                    .map_err(|e| e.to_string())
                    .and_then(|c| super::unix_time(c.not_after()))
            });
            Some((path, expires))
        }
        None => None,
    };
    let crl = match setting(tx, "ssl_crl_file")?.map(absolute) {
        Some(path) => {
            let next = read(tx, &path).and_then(|pem| {
                let crl = openssl::x509::X509Crl::from_pem(&pem)
                    .or_else(|_| openssl::x509::X509Crl::from_der(&pem))
                    .map_err(|e| e.to_string())?;
                let next = crl
                    .next_update()
                    .ok_or("the CRL has no nextUpdate".to_string())?;
                super::unix_time(next)
            });
            Some((path, next))
        }
        None => None,
    };
    Ok(ServerTls { cert, crl })
}

/// Every host role, with its sessions and open transactions.
pub fn hosts(
    admin_url: &str,
    ca: Option<&std::path::Path>,
) -> Result<(Vec<HostEntry>, ServerTls), BackendError> {
    let mut c = superuser(admin_url, ca)?;
    let mut tx = c.transaction()?;
    need_current_schema(&mut tx)?;
    let rows = tx.query(
        "WITH roles AS ( \
           SELECT h.host, h.role, extract(epoch FROM h.added_at)::bigint AS added_at, \
                  extract(epoch FROM h.cert_not_after)::bigint AS cert_not_after FROM twofactor.hosts h \
           UNION ALL \
           SELECT $1::text, $1::text, NULL, NULL FROM pg_roles WHERE rolname = $1::text) \
         SELECT r.host, r.role, r.added_at, \
                (SELECT extract(epoch FROM max(a.at))::bigint FROM twofactor.audit a \
                  WHERE a.role = r.role AND (r.role = $1::text OR a.host = r.host)), \
                (SELECT count(*) FROM pg_stat_activity s WHERE s.usename = r.role), \
                (SELECT count(*) FROM pg_stat_activity s WHERE s.usename = r.role AND s.xact_start IS NOT NULL), \
                (SELECT extract(epoch FROM clock_timestamp() - min(s.xact_start))::float8 FROM pg_stat_activity s \
                  WHERE s.usename = r.role AND s.xact_start IS NOT NULL), \
                r.cert_not_after \
           FROM roles r ORDER BY r.host",
        &[&SHARED_HOST_ROLE],
    )?;
    let hosts = rows
        .iter()
        .map(|r| HostEntry {
            host: r.get(0),
            role: r.get(1),
            added_at: r.get(2),
            last_seen: r.get(3),
            sessions: r.get(4),
            open_transactions: r.get(5),
            oldest_transaction_s: r.get(6),
            cert_not_after: r.get(7),
        })
        .collect();
    let tls = server_tls(&mut tx)?;
    Ok((hosts, tls))
}

/// What `fleet remove-host` did.
#[derive(Debug)]
pub struct RemovedHost {
    /// The host's role, now dropped.
    pub role: String,
    /// Its sessions that were ended.
    pub sessions_ended: i64,
    /// The server's pg_ident.conf, where its line is to be removed.
    pub ident_file: String,
}

/// Ends host `host`'s sessions and drops its role: `DROP ROLE` alone would leave its
/// open sessions, and any transaction holding a user's row, running.
pub fn remove_host(
    admin_url: &str,
    ca: Option<&std::path::Path>,
    host: &str,
) -> Result<RemovedHost, BackendError> {
    let mut c = superuser(admin_url, ca)?;
    let mut tx = c.transaction()?;
    need_current_schema(&mut tx)?;
    let role: String = tx
        .query_opt(
            "SELECT role FROM twofactor.hosts WHERE host = $1 OR role = $1",
            &[&host],
        )?
        .map(|r| r.get(0))
        .ok_or_else(|| {
            BackendError::Refused(format!(
                "no host named {} ('twofactor fleet hosts' lists them)",
                crate::text::printable(host)
            ))
        })?;
    // No new session may start while the old ones are ended.
    tx.batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))?;
    tx.commit()?;
    let ended: i64 = c
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
               FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )?
        .get(0);
    let mut tx = c.transaction()?;
    // A removed host requires nobody any more: its reports go with it.
    tx.execute(
        "DELETE FROM twofactor.required_by r USING twofactor.hosts h \
          WHERE h.role = $1 AND r.host = h.host",
        &[&role],
    )?;
    tx.execute("DELETE FROM twofactor.hosts WHERE role = $1", &[&role])?;
    tx.batch_execute(&format!("DROP ROLE {role}"))?;
    tx.commit()?;
    let ident_file: String = c
        .query_one("SELECT current_setting('ident_file')", &[])?
        .get(0);
    Ok(RemovedHost {
        role,
        sessions_ended: ended,
        ident_file,
    })
}

/// The pg_hba.conf and pg_ident.conf lines `fleet init` asks the administrator to add.
pub fn access_lines(dbname: &str) -> String {
    format!(
        "# pg_hba.conf: TLS with a client certificate, nothing else, for twofactor; put\n\
         # these above any broader host line, since the first matching line decides\n\
         hostssl {dbname} +{HOSTS_GROUP},twofactor_admin 0.0.0.0/0 cert map=twofactor\n\
         hostssl {dbname} +{HOSTS_GROUP},twofactor_admin ::/0 cert map=twofactor\n\
         # pg_ident.conf: one exact line per host ('twofactor fleet add-host NAME' prints\n\
         # it) and per administrator; never a regular expression (/...), which could map\n\
         # a certificate named twofactor_admin to the admin role\n\
         # twofactor  web1.example.com   tf_host_web1_example_com_82c1a348\n\
         # twofactor  admin-alice        twofactor_admin\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_limits_must_fit_the_servers_open_slots() {
        // A stock server: 100 slots, 3 reserved. Nine hosts of 10 and the admin's 5 fit.
        let mut s = Slots {
            hosts_total: 90,
            hosts: 9,
            max_connections: 100,
            reserved: 3,
        };
        assert_eq!(s.problem(), None);
        // One host with the old limit of 100 could take every slot.
        s.hosts_total = 100;
        s.hosts = 1;
        let why = s.problem().unwrap();
        assert!(
            why.contains("raise max_connections to at least 108"),
            "{why}"
        );
        assert!(why.contains("--connection-limit"), "{why}");
    }

    #[test]
    fn access_lines_allow_only_certificates() {
        let l = access_lines("twofactor");
        assert!(l.contains(
            "hostssl twofactor +twofactor_hosts,twofactor_admin 0.0.0.0/0 cert map=twofactor"
        ));
        assert!(!l.contains(" md5") && !l.contains(" trust"), "{l}");
    }

    #[test]
    fn host_roles_are_short_distinct_and_readable() {
        assert_eq!(host_role("web1"), "tf_host_web1");
        let long = "a".repeat(MAX_HOST_NAME);
        let names = [
            "web1.example.com",
            "web1-example.com",
            "web1_example_com",
            "WEB1.example.com",
            long.as_str(),
        ];
        let roles: Vec<String> = names.iter().map(|n| host_role(n)).collect();
        for (n, r) in names.iter().zip(&roles) {
            assert!(r.len() <= MAX_ROLE_NAME, "{n}: {r}");
            assert!(r.starts_with(HOST_ROLE_PREFIX), "{r}");
            assert!(
                r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{r}"
            );
        }
        // The documented example (README, fleet init's output).
        assert_eq!(roles[0], "tf_host_web1_example_com_82c1a348");
        let mut unique = roles.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), roles.len(), "{roles:?}");
    }

    #[test]
    fn reserved_and_malformed_host_names_are_refused() {
        for bad in [
            "",
            "twofactor_admin",
            "TwoFactor-x",
            "pg_monitor",
            "postgres",
            "-web",
            ".web",
            "web 1",
            "web\n1",
            "web/1",
            &"a".repeat(MAX_HOST_NAME + 1),
        ] {
            assert!(check_host_name(bad).is_err(), "{bad:?}");
        }
        for good in [
            "web1",
            "web1.example.com",
            "db-2_x",
            &"a".repeat(MAX_HOST_NAME),
        ] {
            assert!(check_host_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_name_limit_in_sql_is_cores() {
        let sql = functions_sql();
        assert!(!sql.contains("@MAX_USER_LEN@"));
        assert!(sql.contains(&format!("octet_length(p_name) > {MAX_USER_LEN}")));
    }
}
