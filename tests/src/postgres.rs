//! A throwaway PostgreSQL cluster for the fleet backend's tests: `initdb` as the
//! unprivileged `postgres` user into a temp dir, listening on 127.0.0.1 on a free port
//! with TLS from a throwaway CA, client certificates mapped to roles in pg_ident, and the
//! schema installed by `fleet init`. Stopped and removed on drop. Needs root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use twofactor_core::backend::postgresql::{self, Postgresql, Role};
use twofactor_core::config::PostgresqlSettings;

use crate::{free_port, run};

/// Where Debian keeps the server programs.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The database the schema goes into.
pub const DBNAME: &str = "twofactor";
/// The superuser, reached over the cluster's own socket only.
const SUPERUSER: &str = "tfsuper";

/// Host certificates the server maps to `twofactor_host`.
pub const HOSTS: [&str; 2] = ["host-a", "host-b"];
/// The administrator's certificate, mapped to `twofactor_admin`.
pub const ADMIN: &str = "admin-1";
/// A certificate from the right CA that pg_ident does not map.
pub const STRANGER: &str = "stranger";

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

pub(crate) fn pg(program: &str) -> String {
    format!("{PG_BIN}/{program}")
}

/// Runs `args` as the postgres user.
pub(crate) fn as_postgres(args: &[&str]) {
    let mut all = vec!["-u", "postgres", "--"];
    all.extend_from_slice(args);
    run("runuser", &all);
}

/// An encryption key file in `dir`: outside the data directory, readable by the server's
/// OS user only.
pub(crate) fn make_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let mut raw = [0u8; 32];
    getrandom_fill(&mut raw);
    fs::write(
        &key,
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    )
    .unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
    run("chown", &["postgres", key.to_str().unwrap()]);
    key
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed (tests/setup)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `name.crt`/`name.key` signed by `ca`, with the given subjectAltName.
pub(crate) fn issue(dir: &Path, ca: &str, name: &str, san: Option<&str>) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    let ext = dir.join(format!("{name}.ext"));
    fs::write(
        &ext,
        san.map(|s| format!("subjectAltName={s}\n"))
            .unwrap_or_default(),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            ext.to_str().unwrap(),
        ],
    );
}

pub(crate) fn new_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=twofactor test {name}"),
        ],
    );
}

impl Cluster {
    /// Starts a cluster with TLS on and the fleet schema installed, each of [`HOSTS`]
    /// added with a role of its own (`fleet add-host`) and mapped to it in pg_ident.
    pub fn start() -> Self {
        let cluster = Self::bare();
        cluster.init();
        for h in HOSTS {
            cluster.add_host(h);
        }
        cluster
    }

    /// Starts a cluster with TLS on and an empty database [`DBNAME`]; pg_ident maps the
    /// administrator's certificate only.
    pub fn bare() -> Self {
        let dir = tempfile::Builder::new().prefix("tfpg").tempdir().unwrap();
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        new_ca(d, "ca");
        new_ca(d, "other-ca");
        issue(
            d,
            "ca",
            "server",
            Some("DNS:db.twofactor.test,DNS:localhost,IP:127.0.0.1"),
        );
        issue(
            d,
            "other-ca",
            "impostor",
            Some("DNS:localhost,IP:127.0.0.1"),
        );
        issue(d, "ca", "wrong-name", Some("DNS:elsewhere.test"));
        for client in HOSTS.iter().chain([&ADMIN, &STRANGER]) {
            issue(d, "ca", client, None);
        }
        for f in fs::read_dir(d).unwrap().flatten() {
            let is_key = f.path().extension().is_some_and(|e| e == "key");
            fs::set_permissions(
                f.path(),
                fs::Permissions::from_mode(if is_key { 0o600 } else { 0o644 }),
            )
            .unwrap();
        }
        make_key(d, "fleet.key");
        let server_files = [
            "server.crt",
            "server.key",
            "impostor.crt",
            "impostor.key",
            "wrong-name.crt",
            "wrong-name.key",
        ];
        for f in server_files {
            run("chown", &["postgres", d.join(f).to_str().unwrap()]);
        }
        let data = d.join("data");
        let sock = d.join("sock");
        for dir in [&data, &sock] {
            fs::create_dir(dir).unwrap();
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
            run("chown", &["postgres", dir.to_str().unwrap()]);
        }
        as_postgres(&[
            &pg("initdb"),
            "-D",
            data.to_str().unwrap(),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=reject",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\n\
             ssl_ca_file = '{d}/ca.crt'\nfsync = off\nshared_buffers = 16MB\nmax_connections = 60\n",
            sock.display(),
            d = d.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all {SUPERUSER} trust\n\
                 hostssl {DBNAME} +twofactor_hosts,twofactor_host,twofactor_admin 127.0.0.1/32 cert map=twofactor\n"
            ),
        )
        .unwrap();
        fs::write(
            data.join("pg_ident.conf"),
            format!("twofactor {ADMIN} twofactor_admin\n"),
        )
        .unwrap();
        let cluster = Self { dir, port };
        cluster.pg_ctl("start");
        cluster.psql("postgres", &format!("CREATE DATABASE {DBNAME}"));
        cluster
    }

    /// Starts a cluster whose database has the schema as version 1 of twofactor shipped it
    /// (`sql`: its bootstrap and schema), the key registered, and [`HOSTS`] mapped to the
    /// login role they shared then, `twofactor_host`.
    pub fn start_v1(sql: &str) -> Self {
        let cluster = Self::bare();
        let file = cluster.path().join("schema-v1.sql");
        fs::write(&file, sql).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        cluster.client_tool(
            "psql",
            &[
                "-d",
                DBNAME,
                "-XAtq1",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                file.to_str().unwrap(),
            ],
        );
        let key = cluster.path().join("fleet.key");
        cluster.psql(
            DBNAME,
            &format!(
                "INSERT INTO twofactor.keys (path, current) VALUES ('{}', true)",
                key.display()
            ),
        );
        for h in HOSTS {
            cluster.map_certificate(&format!("twofactor {h} twofactor_host"));
        }
        cluster
    }

    /// Runs `script` through psql as an attacker holding host `client`'s certificate and
    /// key, logged in as `role`, in one session that goes on past errors. Returns what
    /// psql printed, errors and warnings in order with the rest.
    pub fn attack(&self, client: &str, role: &str, script: &str) -> String {
        let d = self.path();
        let conn = self.conninfo(client, role);
        let file = tempfile::Builder::new()
            .suffix(".sql")
            .tempfile_in(d)
            .unwrap()
            .into_temp_path();
        fs::write(&file, script).unwrap();
        let out = Command::new("sh")
            .args([
                "-c",
                r#"psql "$1" -XAt -v ON_ERROR_STOP=0 -f "$2" 2>&1"#,
                "sh",
            ])
            .arg(&conn)
            .arg(&file)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// libpq's connection string for `client`'s certificate and key, as `role`.
    pub fn conninfo(&self, client: &str, role: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={DBNAME} user={role} sslmode=verify-full \
             sslrootcert={d}/ca.crt sslcert={d}/{client}.crt sslkey={d}/{client}.key",
            self.port,
            d = self.path().display()
        )
    }

    /// Runs `fleet init` with the cluster's first key.
    pub fn init(&self) -> postgresql::InitReport {
        let key = self.path().join("fleet.key");
        let report =
            postgresql::init(&self.admin_url(), None, key.to_str().unwrap(), None).unwrap();
        assert_eq!(report.after, postgresql::SCHEMA_VERSION);
        report
    }

    /// `fleet add-host NAME`, and its pg_ident line added and loaded.
    pub fn add_host(&self, name: &str) -> postgresql::AddedHost {
        let added = postgresql::add_host(&self.admin_url(), None, name, None).unwrap();
        self.map_certificate(&added.ident_line);
        added
    }

    /// Adds a line to pg_ident.conf and reloads the server.
    pub fn map_certificate(&self, line: &str) {
        append(
            &self.path().join("data/pg_ident.conf"),
            &format!("{line}\n"),
        );
        self.psql("postgres", "SELECT pg_reload_conf()");
        // The postmaster reloads on SIGHUP; the next connection sees the new file.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    /// The cluster's directory (certificates, key, data).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new encryption key file beside the first (for `fleet rotate-key`).
    pub fn new_key(&self, name: &str) -> PathBuf {
        make_key(self.path(), name)
    }

    /// The superuser's connection string, over the cluster's socket.
    pub fn admin_url(&self) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={DBNAME}",
            self.path().join("sock").display(),
            self.port
        )
    }

    /// `pg_ctl start` or `stop`.
    pub fn pg_ctl(&self, action: &str) {
        let data = self.path().join("data");
        let log = self.path().join("data/server.log");
        as_postgres(&[
            &pg("pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-m",
            "fast",
            action,
        ]);
    }

    /// Runs one of the server's client programs as the superuser over the socket;
    /// returns what it printed.
    fn client_tool(&self, tool: &str, args: &[&str]) -> String {
        let sock = self.path().join("sock");
        let port = self.port.to_string();
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", &pg(tool)])
            .args(["-h", sock.to_str().unwrap(), "-p", &port, "-U", SUPERUSER])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL as the superuser; returns what psql printed (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.client_tool(
            "psql",
            &["-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
        )
    }

    /// `pg_dump` of the fleet database, as an operator would back it up.
    pub fn dump(&self) -> String {
        self.dump_of(DBNAME)
    }

    /// `pg_dump` of database `db`.
    pub fn dump_of(&self, db: &str) -> String {
        self.client_tool("pg_dump", &[db])
    }

    /// Settings for a client with certificate `client`, trusting `ca`, reaching `host`.
    pub fn settings_for(
        &self,
        client: &str,
        ca: &str,
        host: &str,
        port: u16,
    ) -> PostgresqlSettings {
        let d = self.path();
        PostgresqlSettings {
            hosts: vec![(host.to_string(), port)],
            dbname: DBNAME.into(),
            ca: d.join(format!("{ca}.crt")),
            cert: d.join(format!("{client}.crt")),
            key: d.join(format!("{client}.key")),
            connect_timeout_ms: 2000,
            statement_timeout_ms: 5000,
        }
    }

    /// The settings a host's config would have.
    pub fn settings(&self, client: &str) -> PostgresqlSettings {
        self.settings_for(client, "ca", "127.0.0.1", self.port)
    }

    /// A backend as host `client` (or the administrator) sees it.
    pub fn backend(&self, client: &str) -> Postgresql {
        let role = if client == ADMIN {
            Role::Admin
        } else {
            Role::Host
        };
        Postgresql::new(self.settings(client), role, 0)
    }

    /// The config file text for host `client`, with `extra` before `[storage]`.
    pub fn config_text(&self, client: &str, extra: &str) -> String {
        let s = self.settings(client);
        format!(
            "version = 1\n{extra}\n[storage]\nbackend = \"postgresql\"\n\
             [storage.postgresql]\nhosts = [\"127.0.0.1:{}\"]\ndbname = \"{DBNAME}\"\n\
             ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.port,
            s.ca.display(),
            s.cert.display(),
            s.key.display()
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.path().join("data/server.log")).unwrap_or_default()
    }

    /// Points the server at another certificate (`impostor`, `wrong-name`) and reloads.
    pub fn serve_certificate(&self, name: &str) {
        let d = self.path().display().to_string();
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET ssl_cert_file = '{d}/{name}.crt'"),
        );
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET ssl_key_file = '{d}/{name}.key'"),
        );
        self.psql("postgres", "SELECT pg_reload_conf()");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &pg("pg_ctl"), "-D"])
            .arg(&data)
            .args(["-w", "-m", "immediate", "stop"])
            .output();
    }
}

fn append(path: &PathBuf, text: &str) {
    let mut s = fs::read_to_string(path).unwrap();
    s.push_str(text);
    fs::write(path, s).unwrap();
}

fn getrandom_fill(buf: &mut [u8]) {
    use twofactor_core::random::{OsRandom, Random};
    OsRandom.fill(buf).unwrap();
}
